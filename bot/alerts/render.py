"""Alert threads as Mattermost markdown: the root summary, diagnosis replies, resolution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import quote

from bot.alerts.models import AlertGroup, AlertState, GroupState
from bot.models import Finding, Report, Status
from bot.render import EMOJI, _cell, findings_table, report_markdown, section_ref
from bot.runbook import Runbook, Section
from bot.safe_text import code, kv, link, mention, safe_url, text

MAX_ROWS = 20
# Labels that say nothing about the target of an alert.
_NOISE = {"alertname", "severity", "prometheus", "receive", "endpoint", "job", "service",
          "container", "uid", "prometheus_replica"}
_MAIN_FIRST = ("namespace", "pod", "node", "instance", "certificate", "issuer", "cluster", "name")


def duration(delta: timedelta) -> str:
    s = int(max(delta.total_seconds(), 0))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m" + (f" {s}s" if s and m < 10 else "")
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m}m"
    return f"{h // 24}d {h % 24}h"


def main_labels(labels: dict[str, str], limit: int = 4) -> str:
    keys = [k for k in _MAIN_FIRST if k in labels]
    keys += sorted(k for k in labels if k not in keys and k not in _NOISE and not k.startswith("__"))
    shown = [f"{k}={labels[k]}" for k in keys[:limit]]
    return " ".join(shown) or "-"


def labels_markdown(labels: dict[str, str], limit: int = 4) -> str:
    """The main labels as code spans (``namespace=@all`` stays text, mentions nobody)."""
    keys = [k for k in _MAIN_FIRST if k in labels]
    keys += sorted(k for k in labels if k not in keys and k not in _NOISE and not k.startswith("__"))
    return " ".join(kv(k, labels[k]) for k in keys[:limit]) or "-"


def selector(labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def silence_link(group: AlertGroup) -> str | None:
    if not group.external_url:
        return None
    labels = group.group_labels or _common(group)
    if not labels:
        return None
    base = safe_url(group.external_url.rstrip("/"))
    return f"{base}/#/silences/new?filter={quote(selector(labels), safe='')}" if base else None


def _common(group: AlertGroup) -> dict[str, str]:
    alerts = list(group.alerts.values())
    if not alerts:
        return {}
    common = dict(alerts[0].labels)
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a.labels.get(k) == v}
    return common


def root_message(group: AlertGroup, *, sections: list[str], sop_ids: list[str],
                 runbook: Runbook | None, now: datetime) -> str:
    alerts = sorted(group.alerts.values(), key=lambda a: (not a.firing, a.alertname, a.starts_at))
    firing = [a for a in alerts if a.firing]
    names = sorted({a.alertname for a in alerts}) or ["(no alertname)"]
    sev = group.severity
    if group.state is GroupState.open:
        head, emoji = "FIRING", (":red_circle:" if sev.value in ("P1", "P2") else ":warning:")
    elif group.state is GroupState.resolved:
        head, emoji = "RESOLVED", ":white_check_mark:"
    else:
        head, emoji = "CLOSED", ":white_check_mark:"
    total = len(alerts) + group.truncated
    counts = f"{len(firing)} of {total} alert{'s' if total != 1 else ''} firing"
    lines = [
        f"#### {emoji} **{head}** {', '.join(code(n) for n in names[:5])}"
        f"{' …' if len(names) > 5 else ''}",
        f"**{sev.value}** ({sev.label}, respond within {sev.response_time}) · {counts} · "
        f"since {_since(min((a.starts_at for a in firing or alerts), default=group.opened_at))}",
    ]
    # A summary common to the group, or the only alert's: one alert's text would mislead for many.
    summary = group.common_annotations.get("summary") or (
        alerts[0].annotations.get("summary", "") if len(alerts) == 1 else "")
    if summary:
        lines.append(f"> {_cell(summary)}")
    lines += ["", "| | Alert | Labels | Since | |", "|:-:|:--|:--|:--|:--|"]
    for a in alerts[:MAX_ROWS]:
        lines.append(_row(a))
    if len(alerts) > MAX_ROWS or group.truncated:
        lines.append(f"| | … and {len(alerts) - MAX_ROWS + group.truncated if len(alerts) > MAX_ROWS else group.truncated} more | | | |")
    links = [section_ref(s, runbook) for s in sections]
    silence = silence_link(group)
    if silence:
        links.append(link("silence", silence))
    if group.previous_link:
        links.append(f"follows {link('an earlier thread', group.previous_link)}")
    lines.append("")
    if sop_ids:
        lines.append("SOP: " + ", ".join(code(s) for s in sop_ids) + (" · " + " · ".join(links) if links else ""))
    elif links:
        lines.append("No SOP matches · " + " · ".join(links))
    if group.mentions:
        lines.append("cc " + " ".join(mention(m, special=True) for m in group.mentions))
    if group.acked_by:
        lines.append(f":eyes: acked by {mention(group.acked_by)}"
                     + (f" at {group.acked_at:%H:%M} UTC" if group.acked_at else ""))
    if group.escalated_at and not group.acked_by:
        lines.append(f":rotating_light: escalated at {group.escalated_at:%H:%M} UTC")
    if group.state is GroupState.resolved and group.resolved_at:
        lines.append(f"_resolved after {duration(group.resolved_at - group.opened_at)}_")
    elif group.state is GroupState.closed:
        lines.append("_closed: no longer active in Alertmanager (silenced or expired)_")
    return "\n".join(lines)


def _row(a: AlertState) -> str:
    if a.firing:
        icon = ":red_circle:"
    elif a.gone:
        icon = ":no_bell:"
    else:
        icon = ":white_check_mark:"
    source = link("source", a.generator_url) if safe_url(a.generator_url) else ""
    return (f"| {icon} | {_cell(a.alertname)} | {labels_markdown(a.labels)} | "
            f"{_since(a.starts_at)} | {source} |")


def _since(at: datetime) -> str:
    """When an alert started (its startsAt), the one format used in the header and the rows."""
    return f"{at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


def diagnosis_message(report: Report, runbook: Runbook | None, problems: list[str]) -> str:
    out = report_markdown(report, runbook)
    if problems:
        out += "\n\n**Alert labels not used**\n" + "\n".join(f"- {_cell(p)}" for p in problems)
    return out


def cannot_run_message(sop_id: str, title: str, problems: list[str]) -> str:
    return (f"#### :grey_question: {code(sop_id)} — {text(title)}: **NOT RUN**\n"
            "The alert's labels do not give this SOP what it needs:\n"
            + "\n".join(f"- {_cell(p)}" for p in problems))


def changed_message(report: Report, changed: list[Finding], gone: list[str],
                    runbook: Runbook | None) -> str:
    status = report.status
    lines = [f"#### {EMOJI[status]} {code(report.sop_id)} diagnosis changed: **{status.value.upper()}**"
             + (f" · {' '.join(kv(k, v) for k, v in report.params.items())}" if report.params else ""),
             ""]
    lines += findings_table(changed) if changed else []
    if gone:
        lines += ["", "No longer reported: " + "; ".join(_cell(g) for g in gone)]
    if report.next_steps and any(f.status is not Status.ok for f in changed):
        lines += ["", "**Next steps**"] + [f"- {text(s)}" for s in report.next_steps]
    lines += ["", f"_{section_ref(report.section, runbook)} · checked at {report.started_at:%H:%M:%S} UTC_"]
    return "\n".join(lines)


def unmapped_message(alertname: str, suggestions: list[Section], runbook: Runbook | None,
                     problem: str = "") -> str:
    lines = [f"#### :grey_question: No SOP matches {code(alertname)}"]
    if problem:
        lines.append(text(problem))
    if suggestions:
        lines.append("Closest runbook sections:")
        lines += [f"- {section_ref(s.number, runbook)} {s.title}" for s in suggestions]
    else:
        lines.append("No runbook section mentions it either.")
    return "\n".join(lines)


def resolved_message(group: AlertGroup) -> str:
    took = duration((group.resolved_at or group.opened_at) - group.opened_at)
    n = len(group.alerts)
    return f":white_check_mark: **Resolved** after {took} ({n} alert{'s' if n != 1 else ''})."


def closed_message(names: list[str]) -> str:
    return (":no_bell: **Closed**: Alertmanager no longer has "
            + ", ".join(code(n) for n in names) + " active (silenced or expired).")


def reopened_message(after: timedelta) -> str:
    return f":repeat: **Firing again**, {duration(after)} after it resolved."
