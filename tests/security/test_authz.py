"""Who may run what where (``authorization`` config), end to end through the sandbox's Mattermost."""

from __future__ import annotations

import pytest

from bot.runtime import Runtime
from tests.test_slash_e2e import bot_posts, run_as

pytestmark = pytest.mark.asyncio


async def _bot(sandbox, **overrides) -> Runtime:
    runtime = Runtime(sandbox.settings(**overrides))
    await runtime.start()
    return runtime


async def test_by_default_everyone_runs_sops_in_the_bot_channel_and_only_approvers_read_the_audit(sandbox):
    runtime = await _bot(sandbox)  # remediation.approvers: [alice]
    try:
        users = [u for u in sandbox.mattermost.tokens if u not in ("alice", "sop-bot")]
        other = users[0]
        audit = await run_as(sandbox, other, "/sop audit")
        assert audit.status_code == 200
        assert audit.json()["text"] == ":no_entry: The remediation audit log is for @alice; ask one of them."
        assert audit.json().get("response_type", "ephemeral") == "ephemeral"
        assert "audit" in (await run_as(sandbox, "alice", "/sop audit")).json()["text"]
        ran = await run_as(sandbox, other, "/sop vault-status")
        assert "Running `vault-status`" in ran.json()["text"]
        await runtime.bot.drain()
    finally:
        await runtime.stop()
    assert [p for p in bot_posts(sandbox) if ":no_entry:" in p.message] == []  # refusals are not posted


async def test_a_rule_limits_a_command_to_a_group_and_the_refusal_says_who_may(sandbox):
    users = [u for u in sandbox.mattermost.tokens if u not in ("alice", "sop-bot")]
    rules = [{"commands": ["health"], "groups": ["oncall"]},
             {"commands": ["vault-status", "etcd-health"], "channels": ["somewhere-else"]}]
    runtime = await _bot(sandbox, authorization={"rules": rules},
                         remediation={"enabled": True, "approvers": ["alice"], "groups": {"oncall": ["alice"]}})
    try:
        refused = (await run_as(sandbox, users[0], "/sop health")).json()["text"]
        assert refused == ":no_entry: `/sop health` here is for group `oncall` in ~sop-alerts."
        elsewhere = (await run_as(sandbox, "alice", "/sop vault-status")).json()["text"]
        assert elsewhere == ":no_entry: `/sop vault-status` here is for everyone in ~somewhere-else."
        uncovered = (await run_as(sandbox, "alice", "/sop node-health")).json()["text"]
        assert uncovered == ":no_entry: `/sop node-health` here is for nobody (no authorization rule covers it)."
        assert "Running" in (await run_as(sandbox, "alice", "/sop health")).json()["text"]
        await runtime.bot.drain()
    finally:
        await runtime.stop()
    assert [p for p in bot_posts(sandbox) if ":no_entry:" in p.message] == []
