"""The README's sandbox walk-through ends with what a person came for: the thread, read from the
channel's posts with the README's own command, and an alert delivered with its example webhook
payload opens a thread whose header and row give the alert's one start time (startsAt)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.approvals.conftest import wait_for
from tests.test_slash_e2e import bot_posts, run_as

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def webhook_example() -> dict:
    body = re.search(r"\$BOT_URL/alertmanager -d @- <<'EOF'\n(.*?)\nEOF\n", README, re.S)
    assert body, "the README's webhook example"
    return json.loads(body.group(1))


def read_thread_command() -> tuple[str, str]:
    """The README's URL (path and query) for the channel's posts and its python3 one-liner."""
    m = re.search(r'"\$MATTERMOST_URL(/api/v4/channels/\$MM_CHANNEL_ID/posts\?[^"]*)" \|\n\s+python3 -c \'(.*?)\'\n',
                  README)
    assert m, "the README's command reading the thread"
    return m.group(1), m.group(2)


async def test_the_readme_reads_the_thread_after_the_slash_command(sandbox, bot):
    await sandbox.apply("vault-sealed")
    assert (await run_as(sandbox, "alice", "/sop vault-status")).status_code == 200
    await bot.bot.drain()
    path, script = read_thread_command()
    async with httpx.AsyncClient(base_url=sandbox.mattermost_url) as http:
        resp = await http.get(path.replace("$MM_CHANNEL_ID", sandbox.channel_id),
                              headers={"Authorization": f"Bearer {sandbox.mattermost.tokens['alice']}"})
    assert resp.status_code == 200
    shown = subprocess.run([sys.executable, "-c", script], input=resp.text, capture_output=True,
                           text=True, timeout=30, check=True).stdout
    assert "ran `/sop vault-status`" in shown
    assert "`vault-status` — Vault seal and Raft leader status: **CRIT**" in shown  # the report
    assert shown.index("ran `/sop vault-status`") < shown.index("leader status: **CRIT**")


async def test_the_readme_webhook_example_opens_a_thread_with_one_start_time(sandbox, bot):
    payload = webhook_example()
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{sandbox.bot_url}/alertmanager", json=payload,
                               headers={"Authorization": f"Bearer {sandbox.alertmanager_token}"})
    assert resp.status_code == 200, resp.text
    await wait_for(lambda: bot_posts(sandbox), timeout=30, what="the alert thread")
    [root] = [p for p in bot_posts(sandbox) if not p.root_id]
    assert "VaultSealed" in root.message
    await bot.bot.drain()
    text = "\n".join(p.message for p in sandbox.mattermost.thread(root.id))
    # startsAt 2026-01-05T06:00:00Z, in the header and in the alert's row, and no other time.
    assert "since 2026-01-05 06:00 UTC" in root.message, root.message
    assert "| 2026-01-05 06:00 UTC |" in root.message
    assert set(re.findall(r"\b\d\d:\d\d(?::\d\d)?\b", root.message)) == {"06:00"}, root.message
    assert "2026-01-05 06:00 UTC" in text
