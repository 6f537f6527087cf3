"""Alert groups and their diagnoses in the Store: survives restarts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any, NamedTuple

import aiosqlite

from bot.alerts.models import AlertGroup, GroupState
from bot.models import Severity
from bot.store import Store
from bot.redact import redact

MIGRATION = ("alerts-groups-1", [
    """CREATE TABLE alert_groups (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_key TEXT NOT NULL,
        state TEXT NOT NULL,
        root_id TEXT,
        last_entry INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL
    )""",
    "CREATE INDEX alert_groups_key ON alert_groups(group_key, id)",
    "CREATE INDEX alert_groups_root ON alert_groups(root_id)",
    "CREATE INDEX alert_groups_state ON alert_groups(state)",
    """CREATE TABLE alert_diagnoses (
        group_id INTEGER NOT NULL,
        sop_id TEXT NOT NULL,
        target TEXT NOT NULL,
        digest TEXT NOT NULL,
        findings TEXT NOT NULL,
        ran_at REAL NOT NULL,
        PRIMARY KEY (group_id, sop_id, target)
    )""",
    """CREATE TABLE alert_storms (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id TEXT NOT NULL,
        root_id TEXT,
        started_at REAL NOT NULL,
        last_at REAL NOT NULL,
        message TEXT NOT NULL DEFAULT ''
    )""",
])


# One row per new alert group, kept for the storm window (bot/alerts/storm.py): the count of
# new groups every replica sees.
STORM_MIGRATION = ("alerts-storm-arrivals-1", [
    "CREATE TABLE alert_storm_arrivals (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL)",
    "CREATE INDEX alert_storm_arrivals_at ON alert_storm_arrivals(at)",
])


# Posts the bot meant to make, recorded before posting: a crash between the post and the save
# of its id leaves an intent without a post id, and the replay looks the post up by its key.
POSTS_MIGRATION = ("alerts-posts-1", [
    """CREATE TABLE alert_posts (
        key TEXT PRIMARY KEY,
        post_id TEXT,
        created_at REAL NOT NULL
    )""",
])


# Which thread's cause explains which (bot/alerts/related.py): its own table, so the two groups'
# saves (each under its own group's lock) never overwrite each other's links.
RELATIONS_MIGRATION = ("alerts-relations-1", [
    """CREATE TABLE alert_relations (
        cause_id INTEGER NOT NULL,
        effect_id INTEGER NOT NULL,
        PRIMARY KEY (cause_id, effect_id)
    )""",
    "CREATE INDEX alert_relations_effect ON alert_relations(effect_id)",
])


class Intent(NamedTuple):
    post_id: str | None
    created_at: float  # epoch seconds


class PriorDiagnosis(NamedTuple):
    digest: str
    findings: list[dict[str, Any]]
    ran_at: float  # epoch seconds


class OpenSummary(NamedTuple):
    id: int
    group_key: str
    severity: Severity
    opened_at: datetime
    acked_by: str | None
    escalated: bool


class GroupRepo:
    def __init__(self, store: Store):
        self.store = store

    async def migrate(self) -> None:
        await self.store.migrate(*MIGRATION)
        await self.store.migrate(*POSTS_MIGRATION)
        await self.store.migrate(*RELATIONS_MIGRATION)
        await self.store.migrate(*STORM_MIGRATION)

    async def current(self, group_key: str) -> AlertGroup | None:
        """The newest thread of a group key (older ones were followed by a new thread)."""
        row = await self.store.fetchone(
            "SELECT id, data FROM alert_groups WHERE group_key=? ORDER BY id DESC LIMIT 1", (group_key,))
        return _load(row) if row else None

    async def by_root(self, root_id: str) -> AlertGroup | None:
        row = await self.store.fetchone(
            "SELECT id, data FROM alert_groups WHERE root_id=? ORDER BY id DESC LIMIT 1", (root_id,))
        return _load(row) if row else None

    async def by_root_all(self, root_id: str) -> list[AlertGroup]:
        """Every group whose thread is ``root_id`` (several for a storm thread)."""
        rows = await self.store.fetchall(
            "SELECT id, data FROM alert_groups WHERE root_id=? ORDER BY id", (root_id,))
        return [_load(r) for r in rows]

    async def get(self, group_id: int) -> AlertGroup | None:
        row = await self.store.fetchone("SELECT id, data FROM alert_groups WHERE id=?", (group_id,))
        return _load(row) if row else None

    async def open_groups(self) -> list[AlertGroup]:
        rows = await self.store.fetchall(
            "SELECT id, data FROM alert_groups WHERE state=? ORDER BY id", (GroupState.open.value,))
        groups = []
        for i, r in enumerate(rows):
            if i and i % 25 == 0:
                await asyncio.sleep(0)  # hundreds of groups: let webhooks in between
            groups.append(_load(r))
        return groups

    async def open_summaries(self) -> list[OpenSummary]:
        """What escalation needs of every open group, without parsing whole groups."""
        rows = await self.store.fetchall(
            "SELECT id, group_key, json_extract(data, '$.severity') AS severity, "
            "json_extract(data, '$.opened_at') AS opened_at, "
            "json_extract(data, '$.acked_by') AS acked_by, "
            "json_extract(data, '$.escalated_at') AS escalated_at "
            "FROM alert_groups WHERE state=? ORDER BY id", (GroupState.open.value,))
        return [OpenSummary(r["id"], r["group_key"], Severity(r["severity"]),
                            datetime.fromisoformat(r["opened_at"]), r["acked_by"],
                            r["escalated_at"] is not None) for r in rows]

    async def in_storm(self, storm_id: int) -> list[AlertGroup]:
        rows = await self.store.fetchall(
            "SELECT id, data FROM alert_groups WHERE json_extract(data, '$.storm_id')=? ORDER BY id",
            (storm_id,))
        return [_load(r) for r in rows]

    async def last_entry(self, group_id: int) -> int:
        row = await self.store.fetchone("SELECT last_entry FROM alert_groups WHERE id=?", (group_id,))
        return int(row["last_entry"]) if row else 0

    async def save(self, group: AlertGroup, entry_id: int | None = None) -> AlertGroup:
        # Annotations may quote a PEM or a token: the store keeps them masked (bot.redact).
        data = json.dumps(redact.deep(group.model_dump(mode="json", exclude={"id"})))
        if group.id == 0:
            group.id = await self.store.execute(
                "INSERT INTO alert_groups(group_key, state, root_id, last_entry, data) VALUES (?,?,?,?,?)",
                (group.group_key, group.state.value, group.root_id, entry_id or 0, data))
        elif entry_id is None:
            await self.store.execute("UPDATE alert_groups SET state=?, root_id=?, data=? WHERE id=?",
                                     (group.state.value, group.root_id, data, group.id))
        else:
            await self.store.execute(
                "UPDATE alert_groups SET state=?, root_id=?, data=?, last_entry=MAX(last_entry, ?) WHERE id=?",
                (group.state.value, group.root_id, data, entry_id, group.id))
        return group

    # -- related threads ---------------------------------------------------------------------
    async def relate(self, cause_id: int, effect_id: int) -> None:
        await self.store.execute(
            "INSERT INTO alert_relations(cause_id, effect_id) VALUES (?,?) ON CONFLICT DO NOTHING",
            (cause_id, effect_id))

    async def causes_of(self, group_id: int) -> list[AlertGroup]:
        rows = await self.store.fetchall(
            "SELECT g.id, g.data FROM alert_relations r JOIN alert_groups g ON g.id = r.cause_id "
            "WHERE r.effect_id=? ORDER BY g.id", (group_id,))
        return [_load(r) for r in rows]

    async def effects_of(self, group_id: int) -> list[AlertGroup]:
        rows = await self.store.fetchall(
            "SELECT g.id, g.data FROM alert_relations r JOIN alert_groups g ON g.id = r.effect_id "
            "WHERE r.cause_id=? ORDER BY g.id", (group_id,))
        return [_load(r) for r in rows]

    # -- post intents ------------------------------------------------------------------------
    async def intent(self, key: str) -> Intent | None:
        row = await self.store.fetchone("SELECT post_id, created_at FROM alert_posts WHERE key=?", (key,))
        return Intent(row["post_id"], row["created_at"]) if row else None

    async def intend(self, key: str, at: datetime) -> bool:
        """Record the intent; False when it was there already (another replica's, just now)."""
        async with self.store.transaction() as db:
            cur = await db.execute("INSERT OR IGNORE INTO alert_posts(key, created_at) VALUES (?, ?)",
                                   (key, at.timestamp()))
            return cur.rowcount == 1

    async def posted(self, key: str, post_id: str) -> None:
        await self.store.execute("UPDATE alert_posts SET post_id=? WHERE key=?", (post_id, key))

    async def prune_intents(self, before: datetime) -> None:
        # An intent matters only until its replay: days later the group row has the ids.
        await self.store.execute("DELETE FROM alert_posts WHERE created_at < ?", (before.timestamp(),))

    # -- diagnoses ---------------------------------------------------------------------------
    async def diagnosis(self, group_id: int, sop_id: str, target: str) -> PriorDiagnosis | None:
        row = await self.store.fetchone(
            "SELECT digest, findings, ran_at FROM alert_diagnoses WHERE group_id=? AND sop_id=? AND target=?",
            (group_id, sop_id, target))
        return PriorDiagnosis(row["digest"], json.loads(row["findings"]), row["ran_at"]) if row else None

    async def save_diagnosis(self, group_id: int, sop_id: str, target: str, digest: str,
                             findings: list[dict[str, Any]], ran_at: datetime) -> None:
        await self.store.execute(
            "INSERT INTO alert_diagnoses(group_id, sop_id, target, digest, findings, ran_at) "
            "VALUES (?,?,?,?,?,?) ON CONFLICT(group_id, sop_id, target) DO UPDATE SET "
            "digest=excluded.digest, findings=excluded.findings, ran_at=excluded.ran_at",
            (group_id, sop_id, target, digest, json.dumps(findings), ran_at.timestamp()))


def _load(row: aiosqlite.Row) -> AlertGroup:
    group = AlertGroup.model_validate_json(row["data"])
    group.id = row["id"]
    return group

