"""Remediation actions with runbook knowledge, registered with ``bot.approvals``. Importing this
package registers every action (``handlers`` imports it)."""

from handlers.actions import alertmanager, cilium, database, harvester, kubernetes, vault  # noqa: F401
