"""A loopback Alertmanager API v2 (alerts and silences) firing what the sandbox's state implies."""
