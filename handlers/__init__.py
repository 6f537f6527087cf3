"""SOP knowledge, one module per runbook chapter. Importing this package registers every SOP."""

from handlers import vault  # noqa: F401  chapter 5
from handlers import cluster  # noqa: F401  chapter 2
from handlers import networking  # noqa: F401  chapter 3
from handlers import certificates  # noqa: F401  chapter 4
from handlers import database  # noqa: F401  chapter 6
from handlers import monitoring  # noqa: F401  chapter 7.4
from handlers import storage  # noqa: F401  chapter 8
from handlers import signals  # noqa: F401  alert signals in Prometheus (7.4)
from handlers import daytwo  # noqa: F401  chapter 11 (composes the others: import last)
from handlers import actions  # noqa: F401  remediations (approved by reaction)
from handlers import triage  # noqa: F401  section 1 flowchart decisions (/sop triage)
from handlers import triage_network  # noqa: F401  chapter 3 flowchart decisions
