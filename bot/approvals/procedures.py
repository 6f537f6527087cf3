"""What a procedure is, generically: an ordered list of checks and actions (runbook chapters
9–11), proposed as one plan, approved once by the same quorum rules as single actions (and
again at a step marked high-risk or asking for confirmation), then run step by step with a live
log. Concrete procedures with runbook knowledge live in the handlers; the engine only sees
this interface::

    class NodeParams(ActionParams):
        node: K8sName

    async def cordoned(run: StepRun) -> Gate:          # precondition: run, done already, or blocked
        node = await run.ctx.require_kube().get("v1", "nodes", run.params.node)
        return Gate.done("already cordoned") if node["spec"].get("unschedulable") else Gate.ready()

    @procedure
    class NodeMaintenance(Procedure[NodeParams]):
        name = "node-maintenance"; title = "Node maintenance"; section = "11.3"
        params = NodeParams
        steps = (
            Step.from_action(Cordon(), lambda run: {"node": run.params.node}),
            Step("wait", "Pods gone from the node", kind="check", run=..., poll_s=5, timeout_s=600),
            Step.from_action(Uncordon(), ..., confirm="Do the maintenance, then approve to uncordon"),
        )

Exactly once per step: every step's start and end is a compare-and-set in the store
(``ProcedureRepo``). A step found ``running`` after a restart is never re-run blindly: its
precondition is asked again; "done" marks it done, "ready" runs it (the precondition says its
effect is not there), "blocked" stops the procedure there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel

from bot.approvals.actions import Action, ActionEnv, ActionParams, Outcome, Plan, Risk

if TYPE_CHECKING:
    from bot.context import HandlerContext

P = TypeVar("P", bound=ActionParams)


class Gate(BaseModel):
    """What a step's precondition says right before the step runs (and after a restart)."""

    go: Literal["ready", "done", "blocked"]
    why: str = ""

    @classmethod
    def ready(cls, why: str = "") -> "Gate":
        return cls(go="ready", why=why)

    @classmethod
    def done(cls, why: str) -> "Gate":
        """The step's effect is there already: it is marked done without running."""
        return cls(go="done", why=why)

    @classmethod
    def blocked(cls, why: str) -> "Gate":
        """The step must not run now: the procedure stops here (❌, resumable)."""
        return cls(go="blocked", why=why)


@dataclass
class StepRun:
    """What a step works with. ``memo`` holds facts earlier steps recorded (the machine of a
    node, the nodes before a replacement); it is stored with each step's end, so a step reads
    what the steps before it saw even after a restart."""

    env: ActionEnv
    params: Any
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def ctx(self) -> "HandlerContext":
        return self.env.ctx


StepFn = Callable[[StepRun], Awaitable[Outcome]]
GateFn = Callable[[StepRun], Awaitable[Gate]]
PlanFn = Callable[[StepRun], Awaitable[Plan | None]]


async def _always_ready(run: StepRun) -> Gate:
    return Gate.ready()


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    run: StepFn
    kind: Literal["check", "action"] = "action"
    precondition: GateFn = _always_ready
    # A dry run of the step (read-only: GETs and dryRun=All), shown in the proposal; None when
    # the step cannot be dry-run (it depends on what the steps before it do).
    dry_run: PlanFn | None = None
    timeout_s: float = 120.0
    # Checks: asked again every poll_s until ok or timeout_s (waits: "the new node joined").
    poll_s: float = 0.0
    high_risk: bool = False  # approved again when reached, by the same rule
    confirm: str = ""  # ask for approval again with this text when reached (e.g. maintenance done?)
    next_step: str = ""  # the runbook's next step when this one fails
    runbook: tuple[str, ...] = ()  # the same step by hand

    @property
    def gated(self) -> bool:
        return self.high_risk or bool(self.confirm)

    @classmethod
    def from_action(cls, action: Action[Any], params: Callable[[StepRun], dict[str, Any]], *,
                    key: str | None = None, title: str | None = None, timeout_s: float = 120.0,
                    high_risk: bool | None = None, confirm: str = "", next_step: str = "",
                    dry_run: bool = True) -> "Step":
        """A registered remediation action as a step: its plan is the dry run and the
        precondition (``nothing_to_do`` → done, ``blocked`` → blocked), its run the step."""

        def parsed(run: StepRun) -> Any:
            return action.resolve(run.env, action.parse(params(run)))

        async def pre(run: StepRun) -> Gate:
            plan = await action.plan(run.env, parsed(run))
            if plan.blocked:
                return Gate.blocked(plan.blocked)
            if plan.nothing_to_do:
                return Gate.done(plan.nothing_to_do)
            return Gate.ready()

        async def go(run: StepRun) -> Outcome:
            return await action.run(run.env, parsed(run))

        async def plan(run: StepRun) -> Plan | None:
            return await action.plan(run.env, parsed(run))

        return cls(key=key or action.name, title=title or action.title, run=go, kind="action",
                   precondition=pre, dry_run=plan if dry_run else None, timeout_s=timeout_s,
                   high_risk=action.risk is Risk.high if high_risk is None else high_risk,
                   confirm=confirm, next_step=next_step)


class Procedure(Generic[P]):
    name: ClassVar[str]
    title: ClassVar[str]
    section: ClassVar[str] = ""
    risk: ClassVar[Risk] = Risk.high
    params: ClassVar[type[ActionParams]]
    # Fixed at registration: a step's index must mean the same step after a restart.
    steps: ClassVar[tuple[Step, ...]]

    def parse(self, raw: dict[str, Any]) -> P:
        return self.params.model_validate(raw)  # type: ignore[return-value]

    def enabled(self, env: ActionEnv, params: P) -> str | None:
        """None when it may be proposed with these params, else why not."""
        return None

    async def refuse(self, run: StepRun) -> str | None:
        """Read-only, before proposing: why there is nothing to propose (e.g. no such node)."""
        return None

    def usage(self) -> str:
        parts = []
        for key, info in self.params.model_fields.items():
            hint = info.description or "value"
            parts.append(f"{key}=<{hint}>" if info.is_required() else f"[{key}=<{hint}>]")
        return " ".join(parts)


PROCEDURES: dict[str, Procedure[Any]] = {}


def procedure(cls: type[Procedure[Any]]) -> type[Procedure[Any]]:
    """Register a procedure class (one instance; procedures keep no per-run state)."""
    if cls.name in PROCEDURES:
        raise ValueError(f"procedure {cls.name!r} registered twice")
    keys = [s.key for s in cls.steps]
    if not keys or len(set(keys)) != len(keys):
        raise ValueError(f"procedure {cls.name!r}: steps need distinct keys")
    PROCEDURES[cls.name] = cls()
    return cls


__all__ = ["Gate", "PROCEDURES", "Procedure", "Step", "StepRun", "procedure"]
