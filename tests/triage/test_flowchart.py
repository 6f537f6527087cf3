"""The Mermaid subset of the runbook's flowcharts, and what check-config says of a bad one."""

from __future__ import annotations

import pytest

from bot.flowchart import flowcharts, parse
from bot.runbook import Runbook
from bot.runtime import check_connections
from sandbox.runner import RUNBOOK


def test_the_sandbox_runbook_section_1_flowchart_parses_cleanly():
    charts = flowcharts(Runbook.load(RUNBOOK))
    assert [c.problems for c in charts] == [[] for _ in charts]  # every chapter's flowchart parses cleanly
    chart = next(c for c in charts if c.section == "1")
    assert chart.root.id == "START"
    scope = chart.nodes["SCOPE"]
    assert scope.decision and scope.label == "What is affected?"
    assert [e.label for e in chart.out("SCOPE")] == ["One pod or service", "Several services", "The cluster",
                                                     "Nothing visible"]
    assert chart.nodes["UNSEAL"].section == "5.1" and chart.nodes["CNI"].section == "3"


def test_bad_constructs_are_problems_not_crashes():
    chart = parse('graph TD\n  A["start"] --> B{"Ok?"}\n  B -->|"yes"| C["done"]\n'
                  '  B -.-> D\n  subgraph x\n  C --> E\n', "9")
    assert chart.problems == [
        "flowchart in section 9, line 4: unsupported construct 'B -.-> D'",
        "flowchart in section 9, line 5: unsupported construct 'subgraph x'",
        "flowchart in section 9: decision B (Ok?) has 1 branch(es)",
        "flowchart in section 9: node E is used but never given a label",
    ]
    assert parse("pie title x\n", "2").problems == ["flowchart in section 2: starts with 'pie title x', not 'graph TD'"]


@pytest.mark.asyncio
async def test_check_config_reports_a_malformed_flowchart(sandbox, tmp_path):
    text = RUNBOOK.read_text(encoding="utf-8").replace(
        'SEAL -->|"Sealed"| UNSEAL["Unseal Vault - Section 5.1"]', 'SEAL ==>|"Sealed"| UNSEAL["Unseal Vault"]')
    path = tmp_path / "runbook.md"
    path.write_text(text, encoding="utf-8")
    bad = await check_connections(sandbox.settings(runbook={"path": str(path)}))
    assert "unsupported construct 'SEAL ==>" in bad["runbook"]
    assert "decision SEAL (Vault sealed?) has 1 branch(es)" in bad["runbook"]
    good = await check_connections(sandbox.settings())
    assert good["runbook"] is None


async def _no(ctx):
    return None


@pytest.mark.asyncio
async def test_evaluators_register_once_and_a_failing_one_stops_the_walk():
    from bot.triage import Answer, decision, walk

    registry: dict = {}

    @decision("Vault sealed?", registry=registry)
    async def broken(ctx):
        raise RuntimeError("vault client gone")

    with pytest.raises(ValueError, match="two evaluators"):
        decision("vault  SEALED", registry=registry)(_no)
    with pytest.raises(TypeError, match="must be async"):
        decision("Other?", registry=registry)(lambda ctx: Answer("x", ""))
    chart = parse('graph TD\n  Q{"Vault sealed?"} -->|"Sealed"| A["Unseal - Section 5.1"]\n'
                  '  Q -->|"Unsealed"| B["Certs - Section 4"]\n', "4")
    result = await walk(chart, chart.root, ctx=None, evaluators=registry)
    assert result.leaf is None and result.steps[0].branch is None
    assert result.steps[0].evidence == "the evaluator failed: RuntimeError: vault client gone"
    assert result.question.startswith("**Vault sealed?** — the evidence fits no branch")
    by_id: dict = {}

    @decision("Q", registry=by_id)  # by node id
    async def sealed(ctx):
        return Answer("sealed", "3 of 3 sealed")

    result = await walk(chart, chart.root, ctx=None, evaluators=by_id)
    assert result.leaf.id == "A" and result.steps[0].branch == "Sealed"
