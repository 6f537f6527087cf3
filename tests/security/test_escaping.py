"""Hostile alert, cluster and user values rendered into posts stay inert (issue 12)."""

from __future__ import annotations

from datetime import datetime, timezone

from bot.alerts.models import AlertGroup, AlertState, AlertStatus
from bot.alerts.render import root_message, unmapped_message
from bot.approvals.actions import Plan
from bot.models import Finding, Report, Severity, Status
from bot.render import report_markdown
from bot.safe_text import block, code, link, mention, safe_url, text
from tests.security.inert import problems

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
HOSTILE = [
    "@all", "hi @here and @channel", "```\n@all\n```\n@all", "`x` @all `y`", "\\`@all\\`",
    "![x](http://evil.example/p.png)", "[click me](javascript:alert(1))", "a)![x](http://evil/p.png",
    "rtl\u202eexe.txt", "zero\u200bwidth\ufeff", "nul\x00bel\x07", "\x1b[31mred\x1b[0m",
    "# heading | pipe | @bob", "~~~\n@all\n~~~", "&#64;all", "<!channel>",
]


def test_text_code_and_block_leave_no_mention_link_image_or_control_character():
    for value in HOSTILE:
        for rendered in (text(value), code(value), block(value), f"| {text(value)} |"):
            assert problems(rendered) == [], (value, rendered)
    # What a reader sees is still the value, with invisible characters made visible.
    assert text("rtl\u202eexe") == "rtl‹U+202E›exe"
    assert code("\x1b[31m") == "`‹U+001B›[31m`"


def test_links_are_http_only_and_cannot_break_out():
    assert link("source", "javascript:alert(1)") == "source"
    assert link("source", "file:///etc/passwd") == "source"
    assert safe_url("http://p:9090/graph?g0.expr=up)![x](http://evil/p.png") == \
        "http://p:9090/graph?g0.expr=up%29%21%5Bx%5D%28http://evil/p.png"
    assert ")" not in link("s", "http://a/b)c").split("](", 1)[1][:-1]
    assert mention("alice") == "@alice" and mention("all") == "`@all`" and mention("x y") == "`@x y`"


def _group(**labels: str) -> AlertGroup:
    alert = AlertState(fingerprint="f1", status=AlertStatus.firing, starts_at=NOW,
                       labels={"alertname": "Boom@all", **labels},
                       annotations={"summary": "Disk full @here ![x](http://evil.example/p.png) \u202e"},
                       generator_url="http://prom:9090/graph?g0.expr=up)![x](http://evil.example/p.png)")
    return AlertGroup(group_key="k", channel_id="c", opened_at=NOW, alerts={"f1": alert},
                      external_url="http://am:9093/)![y](http://evil.example/q.png)",
                      group_labels={"namespace": "@all"})


def test_an_alert_root_post_from_hostile_labels_annotations_and_urls_is_inert():
    message = root_message(_group(namespace="@all", pod="`@here`\x07"), sections=["5.1"],
                           sop_ids=["vault-status"], runbook=None, now=NOW)
    assert problems(message) == [], message
    assert "[source](http://prom:9090/graph?g0.expr=up%29%21%5Bx%5D%28http://evil.example/p.png%29)" in message
    assert "`namespace=@all`" in message  # the label is still there to read
    assert problems(unmapped_message("x@all](http://e)", [], None, problem="@here")) == []


def test_a_report_with_hostile_findings_and_next_steps_is_inert():
    report = Report(sop_id="vault-status", title="Vault", section="5.1", severity=Severity.P1,
                    params={"replica": "@all"}, started_at=NOW, duration_s=0.1,
                    findings=[Finding(status=Status.crit, target="pod-@here", summary="![i](http://e/i.png)",
                                      details="line\n```\n@all\n```\n@channel", next_step="kubectl -n @all get x")])
    message = report_markdown(report)
    assert problems(message) == [], message


def test_a_proposal_with_hostile_plan_and_outcome_is_inert():
    from bot.approvals.render import _body, _runbook
    plan = Plan(operations=["patch @all"], warnings=["@here ![w](http://e/w.png)"],
                runbook=["```", "@all"], preview="")
    lines = _body(None, {}, plan) + _runbook(plan)  # type: ignore[arg-type]
    assert problems("\n".join(lines)) == []
