"""Immediate ``/sop`` answers a newcomer hits: search maps the daily health check to ``/sop
health``; an unknown word gets no far-fetched suggestion; an argument naming a replica that does
not exist is refused at once, with no thread."""

from __future__ import annotations

from tests.test_slash_e2e import bot_posts, run_as


async def test_search_maps_the_daily_health_check_to_sop_health(sandbox, bot):
    text = (await run_as(sandbox, "alice", "/sop search daily health check")).json()["text"]
    [daily] = [line for line in text.splitlines() if "Daily Health Checks" in line]
    assert daily.split(" — run ", 1)[1].startswith("`/sop health`"), daily
    text = (await run_as(sandbox, "alice", "/sop help 11.1")).json()["text"]
    assert "Automated by: `/sop health`" in text


async def test_an_unknown_word_points_to_help_not_to_an_unrelated_sop(sandbox, bot):
    text = (await run_as(sandbox, "alice", "/sop tribute")).json()["text"]
    assert "traefik" not in text
    assert "`/sop help` lists the commands" in text
    text = (await run_as(sandbox, "alice", "/sop vault-stauts")).json()["text"]
    assert "Did you mean `vault-status`" in text  # a typo still gets its suggestion


async def test_a_replica_that_does_not_exist_is_an_argument_error_without_a_thread(sandbox, bot):
    text = (await run_as(sandbox, "alice", "/sop vault-status replica=vault-9")).json()["text"]
    assert "Bad arguments for `vault-status`" in text
    assert "replica: no replica vault-9; the replicas are vault-0, vault-1, vault-2" in text
    await bot.bot.drain()
    assert bot_posts(sandbox) == []
    text = (await run_as(sandbox, "alice", "/sop vault-status replica=vault-1")).json()["text"]
    assert text.startswith("Running `vault-status`")


async def test_sop_fix_shows_the_risk_rule_where_risk_depends_on_the_arguments(sandbox, bot):
    text = (await run_as(sandbox, "alice", "/sop fix")).json()["text"]
    [unseal] = [line for line in text.splitlines() if line.startswith("- `vault-unseal ")]
    assert unseal.endswith("risk low with source=holders, high with source=secret (the bot reads every share)")
    [restart] = [line for line in text.splitlines() if line.startswith("- `restart ")]
    assert restart.endswith("risk low")
