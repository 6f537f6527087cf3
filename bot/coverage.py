"""Runbook coverage, generated from the registry and the runbook (``sopbot list --coverage``, the
README): every entry of the runbook (numbered sections and their sub-problems, bot.runbook) with
the SOPs that declare it, the alerts those answer, the actions that implement its Resolution steps,
the sandbox scenarios that break it, and whether the bot can only quote it (guidance only).

Scenarios come through the ``sopbot.scenarios`` entry-point group (name → object with ``name`` and
``section``), so the engine imports no sandbox code; without it the column is empty."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.registry import Registry
from bot.runbook import Runbook

SCENARIO_GROUP = "sopbot.scenarios"


@dataclass
class Entry:
    number: str
    title: str
    sops: list[str] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)

    @property
    def guidance_only(self) -> bool:
        """No SOP reads it and no action carries it out: the bot can quote the runbook, no more."""
        return not self.sops and not self.actions


def load_scenarios() -> list[Any]:
    """Scenario declarations registered by entry point (the sandbox's), in their order."""
    from importlib.metadata import entry_points

    out: list[Any] = []
    for ep in sorted(entry_points(group=SCENARIO_GROUP), key=lambda e: e.name):
        found = ep.load()
        out += list(found.values() if isinstance(found, Mapping) else found)
    return out


def coverage(registry: Registry, runbook: Runbook, actions: Mapping[str, Any] | None = None,
             scenarios: Iterable[Any] = (), procedures: Mapping[str, Any] | None = None) -> list[Entry]:
    """One row per runbook entry. A SOP, action or scenario counts for an entry it names exactly
    ("7.2/oidc"), or for every sub-problem of the section it names when that has sub-problems."""
    rows: list[Entry] = []
    for section in runbook.entries():
        def names(ref: str, number: str = section.number) -> bool:
            return ref == number or (ref == number.split("/", 1)[0] and "/" in number)

        row = Entry(number=section.number, title=section.title)
        for s in registry:
            if any(names(ref) for ref in s.sections or (s.section,)):
                row.sops.append(s.id)
                row.alerts += [a for a in s.alerts if a not in row.alerts]
                row.causes += [c for c in s.causes if c not in row.causes]
        for name, action in sorted((actions or {}).items()):
            steps = [(getattr(action, "section", ""), getattr(action, "step", "")),
                     *(getattr(action, "also", None) or {}).items()]
            for ref, step in steps:
                if ref and names(ref):
                    row.actions.append(f"{name} ({step})" if step else name)
                    break
        for name, proc in sorted((procedures or {}).items()):
            # A procedure carries out its entry's Resolution as a whole (several steps, one approval).
            if getattr(proc, "section", "") and names(proc.section):
                row.actions.append(f"{name} (procedure: {getattr(proc, 'title', '') or name})")
        row.scenarios = [sc.name for sc in scenarios if getattr(sc, "section", "") and names(sc.section)]
        rows.append(row)
    return rows


def _list(items: list[str], tick: bool = True) -> str:
    return ", ".join(f"`{i}`" if tick else i for i in items) or "-"


def coverage_markdown(rows: list[Entry]) -> str:
    covered = sum(not r.guidance_only for r in rows)
    out = [f"{covered} of {len(rows)} runbook entries have a SOP or an action; the others are guidance only "
           "(the bot quotes the runbook).", "",
           "| Entry | Title | SOPs | Alerts | Actions | Scenarios | Guidance only |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        title = r.title.replace("|", "/")
        out.append(f"| {r.number} | {title} | {_list(r.sops)} | {_list(r.alerts)} | "
                   f"{_list([a.replace('|', '/') for a in r.actions], tick=False)} | {_list(r.scenarios)} | "
                   f"{'yes' if r.guidance_only else 'no'} |")
    return "\n".join(out)


def coverage_text(rows: list[Entry]) -> str:
    width = max((len(r.number) for r in rows), default=0)
    out = []
    for r in rows:
        what = "; ".join(filter(None, [
            ", ".join(r.sops), "alerts " + ", ".join(r.alerts) if r.alerts else "",
            "actions " + ", ".join(r.actions) if r.actions else "",
            "scenarios " + ", ".join(r.scenarios) if r.scenarios else ""])) or "guidance only"
        out.append(f"{r.number:<{width}}  {r.title[:44]:<44}  {what}")
    covered = sum(not r.guidance_only for r in rows)
    out.append(f"{covered} of {len(rows)} entries have a SOP or an action")
    return "\n".join(out)
