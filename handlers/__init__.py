"""SOP knowledge, one module per runbook chapter. Importing this package registers every SOP."""

from handlers import vault  # noqa: F401  chapter 5
