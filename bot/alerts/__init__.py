"""Alertmanager webhooks → the right SOP → one diagnosis thread per alert group.

Kept import-light: ``bot.config`` imports ``bot.alerts.matchers`` to validate routes.
"""
