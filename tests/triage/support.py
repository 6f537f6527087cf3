"""What the triage tests share: run ``/sop triage …`` through the sandbox and read its thread,
the path and SOPs it shows, and the team's own runbook wording to walk instead of the sandbox's."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox.runner import RUNBOOK
from tests.test_slash_e2e import bot_posts, run_as


async def triage_thread(sandbox, bot, command: str = "/sop triage") -> list:
    resp = await run_as(sandbox, "alice", command)
    assert "Triage from" in resp.json()["text"], resp.json()["text"]
    await bot.bot.drain()
    [root] = [p for p in bot_posts(sandbox) if not p.root_id]
    return sandbox.mattermost.thread(root.id)


def path_of(thread: list) -> str:
    [path] = [p.message for p in thread if p.message.startswith("#### Triage path")]
    return path


def sops_run(thread: list) -> list[str]:
    """The SOP reports posted in the thread, by id (each report starts with its id)."""
    return [re.match(r"#### \S+ `([a-z0-9-]+)` — ", p.message).group(1) for p in thread
            if p.message.startswith("####") and not p.message.startswith(("#### Triage", "#### Next"))]


async def bot_with(sandbox, runbook: Path):
    from bot.runtime import Runtime

    runtime = Runtime(sandbox.settings(runbook={"path": str(runbook)}))
    await runtime.start()
    return runtime


async def triage_with_runbook(sandbox, runbook: Path, command: str = "/sop triage") -> list:
    """The triage thread of a bot of its own reading ``runbook``, stopped afterwards."""
    runtime = await bot_with(sandbox, runbook)
    try:
        return await triage_thread(sandbox, runtime, command)
    finally:
        await runtime.stop()


def edited_runbook(tmp_path: Path, old: str, new: str) -> Path:
    text = RUNBOOK.read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / "runbook.md"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def runbook_with_chart(tmp_path: Path, chart: str, chapter: str | None = None) -> Path:
    """The sandbox runbook with its first Mermaid chart (after the ``chapter`` heading if given) replaced."""
    text = RUNBOOK.read_text(encoding="utf-8")
    start = text.index("```mermaid", text.index(chapter) if chapter else 0)
    end = text.index("```", start + 3) + 4
    path = tmp_path / "runbook.md"
    path.write_text(text[:start] + chart + text[end:], encoding="utf-8")
    return path


def team_book(tmp_path: Path, chapter: str) -> Path:
    """A team runbook holding only ``chapter`` (its flowchart in the team's own words)."""
    book = tmp_path / "team.md"
    book.write_text("# Team runbook\n\n" + chapter, encoding="utf-8")
    return book


def assert_in_order(shown: str, steps: list[str]) -> None:
    """Each step appears in the shown path, none before the one ahead of it."""
    at = 0
    for step in steps:
        found = shown.find(step, at)
        assert found >= 0, f"{step!r} not after position {at} in:\n{shown}"
        at = found


def assert_reaches(thread: list, steps: list[str], leaf: str, sop_id: str) -> str:
    """The path shows ``steps`` in order and ends on ``leaf``, whose SOP ``sop_id`` ran; the path."""
    shown = path_of(thread)
    assert_in_order(shown, steps)
    assert f":checkered_flag: **{leaf}**" in shown, shown
    assert sop_id in sops_run(thread), sops_run(thread)
    return shown


def assert_shows(shown: str, steps: list[str], leaf: str) -> None:
    """Every step is on the shown path, which ends on ``leaf``."""
    for step in steps:
        assert step in shown, shown
    assert f":checkered_flag: **{leaf}**" in shown, shown
