"""What a remediation action is, generically: typed params, a risk, a plan (what changes, a
dry-run preview, the state it was made for) and a run. Concrete actions with runbook knowledge
live in ``handlers/actions/``; the engine only sees this interface.

    class ScaleParams(ActionParams):
        namespace: K8sNamespace
        name: K8sName
        replicas: int = Field(ge=0, le=50)

    @remediation_action
    class ScaleDeployment(Action[ScaleParams]):
        name = "scale-deployment"; title = "Scale a Deployment"; risk = Risk.low; section = "3.6"
        params = ScaleParams
        async def plan(self, env, p) -> Plan: ...      # read-only: GETs and dryRun=All
        async def run(self, env, p) -> Outcome: ...    # the change itself

Staleness: ``Plan.state`` is a short fingerprint of the target as the plan saw it; the engine
plans again right before running and refuses when the fingerprint differs.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

if TYPE_CHECKING:
    from bot.config import RemediationConfig
    from bot.context import HandlerContext


class Risk(str, Enum):
    low = "low"
    high = "high"


class ActionParams(BaseModel):
    """Base of every action's parameters: unknown keys are errors, values validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=ActionParams)


class Plan(BaseModel):
    """What an action would do now. Everything here is posted and stored: never a secret."""

    operations: list[str] = Field(default_factory=list, description="API operations and targets")
    preview: str = Field("", description="dry-run answer or computed plan + current state (Markdown)")
    dry_run: bool = Field(False, description="the preview comes from server-side dryRun=All")
    state: str = Field("", description="fingerprint of the target state the plan is for")
    state_text: str = Field("", description="the same state in words, for the stale message")
    runbook: list[str] = Field(default_factory=list, description="equivalent commands, by hand")
    warnings: list[str] = Field(default_factory=list)
    blocked: str | None = Field(None, description="why it cannot be proposed at all")
    nothing_to_do: str | None = Field(None, description="the target is already as wanted")


class Outcome(BaseModel):
    ok: bool
    summary: str
    details: str = ""


class SecretPrompt(BaseModel):
    """An action that needs people to hand secrets (e.g. unseal key shares) after approval:
    each holder opens a private dialog with ``/sop share <id>``; values go to ``accept_secret``
    and are never stored, posted or logged."""

    title: str = Field(max_length=24)
    label: str = Field(max_length=24)
    help_text: str = ""


class SecretProgress(BaseModel):
    """What ``accept_secret`` reports: safe to post (never contains the secret)."""

    message: str
    done: bool = False
    ok: bool = True
    field_error: str | None = None  # shown in the dialog, the value was refused


@dataclass
class ActionEnv:
    """What an action works with: the platform clients and the remediation config."""

    ctx: "HandlerContext"
    config: "RemediationConfig"
    actor: str = ""
    # Labels of the firing alerts whose chat thread is the given root post id (alert threads).
    thread_alerts: Callable[[str], Awaitable[list[dict[str, str]]]] | None = None


class Action(ABC, Generic[P]):
    name: ClassVar[str]
    title: ClassVar[str]
    section: ClassVar[str] = ""
    step: ClassVar[str] = ""  # the Resolution step of ``section`` it carries out, e.g. "step 1: restart CoreDNS"
    # Other entries whose Resolution it carries out too, section → step (restart: 3.4's Traefik, 3.6's CoreDNS).
    also: ClassVar[dict[str, str]] = {}
    risk: ClassVar[Risk] = Risk.low
    # When risk_for depends on the params: the rule in words, shown instead of the static risk.
    risk_rule: ClassVar[str] = ""
    params: ClassVar[type[ActionParams]]
    changes: ClassVar[str] = ""  # one line: what kind of change, e.g. "patches a Deployment"

    def risk_for(self, params: P) -> Risk:
        return self.risk

    def resolve(self, env: ActionEnv, params: P) -> P:
        """Fill params that depend on config (e.g. which key source); default: unchanged."""
        return params

    def secret_prompt(self, params: P) -> SecretPrompt | None:
        return None

    def enabled(self, env: ActionEnv, params: P) -> str | None:
        """None when this action may be proposed with these params, else why not."""
        return None

    @abstractmethod
    async def plan(self, env: ActionEnv, params: P) -> Plan: ...

    @abstractmethod
    async def run(self, env: ActionEnv, params: P) -> Outcome: ...

    async def accept_secret(self, env: ActionEnv, params: P, secret: SecretStr) -> SecretProgress:
        raise NotImplementedError

    def parse(self, raw: dict[str, Any]) -> P:
        return self.params.model_validate(raw)  # type: ignore[return-value]

    def usage(self) -> str:
        parts = []
        for key, info in self.params.model_fields.items():
            hint = info.description or "value"
            parts.append(f"{key}=<{hint}>" if info.is_required()
                         else f"[{key}=<{hint}>{'' if info.default is None else f', default {info.default}'}]")
        return " ".join(parts)


ACTIONS: dict[str, Action[Any]] = {}


def remediation_action(cls: type[Action[Any]]) -> type[Action[Any]]:
    """Register an action class (one instance; actions keep no per-run state)."""
    if cls.name in ACTIONS:
        raise ValueError(f"remediation action {cls.name!r} registered twice")
    ACTIONS[cls.name] = cls()
    return cls


def fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def param_problems(exc: ValidationError) -> list[str]:
    """One line per problem; never the input value (it could be anything the user typed)."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = "is not a parameter of this action" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "string_pattern_mismatch":
            msg = "must be a Kubernetes name (lowercase letters, digits, '-', '.')"
        out.append(f"{loc}: {msg}")
    return out
