"""Shared fixtures: the sandbox platform and a bot running against it, both in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sandbox.runner import Sandbox


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator["Sandbox"]:
    """A healthy platform; tests break it with ``await sandbox.apply("vault-sealed")``."""
    from sandbox.runner import Sandbox

    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        yield sb


@pytest.fixture
async def bot(sandbox):
    """The bot (``bot.runtime.Runtime``) running against ``sandbox`` with its generated config."""
    from bot.runtime import Runtime

    runtime = Runtime(sandbox.settings())
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
