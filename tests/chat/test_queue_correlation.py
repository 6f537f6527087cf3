"""Chat-queue log lines carry the correlation id of the command whose write failed (issue 12),
not the id of whichever command happened to start the queue's worker."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from bot.chat.errors import ChatError
from bot.chat.queue import WriteQueue
from bot.logs import correlate, correlation_id

pytestmark = pytest.mark.asyncio


class Ids(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str]] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.seen.append((correlation_id.get(), record.getMessage()))
        return True


async def test_a_failing_write_is_logged_under_its_own_command_id():
    async def no_sleep(_: float) -> None:
        await asyncio.sleep(0)

    queue = WriteQueue(1000.0, sleep=no_sleep, max_attempts=2)
    ids = Ids()
    logger = logging.getLogger("bot.chat.queue")
    logger.addFilter(ids)
    level = logger.level
    logger.setLevel(logging.INFO)

    async def ok() -> str:
        return "ok"

    async def down() -> str:
        raise httpx.ConnectError("refused")

    try:
        with correlate("cmd-first"):
            assert await queue.submit_call(ok, what="first post") == "ok"  # starts the worker
        with correlate("cmd-second"):
            with pytest.raises(ChatError):
                await queue.submit_call(down, what="second post")
    finally:
        logger.removeFilter(ids)
        logger.setLevel(level)
        await queue.close()
    retries = [cid for cid, message in ids.seen if message.startswith("second post")]
    assert retries and set(retries) == {"cmd-second"}, ids.seen
