"""One report model, two faces: Mattermost markdown and plain terminal text."""

from __future__ import annotations

from bot.models import Finding, Report, Status
from bot.runbook import Runbook
from bot.safe_text import block, code, text
from bot.safe_text import link as link_

EMOJI = {
    Status.ok: ":white_check_mark:",
    Status.warn: ":warning:",
    Status.crit: ":red_circle:",
    Status.unknown: ":grey_question:",
}
TERMINAL = {Status.ok: "OK", Status.warn: "WARN", Status.crit: "CRIT", Status.unknown: "UNKNOWN"}


def _cell(value: str) -> str:
    # Findings and labels carry cluster and alert data: inert, and a pipe cannot break the table.
    return text(value)


def section_ref(section: str, runbook: Runbook | None) -> str:
    target = runbook.link(section) if runbook else None
    return link_(f"runbook {section}", target) if target else f"runbook {text(section)}"


def report_markdown(report: Report, runbook: Runbook | None = None) -> str:
    status = report.status
    lines = [
        f"#### {EMOJI[status]} {code(report.sop_id)} — {text(report.title)}: **{status.value.upper()}**",
        f"{section_ref(report.section, runbook)} · severity {report.severity.value} "
        f"({report.severity.label}, respond within {report.severity.response_time})"
        + (f" · {_params(report)}" if report.params else ""),
        "",
    ]
    lines += findings_table(report.findings)
    if report.next_steps:
        lines += ["", "**Next steps**"] + [f"- {text(step)}" for step in report.next_steps]
    detailed = [f for f in report.findings if f.details and f.status is not Status.ok]
    for f in detailed:
        lines += ["", f"**{text(f.target or f.summary)}**", block(f.details.strip())]
    lines += ["", f"_checked in {report.duration_s:.1f}s at {report.started_at:%Y-%m-%d %H:%M:%S} UTC_"]
    return "\n".join(lines)


def findings_table(findings: list[Finding]) -> list[str]:
    if not findings:
        return ["_no findings_"]
    rows = ["| | Target | Finding |", "|:-:|:--|:--|"]
    for f in sorted(findings, key=lambda f: -f.status.rank):
        rows.append(f"| {EMOJI[f.status]} | {_cell(f.target or '-')} | {_cell(f.summary)} |")
    return rows


def report_text(report: Report, runbook: Runbook | None = None) -> str:
    status = report.status
    lines = [
        f"{report.sop_id} — {report.title}: {TERMINAL[status]}",
        f"runbook {report.section} · severity {report.severity.value} "
        f"({report.severity.label}, respond within {report.severity.response_time})",
    ]
    if runbook and runbook.link(report.section):
        lines.append(runbook.link(report.section) or "")
    width = max((len(f.target) for f in report.findings), default=0)
    for f in sorted(report.findings, key=lambda f: -f.status.rank):
        lines.append(f"  [{TERMINAL[f.status]:^7}] {f.target:<{width}}  {f.summary}")
        if f.details and f.status is not Status.ok:
            lines += [f"      {line}" for line in f.details.strip().splitlines()]
    if report.next_steps:
        lines.append("Next steps:")
        lines += [f"  - {step}" for step in report.next_steps]
    return "\n".join(lines)


def _params(report: Report) -> str:
    return " ".join(code(f"{k}={v}") for k, v in report.params.items())
