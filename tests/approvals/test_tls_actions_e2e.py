"""Chapter 4's actions end to end through Mattermost: proposed by their SOP, previewed with a
server-side dry run, run after approval, checked with kubectl."""

from __future__ import annotations

import json

import pytest

from tests.approvals.conftest import kubectl, wait_for
from tests.approvals.support import bot_posts, wait_state

pytestmark = pytest.mark.asyncio


async def approve(sb, p, user: str = "alice") -> None:
    sb.mattermost.react(user, p.id, "white_check_mark")


async def test_tls_handshake_proposes_the_tlsstore_and_the_approval_applies_it(sandbox, bots) -> None:
    await bots.start()
    await sandbox.apply("tls-tlsstore-missing")
    assert await kubectl(sandbox, "-n", "kube-system", "get", "tlsstores.traefik.io", "-o", "name") == ""
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop tls-handshake")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`apply-tlsstore`" in p.message and "(from `tls-handshake`)" in p.message
    assert "CREATE traefik.io/v1alpha1 tlsstores kube-system/default" in p.message and "(dry run)" in p.message
    assert "secretName: wildcard-example-com-tls" in p.message
    assert await kubectl(sandbox, "-n", "kube-system", "get", "tlsstores.traefik.io", "-o", "name") == ""
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    store = json.loads(await kubectl(sandbox, "-n", "kube-system", "get", "tlsstores.traefik.io", "default",
                                     "-o", "json"))
    assert store["spec"] == {"defaultCertificate": {"secretName": "wildcard-example-com-tls"}}
