"""The runbook's flowcharts, read at run time from its Mermaid ``graph TD`` blocks.

The subset the runbook uses: nodes ``ID["label"]``, decisions ``ID{"label"}``, edges ``A --> B``
and ``A -->|"label"| B`` (either end may define its node), ``%%`` comments. Anything else is a
problem in ``Flowchart.problems`` (``sopbot check-config`` lists them); the rest still parses, so
a typo in one line never takes triage down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.runbook import Runbook

_BLOCK = re.compile(r"^```\s*mermaid\s*\n(.*?)^```", re.M | re.S)
_HEADER = re.compile(r"^(graph|flowchart)\s+(TD|TB)\s*;?$")
_NODE = r'([A-Za-z_][\w-]*)\s*(?:\["([^"\]]*)"\]|\{"([^"}]*)"\})?'
_EDGE = re.compile(rf'^{_NODE}\s*-->\s*(?:\|\s*"([^"|]*)"\s*\|\s*)?{_NODE}\s*;?$')
_ALONE = re.compile(rf"^{_NODE}\s*;?$")
# A leaf that names a runbook section: "Unseal Vault - Section 5.1", "Go to Section 4".
_SECTION = re.compile(r"\bSection\s+(\d+(?:\.\d+)*)", re.I)


@dataclass
class Node:
    id: str
    label: str = ""
    decision: bool = False  # drawn as {"…"}

    @property
    def section(self) -> str | None:
        m = _SECTION.search(self.label)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str = ""


@dataclass
class Flowchart:
    section: str  # the runbook section holding the block ("1", "3")
    nodes: dict[str, Node] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def out(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.src == node_id]

    def into(self, node_id: str) -> list[Edge]:
        return [e for e in self.edges if e.dst == node_id]

    @property
    def roots(self) -> list[Node]:
        return [n for n in self.nodes.values() if not self.into(n.id)]

    @property
    def root(self) -> Node | None:
        roots = self.roots
        return roots[0] if roots else None


def parse(text: str, section: str = "") -> Flowchart:
    """One Mermaid block's text (without the fences) as a flowchart and its problems."""
    chart = Flowchart(section=section)
    where = f"flowchart in section {section}" if section else "flowchart"
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1)]
    lines = [(i, ln) for i, ln in lines if ln and not ln.startswith("%%")]
    if not lines or not _HEADER.match(lines[0][1]):
        got = lines[0][1][:60] if lines else "nothing"
        chart.problems.append(f"{where}: starts with {got!r}, not 'graph TD'")
        return chart

    def define(node_id: str, rect: str | None, diamond: str | None, line: int) -> None:
        node = chart.nodes.setdefault(node_id, Node(node_id))
        label = rect if rect is not None else diamond
        if label is None:
            return
        if node.label and (node.label != label or node.decision != (diamond is not None)):
            chart.problems.append(f"{where}, line {line}: node {node_id} defined again differently")
            return
        node.label, node.decision = label.strip(), diamond is not None

    for number, line in lines[1:]:
        if m := _EDGE.match(line):
            define(m.group(1), m.group(2), m.group(3), number)
            define(m.group(5), m.group(6), m.group(7), number)
            chart.edges.append(Edge(m.group(1), m.group(5), (m.group(4) or "").strip()))
        elif m := _ALONE.match(line):
            define(m.group(1), m.group(2), m.group(3), number)
        else:
            chart.problems.append(f"{where}, line {number}: unsupported construct {line[:60]!r}")
    for node in chart.nodes.values():
        if not node.label:
            chart.problems.append(f"{where}: node {node.id} is used but never given a label")
        edges = chart.out(node.id)
        if node.decision and len(edges) < 2:
            chart.problems.append(f"{where}: decision {node.id} ({node.label}) has {len(edges)} branch(es)")
        if len(edges) > 1 and any(not e.label for e in edges):
            chart.problems.append(f"{where}: node {node.id} has several ways out, not all labelled")
    if chart.nodes and len(chart.roots) != 1:
        names = ", ".join(n.id for n in chart.roots) or "none (every node has an edge in)"
        chart.problems.append(f"{where}: needs exactly one start node, has {names}")
    return chart


def flowcharts(runbook: Runbook) -> list[Flowchart]:
    """Every Mermaid flowchart of the runbook, in order, with the section holding it."""
    out: list[Flowchart] = []
    for number, section in runbook.sections.items():
        for block in _BLOCK.finditer(section.own if section.subs else section.body):
            out.append(parse(block.group(1), number))
    return out


def problems(runbook: Runbook) -> list[str]:
    return [p for chart in flowcharts(runbook) for p in chart.problems]
