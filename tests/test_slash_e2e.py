"""Slash commands end to end: the sandbox's Mattermost sends ``/sop …`` to the running bot the way
Mattermost does; the bot answers, runs the SOP against the sandbox platform and posts a thread."""

from __future__ import annotations

import httpx
import pytest

from bot.models import Finding, Severity, Status
from bot.registry import REGISTRY, sop

pytestmark = pytest.mark.asyncio


async def run_as(sandbox, username: str, command: str) -> httpx.Response:
    """What a person typing ``command`` in ~sop-alerts does: POST /api/v4/commands/execute."""
    async with httpx.AsyncClient(base_url=sandbox.mattermost_url, timeout=30) as http:
        return await http.post(
            "/api/v4/commands/execute",
            headers={"Authorization": f"Bearer {sandbox.mattermost.tokens[username]}"},
            json={"channel_id": sandbox.channel_id, "command": command},
        )


def bot_posts(sandbox) -> list:
    bot_id = sandbox.mattermost.user("sop-bot").id
    return [p for p in sandbox.mattermost.posts_in(sandbox.channel_id) if p.user_id == bot_id]


async def wait_thread(sandbox, bot) -> tuple:
    """The bot's thread once its background work is done: the root and the report reply (a
    remediation proposal may follow the report in the same thread)."""
    await bot.bot.drain()
    roots = [p for p in bot_posts(sandbox) if not p.root_id]
    assert len(roots) == 1, [p.message for p in roots]
    thread = sandbox.mattermost.thread(roots[0].id)
    assert len(thread) >= 2
    assert thread[1].message.startswith("####"), thread[1].message  # the report comes first
    return thread[0], thread[1]


async def test_vault_status_thread_names_the_sealed_replicas(sandbox, bot):
    await sandbox.apply("vault-partially-sealed")
    resp = await run_as(sandbox, "alice", "/sop vault-status")
    assert resp.status_code == 200
    assert "Running `vault-status`" in resp.json()["text"]
    root, report = await wait_thread(sandbox, bot)
    assert "@alice ran `/sop vault-status`" in root.message
    assert "CRIT" in root.message and root.edit_at > 0  # edited in place with the outcome
    assert report.root_id == root.id
    sealed = [r.name for r in sandbox.platform.vault.replicas if r.sealed]
    assert sealed  # the scenario seals some, not all
    for name in sealed:
        assert f"| :red_circle: | {name} | sealed, unseal progress 0/3" in report.message
    unsealed = [r.name for r in sandbox.platform.vault.replicas if not r.sealed]
    for name in unsealed:
        assert f"| :white_check_mark: | {name} | unsealed" in report.message
    assert "5.2 step 3" in report.message  # what the runbook says to do next


async def test_healthy_vault_reports_ok_with_a_leader(sandbox, bot):
    await run_as(sandbox, "alice", "/sop vault-status")
    root, report = await wait_thread(sandbox, bot)
    assert "**OK**" in root.message
    assert "leader vault-" in report.message
    assert ":red_circle:" not in report.message


async def test_unreachable_replica_is_unknown_and_the_others_still_report(sandbox, bot):
    await sandbox.apply("vault-replica-down")
    await run_as(sandbox, "alice", "/sop vault-status")
    _, report = await wait_thread(sandbox, bot)
    down = [r.name for r in sandbox.platform.vault.replicas if not r.reachable]
    assert len(down) == 1
    assert f"| :grey_question: | {down[0]} | unreachable" in report.message
    assert report.message.count("| :white_check_mark: | vault-") == 2


async def test_wrong_token_gets_401_and_nothing_is_posted(sandbox, bot):
    async with httpx.AsyncClient(timeout=10) as http:
        for token in ["wrong", ""]:
            resp = await http.post(f"{bot.url}/mattermost/command", data={
                "token": token, "team_id": sandbox.team_id, "channel_id": sandbox.channel_id,
                "user_id": "u1", "user_name": "mallory", "command": "/sop", "text": "vault-status"})
            assert resp.status_code == 401
        resp = await http.post(f"{bot.url}/mattermost/command", data={"text": "vault-status"})
        assert resp.status_code == 401
    await bot.bot.drain()
    assert bot_posts(sandbox) == []


async def test_unknown_id_answers_with_the_closest_matches(sandbox, bot):
    resp = await run_as(sandbox, "alice", "/sop vault-stat")
    text = resp.json()["text"]
    assert "No SOP `vault-stat`" in text and "`vault-status`" in text
    assert sandbox.mattermost.ephemerals_for("alice")[-1].message == text  # only alice sees it
    assert bot_posts(sandbox) == []


async def test_bad_and_hostile_arguments_answer_with_what_is_allowed(sandbox, bot):
    for args, problem in [
        ("replica=../../sys/seal", "replica: must be a Kubernetes name"),
        ("replica=vault-0;rm", "replica: must be a Kubernetes name"),
        ("colour=red", "colour: is not a parameter of this SOP"),
        ("replica", "`replica` is not a `key=value` argument"),
    ]:
        text = (await run_as(sandbox, "alice", f"/sop vault-status {args}")).json()["text"]
        assert problem in text
        if "Bad arguments" in text:
            assert "Usage: `/sop vault-status [replica=<" in text
    await bot.bot.drain()
    assert bot_posts(sandbox) == []


async def test_help_list_and_search(sandbox, bot):
    text = (await run_as(sandbox, "alice", "/sop list")).json()["text"]
    assert "| `vault-status` | 5.1 | P1 |" in text
    text = (await run_as(sandbox, "alice", "/sop help vault-status")).json()["text"]
    assert "Usage: `/sop vault-status" in text and "**Symptom**" in text
    text = (await run_as(sandbox, "alice", "/sop help 5.1")).json()["text"]
    assert "Vault Sealed After Restart" in text and "`/sop vault-status`" in text
    text = (await run_as(sandbox, "alice", "/sop search certificate expired")).json()["text"]
    assert text.splitlines()[1].startswith("- runbook 4.1 Certificate Not Issued")


@pytest.fixture
def huge_sop():
    """An SOP whose report is far over Mattermost's 16383-rune post limit."""

    @sop("huge-report", title="Huge report", section="11.1", severity=Severity.P4)
    async def huge(ctx, params) -> list[Finding]:
        return [Finding(status=Status.warn, target=f"pod-{i}", summary="ü" * 190, details="")
                for i in range(100)]

    yield
    del REGISTRY.sops["huge-report"]


async def test_a_report_over_the_post_limit_arrives_as_summary_plus_file(sandbox, bot, huge_sop):
    await run_as(sandbox, "alice", "/sop huge-report")
    root, reply = await wait_thread(sandbox, bot)
    assert len(reply.message) <= 16383
    assert reply.file_ids, "the full report must be attached"
    info, content = sandbox.mattermost.files[reply.file_ids[0]]
    full = content.decode()
    assert len(full) > 16383 and full.count("pod-") == 100
    assert "pod-99" in full


async def test_rate_limited_mattermost_still_gets_every_post_in_order(sandbox, bot):
    from sandbox.mattermost.state import RateLimit

    # Stricter than the bot's own 10/s, so the server answers 429 and the bot must wait.
    sandbox.mattermost.rate_limit = RateLimit(per_sec=8, burst=2)
    for args in ["", "replica=vault-0", "replica=vault-1", "replica=vault-2"]:  # distinct: not joined
        resp = await run_as(sandbox, "alice", f"/sop vault-status {args}")
        assert resp.status_code == 200
    await bot.bot.drain()
    roots = [p for p in bot_posts(sandbox) if not p.root_id]
    assert len(roots) == 4
    for root in roots:
        thread = sandbox.mattermost.thread(root.id)
        assert len(thread) == 2 and thread[1].root_id == root.id  # the report is in its own thread
        assert "**OK**" in root.message  # and the root was edited after it
    assert bot.chat.queue.rate_limited > 0
    # Every accepted bot write fits the server's bucket: never a burst over the limit.
    times = sandbox.mattermost.post_times("sop-bot")
    for i, start in enumerate(times):
        in_window = [t for t in times[i:] if t - start <= 1.0]
        assert len(in_window) <= 2 + 8 * 1.0


async def test_no_raft_leader_is_critical_with_its_cause_pointing_at_53(sandbox, bot):
    # The runbook rates 5.3 P1: no leader means Vault answers nothing.
    await sandbox.apply("vault-no-leader")
    await run_as(sandbox, "alice", "/sop vault-status")
    root, report = await wait_thread(sandbox, bot)
    assert "**CRIT**" in root.message
    assert "| :red_circle: | raft | no Raft leader: every unsealed replica is standby" in report.message
    assert "Raft peers cannot reach each other on port 8201" in report.message
    assert "- 5.3: wait 30 s" in report.message
    assert "raft peers" not in report.message  # only the active node can answer that
