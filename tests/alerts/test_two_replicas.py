"""Two ``sopbot run`` processes on one real PostgreSQL, the real Alertmanager notifying both (one
route, a webhook receiver per replica: every notification reaches both, the worst an HA pair or
a retry through the Service can do), the sandbox as Mattermost/Kubernetes/Vault. One thread per
alert group and one diagnosis per (SOP, target), and after a ``kill -9`` of one replica in the
middle of the stream the other finishes every group: nothing lost, no second root."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.runner import Sandbox
from tests.alerts.real_alertmanager import RealAlertmanager
from tests.replicas import Pair
from tests.waiting import wait_until

pytestmark = pytest.mark.asyncio
GROUPS = 8


async def test_two_replicas_one_thread_per_group_through_a_kill_9(tmp_path: Path, postgres_server):
    from tests.postgres import new_database

    url = await new_database(postgres_server)
    async with Sandbox(workdir=tmp_path / "sandbox") as sb:
        pair = Pair.configure(sb, url, tmp_path / "replicas")
        a, b = pair.replicas
        am = RealAlertmanager(tmp_path / "am", f"{a.url}/alertmanager", sb.alertmanager_token)
        # One route, both replicas: every notification is sent to each.
        hook = am.config["receivers"][0]["webhook_configs"][0]
        am.config["receivers"][0]["webhook_configs"].append(dict(hook, url=f"{b.url}/alertmanager"))
        try:
            await pair.start()
            async with am:
                for i in range(GROUPS // 2):
                    await am.fire("NodeDiskPressure", group=f"g{i}", node="rke2-general-1")
                await wait_until("the first threads", lambda: len(pair.roots_by_group()) >= 1, timeout_s=60)
                a.kill9()  # mid-stream: some groups done, some accepted and in flight
                for i in range(GROUPS // 2, GROUPS):
                    await am.fire("NodeDiskPressure", group=f"g{i}", node="rke2-general-1")

                await wait_until("a thread per group", lambda: len(pair.roots_by_group()) == GROUPS,
                                 timeout_s=90)
                roots = [p for p in pair.bot_posts() if not p.root_id]
                await wait_until("every thread's node-health diagnosis",
                                 lambda: all(pair.diagnoses(r.id, "node-health") for r in roots), timeout_s=90)
                # Alertmanager repeats every group (repeat_interval 5 s) to the survivor: still one each.
                await wait_until("the inbox drained by the survivor",
                                 lambda: _drained(pair), timeout_s=60)
                assert pair.roots_by_group() == {k: 1 for k in pair.roots_by_group()}, pair.logs()
                assert len(pair.roots_by_group()) == GROUPS
                assert pair.duplicate_keys() == {}, pair.logs()
                assert pair.duplicate_replies() == {}
                for r in roots:
                    assert len(pair.diagnoses(r.id, "node-health")) == 1, [p.message for p in sb.mattermost.thread(r.id)]
                assert "Traceback" not in b.log.read_text(errors="replace"), pair.logs()
        finally:
            await pair.stop()


async def _drained(pair: Pair) -> bool:
    states = await pair.inbox()
    assert states.get("failed", 0) == 0, states
    return states.get("pending", 0) == 0 and states.get("done", 0) > 0
