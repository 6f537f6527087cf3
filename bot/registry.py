"""The SOP registry: handlers declare themselves with ``@sop(...)``.

A handler is one decorated async function in the module of its runbook chapter::

    class Params(SOPParams):
        namespace: K8sName = "vault"

    @sop("vault-status", title="Vault seal and leader status", sections=("5.1", "5.2", "5.3"),
         severity=Severity.P1, alerts=("VaultSealed", "VaultLeaderLost"),
         causes=("replica sealed after a restart", "no Raft leader"))
    async def vault_status(ctx: HandlerContext, params: Params) -> list[Finding]:
        ...

``sections`` are the runbook entries the SOP covers (the first is its main one), including
``####`` sub-problems as ``"7.2/oidc"``; ``causes`` are the runbook's root causes it can name.
Handler packages are found through the ``sopbot.handlers`` entry-point group (``load_handlers``);
the engine imports none of them by name. The registry knows nothing of chat: it validates
arguments and runs handlers.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.models import Finding, Severity

if TYPE_CHECKING:
    from bot.context import HandlerContext

log = logging.getLogger(__name__)
HANDLER_GROUP = "sopbot.handlers"  # entry points: name = importable package of SOPs and actions

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
    sections: tuple[str, ...] = ()  # every runbook entry covered; sections[0] == section
    causes: tuple[str, ...] = ()    # runbook root causes this SOP can name from evidence
    # SOPs whose failure explains this one's (an alert thread links to their open threads)
    explained_by: tuple[str, ...] = ()

    def covers(self, number: str) -> bool:
        """Whether ``number`` ("7", "7.2", "7.2/oidc") is, contains or is part of a declared entry."""
        return any(_related(d, number) for d in self.sections or (self.section,))

    def parse_args(self, raw: dict[str, str], context: dict[str, Any] | None = None) -> SOPParams:
        """``context`` ({"ctx": HandlerContext}) lets a model check an argument names something
        that exists (a configured replica) and refuse it at once, before any thread."""
        try:
            return self.params.model_validate(raw, context=context)
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
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
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
        """Every SOP declaring ``section``, a part of it, or the section it is part of."""
        return [s for s in self if s.covers(section)]

    def for_alert(self, alertname: str) -> list[SOP]:
        return [s for s in self if alertname in s.alerts]


def _section_key(section: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", section.split("/", 1)[0]))


def _within(inner: str, outer: str) -> bool:
    """"7.2/oidc" and "7.2.1" are within "7.2", and "7.2" within "7"; each within itself."""
    return inner == outer or inner.startswith(outer + ".") or inner.startswith(outer + "/")


def _related(declared: str, asked: str) -> bool:
    return _within(declared, asked) or _within(asked, declared)


SECTION_REF = re.compile(r"^\d+(\.\d+)*(/[a-z0-9][a-z0-9-]*)?$")


REGISTRY = Registry()


def sop(
    sop_id: str,
    *,
    title: str,
    severity: Severity,
    section: str = "",
    sections: Iterable[str] = (),
    causes: Iterable[str] = (),
    alerts: Iterable[str] = (),
    explained_by: Iterable[str] = (),
    registry: Registry | None = None,
) -> Callable[[Handler], Handler]:
    """Register an async handler ``(ctx, params) -> list[Finding]`` as an SOP.

    ``section`` is shorthand for a single entry; with ``sections`` too it goes first.
    The parameter model is taken from the annotation of the handler's ``params`` argument.
    ``explained_by`` names the SOPs whose failure explains a failure this one finds: an alert
    thread of this SOP links to their open threads (bot/alerts/related.py).
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", sop_id):
        raise ValueError(f"SOP id {sop_id!r}: use lowercase words joined by '-'")
    covered = tuple(dict.fromkeys(([section] if section else []) + list(sections)))
    if not covered:
        raise ValueError(f"SOP {sop_id}: declare the runbook entries it covers (sections=...)")
    for ref in covered:
        if not SECTION_REF.match(ref):
            raise ValueError(f"SOP {sop_id}: section {ref!r} is not like '4.1' or '7.2/oidc'")

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
                section=covered[0],
                sections=covered,
                causes=tuple(causes),
                explained_by=tuple(explained_by),
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
    """Import every handler package registered under the ``sopbot.handlers`` entry-point group
    (the built-in ``handlers`` and any team's own), so their decorators run. Idempotent."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=HANDLER_GROUP), key=lambda ep: ep.name)
    if not found:
        raise RuntimeError(f"no handler packages registered (entry-point group {HANDLER_GROUP!r}): "
                           "install sop-bot (pip install .) rather than running it from a source tree")
    for ep in found:
        ep.load()  # importing the package registers its SOPs and actions
        log.debug("handler package %s (%s) loaded", ep.name, ep.value)
    return REGISTRY
