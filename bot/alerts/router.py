"""Which SOP answers an alert, in which channel, mentioning whom; and the SOP's arguments taken
from the alert's labels.

Configured routes come first (first match wins); otherwise the SOPs that declare the alertname
(``@sop(alerts=...)``). An alert with neither is "unmapped": its thread says so and points at
the closest runbook sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import ValidationError

from bot.alerts.matchers import Matcher, matches_all, parse_matchers
from bot.config import AlertRouteConfig
from bot.models import Severity
from bot.registry import SOP, Registry, SOPParams, _problems
from bot.runbook import Runbook, Section


@dataclass(frozen=True)
class Route:
    matchers: list[Matcher]
    sop: str | None = None
    channel: str | None = None
    mention: tuple[str, ...] = ()
    severity: Severity | None = None

    @classmethod
    def from_config(cls, cfg: AlertRouteConfig) -> "Route":
        return cls(parse_matchers(cfg.matchers), cfg.sop, cfg.channel, tuple(cfg.mention), cfg.severity)


@dataclass
class Decision:
    """Where one alert goes."""

    sops: list[SOP]
    channel: str
    mention: list[str]
    severity: Severity
    # Runbook sections to offer when no SOP matches (closest first).
    suggestions: list[Section] = field(default_factory=list)
    problem: str = ""  # e.g. a route naming an SOP that does not exist


@dataclass
class Diagnosis:
    """One SOP to run for one target, with the label problems found on the way."""

    sop: SOP
    params: SOPParams | None  # None: a required argument is missing or invalid
    problems: list[str]

    @property
    def target(self) -> str:
        if self.params is None:
            return "-"
        args = self.params.model_dump(exclude_none=True)
        return " ".join(f"{k}={v}" for k, v in sorted(args.items())) or "-"

    @property
    def key(self) -> tuple[str, str]:
        return (self.sop.id, self.target)


LABEL_SEVERITY = {"critical": Severity.P1, "page": Severity.P1, "major": Severity.P2,
                  "error": Severity.P2, "warning": Severity.P3, "minor": Severity.P3,
                  "info": Severity.P4, "none": Severity.P4, "low": Severity.P4}


class Router:
    def __init__(self, registry: Registry, routes: list[AlertRouteConfig], *, channel: str,
                 mention: list[str] | None = None, runbook: Runbook | None = None):
        self.registry = registry
        self.routes = [Route.from_config(r) for r in routes]
        self.channel = channel
        self.mention = list(mention or [])
        self.runbook = runbook
        self._cache: dict[tuple[tuple[tuple[str, str], ...], str], Decision] = {}

    def decide(self, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Decision:
        """Cached: a storm repeats the same label sets, and the runbook search is not free."""
        key = (tuple(sorted(labels.items())), (annotations or {}).get("summary", ""))
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= 4096:
                self._cache.clear()
            hit = self._cache[key] = self._decide(labels, annotations)
        return hit

    def _decide(self, labels: dict[str, str], annotations: dict[str, str] | None) -> Decision:
        alertname = labels.get("alertname", "")
        route = next((r for r in self.routes if matches_all(r.matchers, labels)), None)
        problem = ""
        sops: list[SOP] = []
        if route is not None and route.sop:
            found = self.registry.sops.get(route.sop)
            if found is None:
                problem = f"route names SOP `{route.sop}`, which does not exist"
            else:
                sops = [found]
        if not sops and not problem:
            sops = self.registry.for_alert(alertname)
        suggestions: list[Section] = []
        if not sops and self.runbook is not None:
            query = " ".join([alertname, split_camel(alertname), (annotations or {}).get("summary", "")])
            suggestions = [s for s, _ in self.runbook.search(query, limit=3)]
        # Route override, else the runbook's severity of the SOP, else the alert's own label,
        # else the closest runbook section's, else P3.
        severity = ((route.severity if route else None)
                    or (min((s.severity for s in sops), key=lambda s: s.value) if sops else None)
                    or severity_from_label(labels)
                    or (Severity(suggestions[0].severity) if suggestions and suggestions[0].severity else None)
                    or Severity.P3)
        return Decision(sops=sops, channel=(route.channel if route and route.channel else self.channel),
                        mention=self.mention + [m for m in (route.mention if route else ()) if m not in self.mention],
                        severity=severity, suggestions=suggestions, problem=problem)


def split_camel(name: str) -> str:
    """"CoreDNSFailures" → "Core DNS Failures": runbook prose has words, not alert names."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)


def severity_from_label(labels: dict[str, str]) -> Severity | None:
    value = labels.get("severity", "")
    return LABEL_SEVERITY.get(value.lower()) or _label_p(value)


def _label_p(value: str) -> Severity | None:
    return Severity(value.upper()) if value.upper() in ("P1", "P2", "P3", "P4") else None


def diagnosis_for(sop: SOP, labels: dict[str, str]) -> Diagnosis:
    """The SOP's arguments from the alert's labels: only fields the parameter model has; a label
    that fails validation is dropped and reported, never used."""
    fields = sop.params.model_fields
    raw = {name: labels[name] for name in fields if labels.get(name)}
    problems: list[str] = []
    try:
        return Diagnosis(sop, sop.params.model_validate(raw), problems)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"] and str(e["loc"][0]) in raw}
        problems += [f"label {p}" for p in _problems(exc) if p.split(":")[0] in bad]
        for name in bad:
            raw.pop(name, None)
    try:
        return Diagnosis(sop, sop.params.model_validate(raw), problems)
    except ValidationError as exc:
        problems += [f"cannot run: {p}" for p in _problems(exc)]
        return Diagnosis(sop, None, problems)
