"""Procedure runs and their steps in the Store: the same compare-and-set discipline as
``ProposalRepo``. A run's state and each step's state only move along the arrows below, each
move one conditional UPDATE, so a duplicate event, a second task or a restart cannot start or
finish a step twice.

    run:  proposed ──✅ quorum──▶ running ──last step done──▶ succeeded
            │ ├─❌─▶ rejected     │  ▲  ├─gated step reached──▶ waiting ──✅ quorum──▶ running
            │ └─deadline─▶ expired│  │  └─step failed/blocked─▶ stopped ──resume──▶ running
            └──────────── abort (any unfinished state) ──────────────▶ aborted
    step: pending ──▶ running ──▶ done | failed ──resume──▶ pending
          pending/running ──precondition says done──▶ done ; ──blocked──▶ failed
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, Field

from bot.approvals.actions import Risk
from bot.approvals.models import IllegalTransition, Rule
from bot.approvals.repo import ProposalRepo
from bot.store import Store

MIGRATION = ("procedures-1", [
    """CREATE TABLE procedure_runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        procedure TEXT NOT NULL, params TEXT NOT NULL, risk TEXT NOT NULL,
        requester TEXT NOT NULL, source TEXT NOT NULL,
        channel_id TEXT NOT NULL, root_id TEXT NOT NULL, post_id TEXT UNIQUE, gate_post TEXT UNIQUE,
        state TEXT NOT NULL, rule TEXT NOT NULL, dry_runs TEXT NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0, memo TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
        decided_at TEXT, finished_at TEXT, rejected_by TEXT, summary TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX procedure_runs_state ON procedure_runs(state)",
    """CREATE TABLE procedure_steps (
        run_id INTEGER NOT NULL, idx INTEGER NOT NULL, state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT,
        summary TEXT NOT NULL DEFAULT '', details TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (run_id, idx))""",
    """CREATE TABLE procedure_votes (
        run_id INTEGER NOT NULL, round INTEGER NOT NULL, username TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (run_id, round, username))""",
    """CREATE TABLE procedure_notices (
        run_id INTEGER NOT NULL, username TEXT NOT NULL, kind TEXT NOT NULL,
        PRIMARY KEY (run_id, username, kind))""",
])


class RunState(str, Enum):
    proposed = "proposed"
    running = "running"
    waiting = "waiting"  # a gated step waits for its approval
    stopped = "stopped"  # a step failed or was blocked: resume or abort
    succeeded = "succeeded"
    rejected = "rejected"
    expired = "expired"
    aborted = "aborted"

    @property
    def final(self) -> bool:
        return self in (RunState.succeeded, RunState.rejected, RunState.expired, RunState.aborted)


RUN_TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.proposed: frozenset({RunState.running, RunState.rejected, RunState.expired, RunState.aborted}),
    RunState.running: frozenset({RunState.waiting, RunState.stopped, RunState.succeeded, RunState.aborted}),
    RunState.waiting: frozenset({RunState.running, RunState.stopped, RunState.aborted}),
    RunState.stopped: frozenset({RunState.running, RunState.aborted}),
}
OPEN = tuple(s.value for s in RunState if not s.final)


class StepState(str, Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class StepRecord(BaseModel):
    idx: int
    state: StepState
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    summary: str = ""
    details: str = ""


class ProcedureRun(BaseModel):
    id: int
    procedure: str
    params: dict[str, Any]
    risk: Risk
    requester: str
    source: str
    channel_id: str
    root_id: str
    post_id: str | None
    gate_post: str | None
    state: RunState
    rule: Rule
    dry_runs: list[str]  # per step: its dry run in Markdown, "" when it cannot be dry-run
    cursor: int  # index of the step the run has reached
    memo: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    finished_at: datetime | None = None
    rejected_by: str | None = None
    summary: str = ""
    steps: list[StepRecord] = Field(default_factory=list)
    approvers: list[str] = Field(default_factory=list)  # of the plan (round 0)
    gate_approvers: list[str] = Field(default_factory=list)  # of the step waiting now

    @property
    def label(self) -> str:
        return f"procedure #{self.id} {self.procedure}"

    @property
    def round(self) -> int:
        """The vote round now open: 0 for the plan, step index + 1 for a gated step."""
        return self.cursor + 1 if self.state is RunState.waiting else 0


def _dump(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class ProcedureRepo:
    def __init__(self, store: Store):
        self.store = store

    async def migrate(self) -> None:
        await self.store.migrate(*MIGRATION)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, rid: int) -> ProcedureRun | None:
        row = await self.store.fetchone("SELECT * FROM procedure_runs WHERE id=?", (rid,))
        return await self._load(row) if row else None

    async def by_post(self, post_id: str) -> tuple[ProcedureRun, int] | None:
        """The run a post belongs to and the vote round it is for (0: the proposal post)."""
        row = await self.store.fetchone(
            "SELECT * FROM procedure_runs WHERE post_id=? OR gate_post=?", (post_id, post_id))
        if row is None:
            return None
        run = await self._load(row)
        return run, (0 if run.post_id == post_id else run.cursor + 1)

    async def in_states(self, *states: RunState) -> list[ProcedureRun]:
        marks = ",".join("?" for _ in states)
        rows = await self.store.fetchall(
            f"SELECT * FROM procedure_runs WHERE state IN ({marks}) ORDER BY id", [s.value for s in states])
        return [await self._load(r) for r in rows]

    async def open_for(self, procedure: str, params: dict[str, Any]) -> ProcedureRun | None:
        marks = ",".join("?" for _ in OPEN)
        row = await self.store.fetchone(
            f"SELECT * FROM procedure_runs WHERE procedure=? AND params=? AND state IN ({marks}) "
            "ORDER BY id DESC LIMIT 1", (procedure, _dump(params), *OPEN))
        return await self._load(row) if row else None

    async def votes(self, rid: int, round_: int) -> list[str]:
        rows = await self.store.fetchall(
            "SELECT username FROM procedure_votes WHERE run_id=? AND round=? ORDER BY at, username",
            (rid, round_))
        return [r["username"] for r in rows]

    async def _load(self, row: Any) -> ProcedureRun:
        steps = await self.store.fetchall(
            "SELECT * FROM procedure_steps WHERE run_id=? ORDER BY idx", (row["id"],))
        state = RunState(row["state"])
        cursor = int(row["cursor"])
        return ProcedureRun(
            id=row["id"], procedure=row["procedure"], params=json.loads(row["params"]),
            risk=Risk(row["risk"]), requester=row["requester"], source=row["source"],
            channel_id=row["channel_id"], root_id=row["root_id"], post_id=row["post_id"],
            gate_post=row["gate_post"], state=state, rule=Rule.model_validate_json(row["rule"]),
            dry_runs=json.loads(row["dry_runs"]), cursor=cursor, memo=json.loads(row["memo"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
            decided_at=_dt(row["decided_at"]), finished_at=_dt(row["finished_at"]),
            rejected_by=row["rejected_by"], summary=row["summary"],
            steps=[StepRecord(idx=s["idx"], state=StepState(s["state"]), attempts=s["attempts"],
                              started_at=_dt(s["started_at"]), finished_at=_dt(s["finished_at"]),
                              summary=s["summary"], details=s["details"]) for s in steps],
            approvers=await self.votes(row["id"], 0),
            gate_approvers=await self.votes(row["id"], cursor + 1) if state is RunState.waiting else [])

    # -- writes -----------------------------------------------------------------------------
    async def create(self, *, procedure: str, params: dict[str, Any], risk: Risk, requester: str,
                     source: str, channel_id: str, root_id: str, rule: Rule, dry_runs: list[str],
                     now: datetime, expires_at: datetime) -> int:
        async with self.store.transaction() as db:
            cur = await db.execute(
                "INSERT INTO procedure_runs (procedure, params, risk, requester, source, channel_id,"
                " root_id, state, rule, dry_runs, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (procedure, _dump(params), risk.value, requester, source, channel_id, root_id,
                 RunState.proposed.value, rule.model_dump_json(), json.dumps(dry_runs),
                 now.isoformat(), expires_at.isoformat()))
            rid = int(cur.lastrowid or 0)
            for idx in range(len(dry_runs)):
                await db.execute("INSERT INTO procedure_steps (run_id, idx, state) VALUES (?,?,?)",
                                 (rid, idx, StepState.pending.value))
            await self._audit(db, now, rid, procedure, "proposed", requester,
                              {"params": params, "risk": risk.value, "source": source,
                               "approvers": rule.described, "quorum": rule.quorum,
                               "steps": len(dry_runs), "expires_at": expires_at.isoformat()})
        return rid

    async def set_post(self, rid: int, post_id: str, *, gate: bool = False) -> None:
        column = "gate_post" if gate else "post_id"
        await self.store.execute(f"UPDATE procedure_runs SET {column}=? WHERE id=?", (post_id, rid))

    async def transition(self, rid: int, old: RunState, new: RunState, *, now: datetime, actor: str,
                         detail: dict[str, Any] | None = None, summary: str | None = None,
                         rejected_by: str | None = None) -> bool:
        """Compare-and-set the run's state ``old`` → ``new``; False when it moved meanwhile."""
        if new not in RUN_TRANSITIONS.get(old, frozenset()):
            raise IllegalTransition(f"{old.value} → {new.value}")
        async with self.store.transaction() as db:
            return await self._move(db, rid, old, new, now=now, actor=actor, detail=detail,
                                    summary=summary, rejected_by=rejected_by)

    async def _move(self, db: Any, rid: int, old: RunState, new: RunState, *, now: datetime, actor: str,
                    detail: dict[str, Any] | None = None, summary: str | None = None,
                    rejected_by: str | None = None, extra: str = "", extra_args: tuple[Any, ...] = ()) -> bool:
        sets, args = ["state=?"], [new.value]
        if old is RunState.proposed:
            sets.append("decided_at=?")
            args.append(now.isoformat())
        if new.final:
            sets.append("finished_at=?")
            args.append(now.isoformat())
        if summary is not None:
            sets.append("summary=?")
            args.append(summary)
        if rejected_by is not None:
            sets.append("rejected_by=?")
            args.append(rejected_by)
        cur = await db.execute(
            f"UPDATE procedure_runs SET {', '.join(sets)} WHERE id=? AND state=?{extra}",
            (*args, rid, old.value, *extra_args))
        if cur.rowcount != 1:
            return False
        name = (await (await db.execute("SELECT procedure FROM procedure_runs WHERE id=?",
                                        (rid,))).fetchone())["procedure"]
        await self._audit(db, now, rid, name, new.value, actor, dict(detail or {}))
        return True

    async def vote(self, rid: int, round_: int, username: str, now: datetime) -> tuple[bool, int, bool]:
        """An approval for the plan (round 0) or the gated step ``round - 1``; moves the run to
        running when the quorum is reached, atomically. (new vote, votes so far, this call
        reached the quorum)."""
        async with self.store.transaction() as db:
            row = await (await db.execute("SELECT state, cursor, rule, procedure FROM procedure_runs "
                                          "WHERE id=?", (rid,))).fetchone()
            want = RunState.proposed if round_ == 0 else RunState.waiting
            if row is None or row["state"] != want.value or (round_ and row["cursor"] != round_ - 1):
                return False, 0, False
            cur = await db.execute("INSERT OR IGNORE INTO procedure_votes VALUES (?,?,?,?)",
                                   (rid, round_, username, now.isoformat()))
            new = cur.rowcount == 1
            count = (await (await db.execute(
                "SELECT COUNT(*) AS n FROM procedure_votes WHERE run_id=? AND round=?",
                (rid, round_))).fetchone())["n"]
            if new:
                await self._audit(db, now, rid, row["procedure"], "approval", username,
                                  {"votes": count, **({"step": round_} if round_ else {})})
            quorum = Rule.model_validate_json(row["rule"]).quorum
            reached = False
            if count >= quorum:
                voters = [r["username"] for r in await (await db.execute(
                    "SELECT username FROM procedure_votes WHERE run_id=? AND round=? ORDER BY at, username",
                    (rid, round_))).fetchall()]
                reached = await self._move(db, rid, want, RunState.running, now=now, actor=username,
                                           detail={"approvers": voters, "quorum": quorum,
                                                   **({"step": round_} if round_ else {})})
        return new, count, reached

    async def unvote(self, rid: int, round_: int, username: str, now: datetime) -> bool:
        async with self.store.transaction() as db:
            row = await (await db.execute("SELECT state, cursor, procedure FROM procedure_runs WHERE id=?",
                                          (rid,))).fetchone()
            want = RunState.proposed if round_ == 0 else RunState.waiting
            if row is None or row["state"] != want.value or (round_ and row["cursor"] != round_ - 1):
                return False
            cur = await db.execute("DELETE FROM procedure_votes WHERE run_id=? AND round=? AND username=?",
                                   (rid, round_, username))
            if cur.rowcount:
                await self._audit(db, now, rid, row["procedure"], "approval-withdrawn", username, {})
            return cur.rowcount == 1

    async def step_start(self, rid: int, idx: int, old: StepState, now: datetime, note: str = "") -> bool:
        """The step at the cursor of a running run: ``old`` (pending, or running after a
        restart) → running. False when another task or process got there first."""
        async with self.store.transaction() as db:
            if not await self._at_cursor(db, rid, idx):
                return False
            cur = await db.execute(
                "UPDATE procedure_steps SET state=?, attempts=attempts+1, started_at=?, summary=? "
                "WHERE run_id=? AND idx=? AND state=?",
                (StepState.running.value, now.isoformat(), note, rid, idx, old.value))
            if cur.rowcount != 1:
                return False
            name = await self._name(db, rid)
            await self._audit(db, now, rid, name, "step-started", "sop-bot",
                              {"step": idx + 1, **({"why": note} if note else {})})
            return True

    async def step_end(self, rid: int, idx: int, old: StepState, *, ok: bool, summary: str,
                       details: str, memo: dict[str, Any], now: datetime, skipped: bool = False) -> bool:
        """``old`` → done (cursor moves on, memo stored) or failed (the run stops), in one
        transaction. ``skipped``: the precondition found the step done already."""
        async with self.store.transaction() as db:
            if not await self._at_cursor(db, rid, idx):
                return False
            new = StepState.done if ok else StepState.failed
            cur = await db.execute(
                "UPDATE procedure_steps SET state=?, finished_at=?, summary=?, details=? "
                "WHERE run_id=? AND idx=? AND state=?",
                (new.value, now.isoformat(), summary, details, rid, idx, old.value))
            if cur.rowcount != 1:
                return False
            name = await self._name(db, rid)
            event = "step-skipped" if skipped else ("step-done" if ok else "step-failed")
            await self._audit(db, now, rid, name, event, "sop-bot", {"step": idx + 1, "result": summary})
            if ok:
                await db.execute("UPDATE procedure_runs SET cursor=?, memo=? WHERE id=?",
                                 (idx + 1, _dump(memo), rid))
                return True
            return await self._move(db, rid, RunState.running, RunState.stopped, now=now, actor="sop-bot",
                                    detail={"step": idx + 1, "why": summary}, summary=summary)

    async def resume(self, rid: int, now: datetime, actor: str) -> bool:
        """stopped → running, the failed step at the cursor back to pending."""
        async with self.store.transaction() as db:
            row = await (await db.execute("SELECT cursor FROM procedure_runs WHERE id=? AND state=?",
                                          (rid, RunState.stopped.value))).fetchone()
            if row is None:
                return False
            await db.execute("UPDATE procedure_steps SET state=? WHERE run_id=? AND idx=? AND state=?",
                             (StepState.pending.value, rid, row["cursor"], StepState.failed.value))
            return await self._move(db, rid, RunState.stopped, RunState.running, now=now, actor=actor,
                                    detail={"step": row["cursor"] + 1}, summary="")

    async def notice_once(self, rid: int, username: str, kind: str) -> bool:
        async with self.store.transaction() as db:
            cur = await db.execute("INSERT OR IGNORE INTO procedure_notices VALUES (?,?,?)",
                                   (rid, username, kind))
            return cur.rowcount == 1

    async def record(self, now: datetime, rid: int | None, procedure: str, event: str, actor: str,
                     detail: dict[str, Any]) -> None:
        async with self.store.transaction() as db:
            await self._audit(db, now, rid, procedure, event, actor, detail)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    async def _at_cursor(db: Any, rid: int, idx: int) -> bool:
        row = await (await db.execute("SELECT 1 FROM procedure_runs WHERE id=? AND state=? AND cursor=?",
                                      (rid, RunState.running.value, idx))).fetchone()
        return row is not None

    @staticmethod
    async def _name(db: Any, rid: int) -> str:
        return (await (await db.execute("SELECT procedure FROM procedure_runs WHERE id=?",
                                        (rid,))).fetchone())["procedure"]

    @staticmethod
    async def _audit(db: Any, now: datetime, rid: int | None, procedure: str, event: str, actor: str,
                     detail: dict[str, Any]) -> None:
        # The remediation audit log (``/sop audit``): procedures appear by name and number.
        await ProposalRepo._audit(db, now, None, event, actor, f"{procedure} (procedure #{rid})",
                                  {"procedure": rid, **detail})
