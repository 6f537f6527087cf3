"""Silence alerts in Alertmanager (API v2) while someone works on them: the alerts of an alert
thread (``thread=<root post id>``), or by alertname and labels."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated

from pydantic import Field, model_validator

from bot.sdk import (Action, ActionEnv, ActionParams, Outcome, Plan, Risk, SilenceMatcher,
                     fingerprint, remediation_action)
from handlers.actions.common import Unavailable, table

LabelValue = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")]
Labels = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*=[A-Za-z0-9_.:/-]{1,128}"
                                      r"(,[a-zA-Z_][a-zA-Z0-9_]*=[A-Za-z0-9_.:/-]{1,128})*$",
                              max_length=500, description="label=value,…")]
PostId = Annotated[str, Field(pattern=r"^[a-z0-9]{26}$", description="alert thread's root post id")]
MAX_SILENCES = 20


class SilenceParams(ActionParams):
    thread: PostId | None = None
    alertname: LabelValue | None = Field(None, description="alertname")
    labels: Labels | None = None
    hours: float = Field(2.0, gt=0, le=72, description="0-72")

    @model_validator(mode="after")
    def _one_way(self) -> "SilenceParams":
        if (self.thread is None) == (self.alertname is None):
            raise ValueError("give either thread=<alert thread id> or alertname=<name>")
        if self.thread is not None and self.labels is not None:
            raise ValueError("labels= goes with alertname=, not thread=")
        return self


def _exact(labels: dict[str, str]) -> list[SilenceMatcher]:
    return [SilenceMatcher(name=k, value=v) for k, v in sorted(labels.items())]


def _text(matchers: list[SilenceMatcher]) -> str:
    return "{" + ",".join(f'{m.name}="{m.value}"' for m in matchers) + "}"


@remediation_action
class SilenceAlerts(Action[SilenceParams]):
    name = "silence"
    title = "Silence alerts in Alertmanager"
    section = "1"
    risk = Risk.low
    params = SilenceParams
    changes = "creates Alertmanager silences"

    async def _silences(self, env: ActionEnv, p: SilenceParams) -> list[list[SilenceMatcher]]:
        """One matcher set per silence: each firing alert of the thread exactly, or the given
        alertname and labels."""
        if p.thread is not None:
            if env.thread_alerts is None:
                raise Unavailable("alert threads are not available (no alert pipeline)")
            alerts = await env.thread_alerts(p.thread)
            unique = {tuple(sorted(a.items())): a for a in alerts}
            return [_exact(a) for _, a in sorted(unique.items())]
        out = [SilenceMatcher(name="alertname", value=p.alertname or "")]
        for pair in p.labels.split(",") if p.labels else []:
            k, _, v = pair.partition("=")
            out.append(SilenceMatcher(name=k, value=v))
        return [out]

    async def plan(self, env: ActionEnv, p: SilenceParams) -> Plan:
        am = env.ctx.alertmanager
        if am is None:
            raise Unavailable("no Alertmanager configured (alertmanager.url)")
        sets = await self._silences(env, p)
        runbook = [f"amtool silence add {' '.join(f'{m.name}={m.value}' for m in ms)} "
                   f"--duration={p.hours:g}h --comment='…'" for ms in sets[:5]]
        if not sets:
            return Plan(nothing_to_do="no firing alert in that thread", runbook=runbook)
        if len(sets) > MAX_SILENCES:
            return Plan(blocked=f"{len(sets)} alerts; at most {MAX_SILENCES} silences at once",
                        runbook=runbook)
        rows, matched = [], 0
        for ms in sets:
            alerts = await am.alerts(filters=[f'{m.name}="{m.value}"' for m in ms])
            matched += len(alerts)
            rows.append([_text(ms)[:160], str(len(alerts)),
                         ", ".join(sorted({a.status.state for a in alerts})) or "-"])
        return Plan(operations=[f"POST /api/v2/silences matchers {_text(ms)} for {p.hours:g}h" for ms in sets],
                    preview=f"{matched} alert(s) in Alertmanager match now.\n"
                            + table(["matchers", "alerts", "state"], rows),
                    state=fingerprint([[(m.name, m.value) for m in ms] for ms in sets]),
                    state_text=f"{len(sets)} alert(s) to silence", runbook=runbook,
                    warnings=[] if matched else ["no alert matches right now"])

    async def run(self, env: ActionEnv, p: SilenceParams) -> Outcome:
        am = env.ctx.alertmanager
        if am is None:
            raise Unavailable("no Alertmanager configured (alertmanager.url)")
        start = datetime.now(timezone.utc)
        end = start + timedelta(hours=p.hours)
        ids = [await am.create_silence(ms, start, end, created_by=f"sop-bot for @{env.actor}",
                                       comment=f"SOP Bot remediation requested by @{env.actor}")
               for ms in await self._silences(env, p)]
        return Outcome(ok=True, summary=f"{len(ids)} silence(s) until {end.strftime('%Y-%m-%d %H:%M UTC')}: "
                                        + ", ".join(ids))
