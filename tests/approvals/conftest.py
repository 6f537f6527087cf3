"""Fixtures for remediation tests: a bot with chosen remediation settings against the sandbox,
kubectl as the independent client, and bounded waits."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from sandbox.kube.kubectl import kubectl as run_kubectl

from sandbox.mattermost.models import User


class FakeClock:
    """The approvals clock, moved by hand (expiry without waiting)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def wait_for(pred: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``pred`` (sync or async) until truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = pred()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def kubectl(sb: Any, *args: str, check: bool = True) -> str:
    result = await run_kubectl(sb.kubeconfig, *args)
    return result.ok() if check else result.stdout


async def kubectl_json(sb: Any, *args: str) -> Any:
    return json.loads(await kubectl(sb, *args, "-o", "json"))


def add_user(sb: Any, username: str) -> str:
    """A third person in the sandbox Mattermost (team and channel member), e.g. a key holder."""
    state = sb.mattermost
    user = User(username=username, is_bot=False, email=f"{username}@platform.example")
    state.users[user.id] = user
    token = f"tok{user.id}"
    state.tokens[username] = token
    state._token_owner[token] = user.id
    for ch in state.channels.values():
        state.members.add((ch.id, user.id))
    return user.id


class Bots:
    """Starts and stops ``Runtime``s against one sandbox (restarts keep the store file)."""

    def __init__(self, sb: Any):
        self.sb = sb
        self.running: list[Any] = []

    async def start(self, clock: FakeClock | None = None, sections: dict[str, Any] | None = None,
                    **remediation: Any) -> Any:
        from bot.runtime import Runtime

        base = {"enabled": True, "approvers": ["alice"]}
        base.update(remediation)
        rt = Runtime(self.sb.settings(remediation=base, **(sections or {})))
        await rt.start()
        if clock is not None:
            rt.approvals.clock = clock
        self.running.append(rt)
        await wait_for(lambda: rt.events is not None and rt.events.connected, what="websocket")
        return rt

    async def stop(self, rt: Any) -> None:
        self.running.remove(rt)
        await rt.stop()


@pytest.fixture
async def bots(sandbox) -> AsyncIterator[Bots]:
    b = Bots(sandbox)
    yield b
    for rt in list(b.running):
        await b.stop(rt)


@pytest.fixture(autouse=True)
def _debug_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
