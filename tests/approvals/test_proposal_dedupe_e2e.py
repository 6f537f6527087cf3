"""Two SOPs of one triage calling for the same fix make one proposal and say nothing more in that
thread; the same fix asked for from another thread points at the open proposal."""

from __future__ import annotations

import asyncio

from tests.approvals.conftest import wait_for
from tests.approvals.support import bot_posts, proposals, replies


async def _thread_of(sandbox, text: str) -> str:
    before = {p.id for p in bot_posts(sandbox) if not p.root_id}
    await sandbox.mattermost.run_command("alice", "sop-alerts", text)
    root = await wait_for(lambda: next((p for p in bot_posts(sandbox) if not p.root_id and p.id not in before), None),
                          what=f"the thread of {text}")
    await wait_for(lambda: any(m.startswith("#### Next steps") or "**Next steps**" in m
                               for m in replies(sandbox, root.id)), timeout=30, what="the end of the thread")
    return root.id


async def _settled(sandbox, root: str) -> list[str]:
    """The thread once it has stopped growing (the report hooks propose after the report)."""
    seen, still = -1, 0
    while still < 10:
        now = len(replies(sandbox, root))
        seen, still = now, (still + 1 if now == seen else 0)
        await asyncio.sleep(0.1)
    return replies(sandbox, root)


async def test_one_proposal_per_fix_and_no_repeat_in_its_own_thread(sandbox, bots):
    await bots.start()
    await sandbox.apply("coredns-down")
    root = await _thread_of(sandbox, "/sop triage dns")
    restart = "restart kind=deployment namespace=kube-system name=rke2-coredns-rke2-coredns"
    await wait_for(lambda: any(restart in p.message for p in proposals(sandbox)), what="the proposal")
    ours = [p for p in proposals(sandbox) if restart in p.message]
    assert len(ours) == 1 and ours[0].root_id == root
    assert not [m for m in await _settled(sandbox, root) if "is already proposed" in m]
    # Asked for again from a thread of its own: told where the open proposal is.
    other = await _thread_of(sandbox, "/sop dns-health")
    note = await wait_for(lambda: next((m for m in replies(sandbox, other) if "is already proposed" in m), None),
                          what="the pointer to the open proposal")
    assert f"`{restart}` is already proposed: proposal #" in note
    assert len([p for p in proposals(sandbox) if restart in p.message]) == 1
