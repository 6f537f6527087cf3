"""Silence alerts in Alertmanager (API v2) while someone works on them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import Field

from bot.approvals.actions import (Action, ActionEnv, ActionParams, Outcome, Plan, Risk,
                                   remediation_action)
from bot.clients.alertmanager import SilenceMatcher
from handlers.actions.common import Unavailable, table

LabelValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]
Labels = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*=[A-Za-z0-9_.:/-]{1,128}"
                                      r"(,[a-zA-Z_][a-zA-Z0-9_]*=[A-Za-z0-9_.:/-]{1,128})*$",
                              max_length=500, description="label=value,…")]


class SilenceParams(ActionParams):
    alertname: LabelValue = Field(description="alertname")
    labels: Labels | None = None
    hours: float = Field(2.0, gt=0, le=72, description="0-72")


def _matchers(p: SilenceParams) -> list[SilenceMatcher]:
    out = [SilenceMatcher(name="alertname", value=p.alertname)]
    for pair in (p.labels or "").split(",") if p.labels else []:
        k, _, v = pair.partition("=")
        out.append(SilenceMatcher(name=k, value=v))
    return out


@remediation_action
class SilenceAlerts(Action[SilenceParams]):
    name = "silence"
    title = "Silence alerts in Alertmanager"
    section = "1"
    risk = Risk.low
    params = SilenceParams
    changes = "creates an Alertmanager silence"

    async def plan(self, env: ActionEnv, p: SilenceParams) -> Plan:
        am = env.ctx.alertmanager
        matchers = _matchers(p)
        text = ",".join(f'{m.name}="{m.value}"' for m in matchers)
        runbook = [f"amtool silence add {' '.join(f'{m.name}={m.value}' for m in matchers)} "
                   f"--duration={p.hours:g}h --comment='…'"]
        if am is None:
            raise Unavailable("no Alertmanager configured (alertmanager.url)")
        alerts = await am.alerts(filters=[f'{m.name}="{m.value}"' for m in matchers])
        rows = [[a.labels.get("alertname", ""), ", ".join(f"{k}={v}" for k, v in sorted(a.labels.items())
                                                         if k != "alertname")[:120], a.status.state]
                for a in alerts[:20]]
        preview = (f"{len(alerts)} alert(s) match `{{{text}}}` now"
                   + ("\n" + table(["alert", "labels", "state"], rows) if rows else ""))
        return Plan(operations=[f"POST /api/v2/silences matchers {{{text}}} for {p.hours:g}h"],
                    preview=preview, runbook=runbook,
                    warnings=[] if alerts else ["no alert matches right now"])

    async def run(self, env: ActionEnv, p: SilenceParams) -> Outcome:
        am = env.ctx.alertmanager
        if am is None:
            raise Unavailable("no Alertmanager configured (alertmanager.url)")
        start = datetime.now(timezone.utc)
        end = start + timedelta(hours=p.hours)
        sid = await am.create_silence(_matchers(p), start, end, created_by=f"sop-bot for @{env.actor}",
                                      comment=f"SOP Bot remediation requested by @{env.actor}")
        return Outcome(ok=True, summary=f"silence {sid} until {end.strftime('%Y-%m-%d %H:%M UTC')}")
