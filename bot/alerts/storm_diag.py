"""During a storm, one diagnosis per (SOP, target) per storm: the first group that needs it runs
it and posts it in the storm thread; every other group with the same (SOP, target) reuses the
result and is added to the list of groups the post covers (one debounced edit, not a post each).
Unmapped alert names likewise get one "no SOP matches" reply per storm."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from bot.alerts.debounce import Debounced
from bot.alerts.render import _cell
from bot.ports import Chat

log = logging.getLogger(__name__)

MAX_LISTED = 20  # groups named in a covering post; the rest are counted
KEEP_STORMS = 4  # storms whose diagnoses are remembered (older storms are over)


@dataclass
class Shared:
    """One storm-wide diagnosis. ``done`` is set once the first group posted (or failed)."""

    done: asyncio.Event = field(default_factory=asyncio.Event)
    post_id: str | None = None
    message: str = ""
    digest: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # labels of the groups it covers, in order

    @property
    def ok(self) -> bool:
        return self.post_id is not None


def covering_message(message: str, groups: list[str]) -> str:
    if len(groups) <= 1:
        return message
    listed = ", ".join(f"`{_cell(g) or '(no labels)'}`" for g in groups[:MAX_LISTED])
    more = f" and {len(groups) - MAX_LISTED} more" if len(groups) > MAX_LISTED else ""
    return f"{message}\n\n_Covers {len(groups)} alert groups of this storm:_ {listed}{more}"


class StormDiagnoses:
    def __init__(self, chat: Chat, debounce_s: float = 1.0):
        self.chat = chat
        self.debounce_s = debounce_s
        self._shared: dict[int, dict[tuple[str, str], Shared]] = {}
        self._edits: Debounced[tuple[int, tuple[str, str]]] = Debounced(
            debounce_s, self._edit, "storm diagnosis edit")
        self.reused = 0  # diagnoses not run again because the storm has them (metrics, tests)

    def claim(self, storm_id: int, key: tuple[str, str]) -> tuple[Shared, bool]:
        """The storm's diagnosis for ``key``, and whether the caller is the first (runs it)."""
        per_storm = self._shared.get(storm_id)
        if per_storm is None:
            for old in sorted(self._shared)[:-KEEP_STORMS + 1 or None]:
                del self._shared[old]
            per_storm = self._shared[storm_id] = {}
        shared = per_storm.get(key)
        if shared is not None and (not shared.done.is_set() or shared.ok):
            return shared, False
        shared = per_storm[key] = Shared()  # new, or the earlier attempt failed: try again
        return shared, True

    def covered(self, storm_id: int, key: tuple[str, str], shared: Shared, group: str) -> None:
        """Another group with the same diagnosis: list it on the post."""
        if group in shared.groups:
            return
        shared.groups.append(group)
        self.reused += 1
        self._edits.mark((storm_id, key))

    async def _edit(self, item: tuple[int, tuple[str, str]]) -> None:
        storm_id, key = item
        shared = self._shared.get(storm_id, {}).get(key)
        if shared is not None and shared.post_id is not None:
            await self.chat.edit(shared.post_id, covering_message(shared.message, shared.groups))

    async def join(self) -> None:
        await self._edits.join()

    async def stop(self) -> None:
        await self._edits.stop()
