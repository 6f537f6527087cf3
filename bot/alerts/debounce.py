"""Debounced edits: keys marked within ``delay_s`` of each other are handled together, once each,
so a burst of changes to one post becomes one edit (storm threads, storm-wide diagnoses)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
log = logging.getLogger(__name__)


class Debounced(Generic[K]):
    def __init__(self, delay_s: float, handle: Callable[[K], Awaitable[None]], what: str):
        self.delay_s = delay_s
        self._handle = handle
        self._what = what  # named in the log when handling a key fails
        self._dirty: set[K] = set()
        self._task: asyncio.Task[None] | None = None

    def mark(self, key: K) -> None:
        self._dirty.add(key)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._dirty:
            await asyncio.sleep(self.delay_s)
            dirty, self._dirty = self._dirty, set()
            for key in sorted(dirty):  # type: ignore[type-var]  # keys are tuples
                try:
                    await self._handle(key)
                except Exception:
                    log.exception("%s failed", self._what)

    async def join(self) -> None:
        while self._task is not None and not self._task.done():
            await self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
