"""The SOP registry: handlers declare themselves with ``@sop(...)``.

A handler is one decorated async function in the module of its runbook chapter::

    class Params(SOPParams):
        namespace: K8sName = "vault"

    @sop("vault-status", title="Vault seal and leader status", section="5.1",
         severity=Severity.P1, alerts=("VaultSealed", "VaultLeaderLost"))
    async def vault_status(ctx: HandlerContext, params: Params) -> list[Finding]:
        ...

The registry knows nothing of chat: it validates arguments and runs handlers.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.models import Finding, Severity

if TYPE_CHECKING:
    from bot.context import HandlerContext

# DNS-1123 label / subdomain as Kubernetes validates names; nothing else reaches an API path.
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
K8sName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]
K8sNamespace = Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)]
# An alert label value that names a host[:port], e.g. node-exporter's "instance".
HOST_PORT = r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$"
HostPort = Annotated[str, Field(pattern=HOST_PORT, max_length=260)]


class SOPParams(BaseModel):
    """Base of every handler's parameter model: unknown keys are errors, values are strict."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(SOPParams):
    pass


Handler = Callable[["HandlerContext", Any], Awaitable[list[Finding]]]


class UnknownSOP(LookupError):
    def __init__(self, sop_id: str, suggestions: list[str]):
        super().__init__(sop_id)
        self.sop_id = sop_id
        self.suggestions = suggestions


class BadArguments(ValueError):
    """Arguments that do not fit the SOP's parameter model; ``problems`` are one line each."""

    def __init__(self, sop: "SOP", problems: list[str]):
        super().__init__("; ".join(problems))
        self.sop = sop
        self.problems = problems


@dataclass(frozen=True)
class SOP:
    id: str
    title: str
    section: str
    severity: Severity
    alerts: tuple[str, ...]
    params: type[SOPParams]
    func: Handler
    chapter: str = ""
    description: str = ""

    def parse_args(self, raw: dict[str, str]) -> SOPParams:
        try:
            return self.params.model_validate(raw)
        except ValidationError as exc:
            raise BadArguments(self, _problems(exc)) from None

    def usage(self) -> str:
        """``key=<type> (default …)`` for every parameter, for help and error replies."""
        parts = []
        for name, info in self.params.model_fields.items():
            hint = info.description or "value"
            if info.is_required():
                parts.append(f"{name}=<{hint}>")
            else:
                default = "" if info.default is None else f", default {info.default}"
                parts.append(f"[{name}=<{hint}>{default}]")
        return " ".join(parts)


_PATTERN_HINTS = {
    DNS1123_SUBDOMAIN: "must be a Kubernetes name (lowercase letters, digits, '-', '.')",
    DNS1123_LABEL: "must be a Kubernetes namespace (lowercase letters, digits, '-')",
    HOST_PORT: "must be host or host:port",
}


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "is not a parameter of this SOP"
        elif err["type"] == "string_pattern_mismatch":
            msg = _PATTERN_HINTS.get((err.get("ctx") or {}).get("pattern", ""),
                                     "has characters that are not allowed here")
        out.append(f"{loc}: {msg}")
    return out


@dataclass
class Registry:
    sops: dict[str, SOP] = field(default_factory=dict)

    def add(self, item: SOP) -> None:
        if item.id in self.sops:
            raise ValueError(f"SOP id {item.id!r} registered twice")
        self.sops[item.id] = item

    def get(self, sop_id: str) -> SOP:
        try:
            return self.sops[sop_id]
        except KeyError:
            raise UnknownSOP(sop_id, self.closest(sop_id)) from None

    def __iter__(self):
        return iter(sorted(self.sops.values(), key=lambda s: (_section_key(s.section), s.id)))

    def __len__(self) -> int:
        return len(self.sops)

    def closest(self, text: str, n: int = 3) -> list[str]:
        ids = list(self.sops)
        hits = difflib.get_close_matches(text.lower(), ids, n=n, cutoff=0.4)
        # Also match on a shared word, so "vault" finds "vault-status".
        for sop_id in ids:
            if len(hits) >= n:
                break
            if sop_id not in hits and text and text.lower() in sop_id:
                hits.append(sop_id)
        return hits

    def for_section(self, section: str) -> list[SOP]:
        return [s for s in self if s.section == section or s.section.startswith(section + ".")]

    def for_alert(self, alertname: str) -> list[SOP]:
        return [s for s in self if alertname in s.alerts]


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", section))


REGISTRY = Registry()


def sop(
    sop_id: str,
    *,
    title: str,
    section: str,
    severity: Severity,
    alerts: Iterable[str] = (),
    registry: Registry | None = None,
) -> Callable[[Handler], Handler]:
    """Register an async handler ``(ctx, params) -> list[Finding]`` as an SOP.

    The parameter model is taken from the annotation of the handler's ``params`` argument.
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", sop_id):
        raise ValueError(f"SOP id {sop_id!r}: use lowercase words joined by '-'")

    def register(func: Handler) -> Handler:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(f"SOP {sop_id}: handler must be async")
        hints = inspect.get_annotations(func, eval_str=True)
        params_model = hints.get("params", NoParams)
        if not (isinstance(params_model, type) and issubclass(params_model, SOPParams)):
            raise TypeError(f"SOP {sop_id}: 'params' must be annotated with an SOPParams model")
        module = func.__module__.rsplit(".", 1)[-1]
        (registry if registry is not None else REGISTRY).add(
            SOP(
                id=sop_id,
                title=title,
                section=section,
                severity=severity,
                alerts=tuple(alerts),
                params=params_model,
                func=func,
                chapter=module,
                description=inspect.cleandoc(func.__doc__ or ""),
            )
        )
        return func

    return register


def load_handlers() -> Registry:
    """Import every chapter module under ``handlers`` so their decorators run."""
    import handlers  # noqa: F401  (the package imports its chapter modules)

    return REGISTRY
