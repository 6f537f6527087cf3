"""Threads that know their cause: which SOPs' failures explain which others', and the text the
two linked threads show.

The graph is data, not a list in code: a SOP names the SOPs whose failure explains it
(``@sop(explained_by=...)``), and each runbook flowchart of a chapter other than the general
section 1 adds an edge from the chapter's SOPs to the SOPs of every leaf it sends to another
chapter after the chapter's own checks ("Unseal Vault - Section 5.1" in the TLS chart: a
certificate thread is explained by an open Vault thread). Editing the flowchart in the runbook changes the graph at the next start.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from bot.flowchart import Flowchart
from bot.registry import SOP
from bot.safe_text import code


def _chapter(section: str) -> str:
    return section.split("/", 1)[0].split(".", 1)[0]


def _decisions_before(chart: Flowchart) -> dict[str, int]:
    """For each node, the fewest decisions on a path from the chart's root to it."""
    root = chart.root
    if root is None:
        return {}
    best = {root.id: 0}
    todo = [root.id]
    while todo:
        node_id = todo.pop(0)
        passed = best[node_id] + chart.nodes[node_id].decision
        for edge in chart.out(node_id):
            if edge.dst in chart.nodes and passed < best.get(edge.dst, 1 << 30):
                best[edge.dst] = passed
                todo.append(edge.dst)
    return best


@dataclass
class Dependencies:
    """``causes[sop]``: the SOPs whose failure explains a failure ``sop`` reports."""

    causes: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, sops: Iterable[SOP], charts: Iterable[Flowchart] = ()) -> "Dependencies":
        sops = list(sops)
        known = {s.id for s in sops}
        deps = cls()
        for s in sops:
            for cause in s.explained_by:
                if cause in known and cause != s.id:
                    deps.causes.setdefault(s.id, set()).add(cause)
        for chart in charts:
            home = _chapter(chart.section)
            if not home or home == "1":
                continue  # section 1 is the whole platform's entry: it explains nothing by itself
            symptoms = [s.id for s in sops if s.covers(home)]
            depth = _decisions_before(chart)
            # A leaf right after the first question only routes ("TLS errors → Section 4"); one
            # reached after the chapter's own checks names what explains them.
            elsewhere = {n.section for n in chart.nodes.values()
                         if n.section and _chapter(n.section) != home and depth.get(n.id, 0) >= 2}
            # The chapter's own SOPs do not explain each other through its chart (explained_by does).
            explaining = {s.id for s in sops if s.id not in symptoms
                          and any(s.covers(sec) for sec in elsewhere)}
            for sid in symptoms:
                others = explaining - {sid}
                if others:
                    deps.causes.setdefault(sid, set()).update(others)
        return deps

    def explains(self, cause_sops: Iterable[str], effect_sops: Iterable[str]) -> bool:
        """Whether a failure of any of ``cause_sops`` explains one of ``effect_sops``."""
        causes = set(cause_sops)
        return any(self.causes.get(e, set()) & causes for e in effect_sops)


@dataclass(frozen=True)
class Link:
    """Another alert thread, as this one's root shows it."""

    names: tuple[str, ...]  # its alertnames
    link: str               # permalink of its root
    open: bool


def related_lines(causes: list[Link], effects: list[Link]) -> list[str]:
    """The root's lines for its linked threads (empty: none). Names are alertnames, shown as code."""
    def show(link: Link) -> str:
        names = ", ".join(code(n) for n in link.names[:3]) + (" …" if len(link.names) > 3 else "")
        state = "open" if link.open else "resolved"
        return f"[{names}]({link.link}) ({state})" if link.link else f"{names} ({state})"

    lines: list[str] = []
    if causes:
        head = ":link: **Likely caused by** " if any(c.open for c in causes) else \
            ":link: Its likely cause resolved: "
        lines.append(head + " · ".join(show(c) for c in causes))
    if effects:
        lines.append(f":link: **Explains {len(effects)} other thread{'s' if len(effects) != 1 else ''}**: "
                     + " · ".join(show(e) for e in effects[:10])
                     + (f" and {len(effects) - 10} more" if len(effects) > 10 else ""))
    return lines
