"""Proposals, votes, one-time notices and the audit log in the Store (SQLite)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bot.approvals.actions import Outcome, Plan, Risk
from bot.redact import redact
from bot.approvals.models import IllegalTransition, Proposal, Rule, State, allowed
from bot.store import Store

log = logging.getLogger("sopbot.audit")

MIGRATION = ("approvals-1", [
    """CREATE TABLE approval_proposals (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        action TEXT NOT NULL, params TEXT NOT NULL, risk TEXT NOT NULL,
        requester TEXT NOT NULL, source TEXT NOT NULL,
        channel_id TEXT NOT NULL, root_id TEXT NOT NULL, post_id TEXT UNIQUE,
        state TEXT NOT NULL, rule TEXT NOT NULL, plan TEXT NOT NULL,
        created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
        decided_at TEXT, finished_at TEXT, rejected_by TEXT, outcome TEXT,
        awaiting_secret INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX approval_proposals_state ON approval_proposals(state)",
    """CREATE TABLE approval_votes (
        proposal_id INTEGER NOT NULL, username TEXT NOT NULL, at TEXT NOT NULL,
        PRIMARY KEY (proposal_id, username))""",
    """CREATE TABLE approval_notices (
        proposal_id INTEGER NOT NULL, username TEXT NOT NULL, kind TEXT NOT NULL,
        PRIMARY KEY (proposal_id, username, kind))""",
    """CREATE TABLE approval_audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, proposal_id INTEGER,
        event TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL)""",
])

OPEN = (State.proposed.value, State.approved.value, State.running.value)


class AuditEntry(dict):  # type: ignore[type-arg]
    """One audit row as a dict: id, at, proposal_id, event, actor, action, detail (dict)."""


class ProposalRepo:
    def __init__(self, store: Store):
        self.store = store
        # Called with (action, new state value) after each committed move (metrics).
        self.on_change: Callable[[str, str], None] = lambda action, state: None

    async def migrate(self) -> None:
        await self.store.migrate(*MIGRATION)

    # -- reads ------------------------------------------------------------------------------
    async def get(self, pid: int) -> Proposal | None:
        row = await self.store.fetchone("SELECT * FROM approval_proposals WHERE id=?", (pid,))
        return await self._load(row) if row else None

    async def by_post(self, post_id: str) -> Proposal | None:
        row = await self.store.fetchone("SELECT * FROM approval_proposals WHERE post_id=?", (post_id,))
        return await self._load(row) if row else None

    async def in_states(self, *states: State) -> list[Proposal]:
        marks = ",".join("?" for _ in states)
        rows = await self.store.fetchall(
            f"SELECT * FROM approval_proposals WHERE state IN ({marks}) ORDER BY id",
            [s.value for s in states])
        return [await self._load(r) for r in rows]

    async def open_for(self, action: str, params: dict[str, Any]) -> Proposal | None:
        """An unfinished proposal of the same action and params (no duplicate proposals)."""
        row = await self.store.fetchone(
            "SELECT * FROM approval_proposals WHERE action=? AND params=? AND state IN (?,?,?) "
            "ORDER BY id DESC LIMIT 1", (action, _dump(params), *OPEN))
        return await self._load(row) if row else None

    async def votes(self, pid: int) -> list[str]:
        rows = await self.store.fetchall(
            "SELECT username FROM approval_votes WHERE proposal_id=? ORDER BY at, username", (pid,))
        return [r["username"] for r in rows]

    async def audit(self, limit: int) -> list[AuditEntry]:
        rows = await self.store.fetchall(
            "SELECT * FROM approval_audit ORDER BY id DESC LIMIT ?", (limit,))
        return [AuditEntry(id=r["id"], at=r["at"], proposal_id=r["proposal_id"], event=r["event"],
                           actor=r["actor"], action=r["action"], detail=json.loads(r["detail"]))
                for r in rows]

    async def _load(self, row: Any) -> Proposal:
        return Proposal(
            id=row["id"], action=row["action"], params=json.loads(row["params"]),
            risk=Risk(row["risk"]), requester=row["requester"], source=row["source"],
            channel_id=row["channel_id"], root_id=row["root_id"], post_id=row["post_id"],
            state=State(row["state"]), rule=Rule.model_validate_json(row["rule"]),
            plan=Plan.model_validate_json(row["plan"]),
            created_at=datetime.fromisoformat(row["created_at"]),
            expires_at=datetime.fromisoformat(row["expires_at"]),
            decided_at=_dt(row["decided_at"]), finished_at=_dt(row["finished_at"]),
            rejected_by=row["rejected_by"],
            outcome=Outcome.model_validate_json(row["outcome"]) if row["outcome"] else None,
            awaiting_secret=bool(row["awaiting_secret"]),
            approvers=await self.votes(row["id"]))

    # -- writes -----------------------------------------------------------------------------
    async def create(self, *, action: str, params: dict[str, Any], risk: Risk, requester: str,
                     source: str, channel_id: str, root_id: str, rule: Rule, plan: Plan,
                     now: datetime, expires_at: datetime) -> int:
        async with self.store.transaction() as db:
            cur = await db.execute(
                "INSERT INTO approval_proposals (action, params, risk, requester, source, channel_id,"
                " root_id, state, rule, plan, created_at, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (action, _dump(params), risk.value, requester, source, channel_id, root_id,
                 State.proposed.value, rule.model_dump_json(), plan.model_dump_json(),
                 now.isoformat(), expires_at.isoformat()))
            pid = int(cur.lastrowid or 0)
            await self._audit(db, now, pid, "proposed", requester, action,
                              {"params": params, "risk": risk.value, "source": source,
                               "operations": plan.operations, "preview": plan.preview,
                               "dry_run": plan.dry_run, "approvers": rule.described,
                               "quorum": rule.quorum, "expires_at": expires_at.isoformat()})
        return pid

    async def set_post(self, pid: int, post_id: str) -> None:
        await self.store.execute("UPDATE approval_proposals SET post_id=? WHERE id=?", (post_id, pid))

    async def transition(self, pid: int, old: State, new: State, *, now: datetime, actor: str,
                         detail: dict[str, Any] | None = None, outcome: Outcome | None = None,
                         rejected_by: str | None = None, awaiting_secret: bool | None = None) -> bool:
        """Compare-and-set ``old`` → ``new``; False when the proposal is no longer in ``old``."""
        if not allowed(old, new):
            raise IllegalTransition(f"{old.value} → {new.value}")
        sets = ["state=?"]
        args: list[Any] = [new.value]
        if new in (State.approved, State.rejected, State.expired, State.withdrawn):
            sets.append("decided_at=?")
            args.append(now.isoformat())
        if new.final:
            sets.append("finished_at=?")
            args.append(now.isoformat())
        if outcome is not None:
            sets.append("outcome=?")
            args.append(outcome.model_dump_json())
        if rejected_by is not None:
            sets.append("rejected_by=?")
            args.append(rejected_by)
        if awaiting_secret is not None:
            sets.append("awaiting_secret=?")
            args.append(int(awaiting_secret))
        async with self.store.transaction() as db:
            cur = await db.execute(
                f"UPDATE approval_proposals SET {', '.join(sets)} WHERE id=? AND state=?",
                (*args, pid, old.value))
            if cur.rowcount != 1:
                return False
            row = await (await db.execute("SELECT action FROM approval_proposals WHERE id=?",
                                          (pid,))).fetchone()
            info = dict(detail or {})
            if outcome is not None:
                info.setdefault("result", outcome.model_dump())
            await self._audit(db, now, pid, new.value, actor, row["action"], info)
        self.on_change(row["action"], new.value)
        return True

    async def vote(self, pid: int, username: str, now: datetime) -> tuple[bool, int, bool]:
        """Record an approval and approve when the quorum is reached, atomically.
        Returns (a new vote, votes so far, this call approved the proposal)."""
        async with self.store.transaction() as db:
            row = await (await db.execute(
                "SELECT state, rule, action FROM approval_proposals WHERE id=?", (pid,))).fetchone()
            if row is None or row["state"] != State.proposed.value:
                return False, 0, False
            cur = await db.execute("INSERT OR IGNORE INTO approval_votes VALUES (?,?,?)",
                                   (pid, username, now.isoformat()))
            new = cur.rowcount == 1
            count = (await (await db.execute(
                "SELECT COUNT(*) AS n FROM approval_votes WHERE proposal_id=?", (pid,))).fetchone())["n"]
            if new:
                await self._audit(db, now, pid, "approval", username, row["action"],
                                  {"votes": count})
            quorum = Rule.model_validate_json(row["rule"]).quorum
            approved = False
            if count >= quorum:
                cur = await db.execute(
                    "UPDATE approval_proposals SET state=?, decided_at=? WHERE id=? AND state=?",
                    (State.approved.value, now.isoformat(), pid, State.proposed.value))
                approved = cur.rowcount == 1
                if approved:
                    voters = [r["username"] for r in await (await db.execute(
                        "SELECT username FROM approval_votes WHERE proposal_id=? ORDER BY at, username",
                        (pid,))).fetchall()]
                    await self._audit(db, now, pid, State.approved.value, username, row["action"],
                                      {"approvers": voters, "quorum": quorum})
        if approved:
            self.on_change(row["action"], State.approved.value)
        return new, count, approved

    async def unvote(self, pid: int, username: str, now: datetime) -> bool:
        """Withdraw an approval while the proposal still waits for its quorum."""
        async with self.store.transaction() as db:
            row = await (await db.execute(
                "SELECT state, action FROM approval_proposals WHERE id=?", (pid,))).fetchone()
            if row is None or row["state"] != State.proposed.value:
                return False
            cur = await db.execute(
                "DELETE FROM approval_votes WHERE proposal_id=? AND username=?", (pid, username))
            if cur.rowcount:
                await self._audit(db, now, pid, "approval-withdrawn", username, row["action"], {})
            return cur.rowcount == 1

    async def notice_once(self, pid: int, username: str, kind: str) -> bool:
        """True the first time (pid, username, kind) is seen: answer an event only once."""
        async with self.store.transaction() as db:
            cur = await db.execute("INSERT OR IGNORE INTO approval_notices VALUES (?,?,?)",
                                   (pid, username, kind))
            return cur.rowcount == 1

    async def record(self, now: datetime, pid: int | None, event: str, actor: str, action: str,
                     detail: dict[str, Any]) -> None:
        async with self.store.transaction() as db:
            await self._audit(db, now, pid, event, actor, action, detail)

    @staticmethod
    async def _audit(db: Any, now: datetime, pid: int | None, event: str, actor: str, action: str,
                     detail: dict[str, Any]) -> None:
        # A refused request's detail quotes what was typed, a pasted key share included.
        detail = redact.deep(json.loads(json.dumps(detail, default=str)))
        await db.execute(
            "INSERT INTO approval_audit (at, proposal_id, event, actor, action, detail) VALUES (?,?,?,?,?,?)",
            (now.isoformat(), pid, event, actor, action, json.dumps(detail, default=str)))
        # The same step in the structured log (fields as ``extra`` for JSON formatters).
        log.info("audit proposal=%s event=%s actor=%s action=%s", pid, event, actor, action,
                 extra={"audit": {"proposal": pid, "event": event, "actor": actor,
                                  "action": action, "detail": detail}})


def _dump(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
