"""SOP Bot engine: chat, webhooks, approvals, schedule, store, clients.

The engine knows nothing of any particular platform component; SOP knowledge lives in
``handlers/``.
"""
