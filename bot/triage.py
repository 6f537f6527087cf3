"""``/sop triage [words]``: walk the runbook's flowchart, answering each decision with the
evidence a handler's ``@decision`` evaluator reads, running the SOPs of the section a leaf names.

A decision with no evaluator, an evaluator that cannot tell, or evidence that fits no branch
stops the walk with the question a person must answer: triage never guesses a branch.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.engine import run_sop
from bot.flowchart import Flowchart, Node, flowcharts
from bot.models import Report, Status
from bot.render import EMOJI, report_markdown, section_ref
from bot.safe_text import code, mention, text

if TYPE_CHECKING:
    from bot.context import HandlerContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """An evaluator's answer: the edge label the evidence supports (None: cannot tell), and the
    evidence quoted in the thread."""

    branch: str | None
    evidence: str
    # Other wordings of the same branch ("Single pod/service" for "One pod or service"), so one
    # evaluator answers the sandbox's flowchart and the team's whichever words their edges use.
    also: tuple[str, ...] = ()


Evaluator = Callable[["HandlerContext"], Awaitable[Answer]]
DECISIONS: dict[str, Evaluator] = {}


def _key(label: str) -> str:
    return " ".join(label.lower().split()).rstrip("?").strip()


def decision(label_or_id: str, *, registry: dict[str, Evaluator] | None = None
             ) -> Callable[[Evaluator], Evaluator]:
    """Register an async ``(ctx) -> Answer`` for the flowchart decision with this label
    ("What is affected?") or node id ("SCOPE")."""
    target = DECISIONS if registry is None else registry

    def register(func: Evaluator) -> Evaluator:
        if not asyncio.iscoroutinefunction(func):
            raise TypeError(f"decision {label_or_id!r}: evaluator must be async")
        key = _key(label_or_id)
        if key in target:
            raise ValueError(f"decision {label_or_id!r} has two evaluators")
        target[key] = func
        return func

    return register


@dataclass
class Step:
    node: Node
    branch: str | None = None  # chosen edge label
    evidence: str = ""


@dataclass
class Walk:
    chart: Flowchart
    steps: list[Step] = field(default_factory=list)
    leaf: Node | None = None        # where it ended on a leaf
    question: str | None = None     # or why it stopped for a person
    reports: list[Report] = field(default_factory=list)


def _norm(label: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9/ ]+", " ", label.lower()).split())


async def walk(chart: Flowchart, start: Node, ctx: "HandlerContext",
               evaluators: dict[str, Evaluator] | None = None, timeout_s: float = 30.0) -> Walk:
    """Follow ``chart`` from ``start`` to a leaf or to a question (never around a loop)."""
    evaluators = DECISIONS if evaluators is None else evaluators
    result, node, seen = Walk(chart), start, set()
    while node is not None:
        if node.id in seen:
            result.question = f"the flowchart loops back to {node.label!r}: follow it by hand"
            return result
        seen.add(node.id)
        edges = chart.out(node.id)
        if not edges:
            result.leaf = node
            return result
        if len(edges) == 1 and not edges[0].label:
            result.steps.append(Step(node))
            node = chart.nodes.get(edges[0].dst)
            continue
        branches = " / ".join(f'"{e.label}"' for e in edges)
        func = evaluators.get(_key(node.id)) or evaluators.get(_key(node.label))
        step = Step(node)
        result.steps.append(step)
        if func is None:
            result.question = (f"**{node.label}** — the bot has no evaluator for this decision; "
                               f"a person must look and choose: {branches}")
            return result
        try:
            answer = await asyncio.wait_for(func(ctx), timeout_s)
        except Exception as exc:  # a source down or a bug: say so, do not pick a branch
            log.warning("evaluator for %s failed", node.id, exc_info=True)
            answer = Answer(None, f"the evaluator failed: {exc.__class__.__name__}: {exc}")
        step.evidence = answer.evidence
        wanted = {_norm(b) for b in (answer.branch, *answer.also) if b} if answer.branch else set()
        chosen = [e for e in edges if _norm(e.label) in wanted]
        if not chosen:
            said = f" (it answered {answer.branch!r})" if answer.branch else ""
            result.question = (f"**{node.label}** — the evidence fits no branch{said}; "
                               f"a person must look and choose: {branches}")
            return result
        step.branch = chosen[0].label
        node = chart.nodes.get(chosen[0].dst)
    result.question = "the flowchart ends at a node that is not defined"
    return result


def find_start(charts: list[Flowchart], words: str) -> tuple[Flowchart, Node] | None:
    """The node ``words`` point to: most words shared with its label or the labels of the
    edges into it ("dns" → the node "DNS failures" leads to); the first chart's root without words."""
    if not words.strip():
        chart = next((c for c in charts if c.root is not None), None)
        return (chart, chart.root) if chart and chart.root else None
    asked = set(_norm(words).replace("/", " ").split())
    best: tuple[float, Flowchart, Node] | None = None
    for chart in charts:
        for node in chart.nodes.values():
            said = " ".join([node.label] + [e.label for e in chart.into(node.id)])
            # "TLS/Certificate Issue" matches "tls"; on a tie, a chart's own start wins over a
            # node deep in another chart ("tls" → chapter 4's flowchart, not section 1's branch),
            # and a node with a way on over a leaf ("dns" → chapter 3's CoreDNS check, which walks
            # on, not section 1's leaf that only names 3.6).
            score = (len(asked & set(_norm(said).replace("/", " ").split())) + (0.5 if not chart.into(node.id) else 0)
                     + (0.25 if chart.out(node.id) else 0))
            if score >= 1 and (best is None or score > best[0]):
                best = (score, chart, node)
    return (best[1], best[2]) if best else None


def path_markdown(result: Walk, runbook: Any) -> str:
    """The path taken as a small tree: each decision, the branch chosen and its evidence."""
    lines = [f"#### Triage path (flowchart of {section_ref(result.chart.section, runbook)})"]
    depth = 0
    for step in result.steps:
        pad = "  " * depth
        if step.branch is None and not step.evidence and not result.chart.out(step.node.id)[0].label:
            lines.append(f"{pad}- {text(step.node.label)}")
        elif step.branch is None:
            lines.append(f"{pad}- **{text(step.node.label)}** → :grey_question:"
                         + (f" — {text(step.evidence)}" if step.evidence else ""))
        else:
            lines.append(f"{pad}- **{text(step.node.label)}** → **{text(step.branch)}** — {text(step.evidence)}")
        depth += 1
    if result.leaf is not None:
        lines.append(f"{'  ' * depth}- :checkered_flag: **{text(result.leaf.label)}**")
    return "\n".join(lines)


def next_markdown(result: Walk, runbook: Any, trigger: str, ran: list[str]) -> str:
    lines = ["#### Next steps"]
    if result.question:
        lines.append(f"- :raising_hand: Stopped for a person: {result.question}")
    elif result.leaf is not None:
        section = result.leaf.section
        if section and ran:
            lines.append(f"- Follow {section_ref(section, runbook)} with the findings above "
                         f"(`/{trigger} help {section}`).")
        elif section:
            lines.append(f"- No SOP automates {section_ref(section, runbook)}: follow it by hand "
                         f"(`/{trigger} help {section}`).")
        else:
            lines.append(f"- The runbook says: {text(result.leaf.label)}.")
    return "\n".join(lines)


# Words that say nothing about where to start ("the pod is down" matches every label with "is").
_STOP = frozenset("a an and are at be by for from has have in is it its of on or that the this to was "
                  "were will with not no than more over under too high low cluster fail failed failing "
                  "alert firing".split())


def alert_words(labels: dict[str, str], annotations: dict[str, str]) -> str:
    """An alert's own words for ``find_start``: its name split at case changes, its summary."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", labels.get("alertname", ""))
    said = f"{name} {annotations.get('summary', '')}"
    return " ".join(w for w in _norm(said).replace("/", " ").split() if len(w) > 2 and w not in _STOP)


async def triage_markdown(charts: list[Flowchart], words: str, ctx: "HandlerContext", registry: Any,
                          runbook: Any, *, trigger: str = "sop", timeout_s: float = 30.0) -> str:
    """A triage for an alert no SOP handles: where its words point in the flowcharts (else the
    root), the path with its evidence, one line per SOP of the section reached, what to do next."""
    found = find_start(charts, words) or find_start(charts, "")
    if found is None:
        return ""
    chart, start = found
    result = await walk(chart, start, ctx)
    sops = registry.for_section(result.leaf.section) if result.leaf and result.leaf.section else []
    sops = [s for s in sops if not any(f.is_required() for f in s.params.model_fields.values())]
    lines = [path_markdown(result, runbook).replace("#### Triage path", "#### :compass: Triage path", 1)]
    for item in sops:
        report = await run_sop(item, ctx, None, timeout_s=timeout_s)
        worst = [f for f in report.findings if f.status is report.status]
        said = f" — {text(worst[0].target)}: {text(worst[0].summary)}" if worst and report.status is not Status.ok else ""
        lines.append(f"- {EMOJI[report.status]} `{report.sop_id}`{said}")
    lines.append(next_markdown(result, runbook, trigger, [s.id for s in sops]))
    return "\n".join(lines)


class Triage:
    """The ``triage`` subcommand of a running bot (``bot.service.Bot``)."""

    def __init__(self, bot: Any):
        self.bot = bot

    def charts(self) -> list[Flowchart]:
        return flowcharts(self.bot.runbook) if self.bot.runbook is not None else []

    def subcommand(self) -> Any:
        from bot.commands import Reply, Subcommand

        async def run(inv: Any, args: list[str]) -> Any:
            words = " ".join(args)
            found = find_start(self.charts(), words)
            trigger = self.bot.trigger
            if found is None:
                why = (f"no flowchart node matches {code(words[:80])}; `/{trigger} search {text(words[:80])}` "
                       f"finds runbook sections" if words else
                       "the runbook has no Mermaid flowchart (runbook.path)")
                return Reply(text=f"Cannot triage: {why}.")
            chart, start = found
            key = ("triage", inv.channel_id, chart.section, start.id)
            label = "`/" + " ".join([trigger, "triage", *args]) + "`"
            refused = self.bot.start_run(inv, key, label,
                                         lambda run: self.thread(inv, chart, start, run), name="triage")
            if refused is not None:
                return refused
            return Reply(text=f"Triage from {text(start.label)!r} ({section_ref(chart.section, self.bot.runbook)}); "
                              f"the path and findings will appear in a thread in this channel.")

        return Subcommand(name="triage", usage="triage [words]",
                          summary="walk the runbook's flowchart from the root (or where the words point), "
                                  "running the SOPs of the section it reaches", run=run, posts=True)

    async def thread(self, inv: Any, chart: Flowchart, start: Node, run: Any = None) -> None:
        bot = self.bot
        head = (f"{mention(inv.user_name)} ran {code(f'/{bot.trigger} ' + ' '.join(inv.text.split()))} — "
                f"runbook flowchart ({section_ref(chart.section, bot.runbook)})")
        root = await bot.chat.post(inv.channel_id, f":hourglass_flowing_sand: {head}")
        if run is not None:
            run.root_id = root.id
        result = await walk(chart, start, bot.ctx)
        await bot.chat.post(inv.channel_id, path_markdown(result, bot.runbook), root_id=root.id)
        sops = bot.registry.for_section(result.leaf.section) if result.leaf and result.leaf.section else []
        sops = [s for s in sops if not any(f.is_required() for f in s.params.model_fields.values())]
        for item in sops:  # each with its defaults: the section's whole check, as /sop <id> runs it
            report = await run_sop(item, bot.ctx, None, timeout_s=bot.handler_timeout_s)
            result.reports.append(report)
            await bot.chat.post(inv.channel_id, report_markdown(report, bot.runbook), root_id=root.id)
        await bot.chat.post(inv.channel_id, next_markdown(result, bot.runbook, bot.trigger,
                                                          [s.id for s in sops]), root_id=root.id)
        worst = max((r.status for r in result.reports), key=_rank, default=Status.ok)
        where = (f"reached **{text(result.leaf.label)}**" if result.leaf is not None
                 else "stopped: a person must decide")
        ran = (": ran " + ", ".join(f"`{s.id}`" for s in sops)) if sops else ""
        await bot.chat.edit(root.id, f"{EMOJI[worst] if result.reports else ':compass:'} {head}: {where}{ran}")
        for report in result.reports:
            for hook in bot.on_report:
                try:
                    await hook(report, inv.channel_id, root.id, inv.user_name)
                except Exception:
                    log.exception("report hook failed for triage")


def _rank(status: Status) -> int:
    return list(Status).index(status)  # Status is declared best to worst
