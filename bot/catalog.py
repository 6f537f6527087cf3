"""The SOP catalog generated from the registry (``sopbot list``, README)."""

from __future__ import annotations

from bot.registry import Registry


def catalog_markdown(registry: Registry) -> str:
    rows = ["| SOP | Runbook | Severity | Title | Alerts | Arguments |", "|---|---|---|---|---|---|"]
    for s in registry:
        alerts = ", ".join(f"`{a}`" for a in s.alerts) or "-"
        usage = f"`{s.usage()}`" if s.usage() else "-"
        rows.append(f"| `{s.id}` | {s.section} | {s.severity.value} | {s.title} | {alerts} | {usage} |")
    return "\n".join(rows)


def catalog_text(registry: Registry) -> str:
    width = max((len(s.id) for s in registry), default=0)
    return "\n".join(f"{s.id:<{width}}  {s.section:<5} {s.severity.value}  {s.title}" for s in registry)
