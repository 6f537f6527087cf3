"""One thread per alert group, diagnoses as replies, repeats add nothing, resolution, reopen.
Chat is the engine's own port recorded in memory; the SOPs are real registry entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.alerts.models import WebhookPayload
from bot.alerts.repo import GroupRepo
from bot.alerts.router import Router
from bot.alerts.threads import ThreadManager
from bot.config import AlertRouteConfig
from bot.models import Finding, Status
from bot.runbook import Runbook
from bot.store import Store
from tests.alerts.support import Clock, FakeHandlers, RecordingChat, alert, payload

RUNBOOK = Runbook.load(Path(__file__).parents[2] / "sandbox" / "runbook.md", url="https://runbook.example")


@pytest.fixture
async def store():
    s = await Store.open(":memory:")
    yield s
    await s.close()


@pytest.fixture
def handlers() -> FakeHandlers:
    return FakeHandlers()


@pytest.fixture
async def setup(store, handlers):
    chat = RecordingChat()
    clock = Clock()
    repo = GroupRepo(store)
    await repo.migrate()

    def make(routes: list[AlertRouteConfig] | None = None, **kw) -> ThreadManager:
        router = Router(handlers.registry, routes or [], channel="sop-alerts", runbook=RUNBOOK)
        return ThreadManager(repo=repo, chat=chat, router=router, run=handlers.run,
                             channel_id=chat.channel_id, runbook=RUNBOOK, clock=clock,
                             permalink=lambda pid: f"http://mm/pl/{pid}", **kw)
    return chat, clock, make


def P(data) -> WebhookPayload:
    return WebhookPayload.model_validate(data)


async def test_first_notification_opens_one_thread_with_a_summary_and_a_diagnosis(setup):
    chat, clock, make = setup
    tm = make()
    await tm.process(P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")])), 1)
    assert len(chat.roots) == 1
    root = chat.roots[0]
    assert root.channel_id == "ch-sop-alerts"
    assert "FIRING" in root.text and "`NodeDiskPressure`" in root.text
    assert "P3" in root.text and "respond within 4 hours" in root.text
    assert "1 of 1 alert firing" in root.text
    assert "node=worker-1" in root.text
    assert "[runbook 2.2](https://runbook.example#22-node-notready)" in root.text
    assert "http://am.example:9093/#/silences/new?filter=%7Bgroup%3D%22disk%22%7D" in root.text
    assert "[source](http://prometheus.example/graph?g0.expr=up)" in root.text
    replies = chat.replies(root.id)
    assert len(replies) == 1
    assert "`node-disk`" in replies[0].text and "disk 91% full" in replies[0].text
    assert "`node=worker-1`" in replies[0].text


async def test_repeat_notifications_add_nothing_while_the_diagnosis_is_unchanged(setup, handlers):
    chat, clock, make = setup
    tm = make()
    body = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(body, 1)
    await tm.process(body, 2)  # HA duplicate, seconds later
    clock.advance(3600)
    await tm.process(body, 3)  # repeat_interval: diagnosis re-run, same findings
    assert len(chat.messages) == 2
    assert chat.roots[0].edits == []
    assert len(handlers.runs) == 2  # the HA duplicate reused the fresh diagnosis


async def test_a_changed_diagnosis_posts_only_what_changed(setup, handlers):
    chat, clock, make = setup
    tm = make()
    handlers.findings["node-disk"] = [Finding(status=Status.crit, target="worker-1", summary="disk 91% full"),
                                      Finding(status=Status.ok, target="kubelet", summary="kubelet running")]
    body = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(body, 1)
    handlers.findings["node-disk"] = [Finding(status=Status.crit, target="worker-1", summary="disk 97% full"),
                                      Finding(status=Status.ok, target="kubelet", summary="kubelet running")]
    clock.advance(600)
    await tm.process(body, 2)
    root = chat.roots[0]
    replies = chat.replies(root.id)
    assert len(replies) == 2
    change = replies[1].text
    assert "diagnosis changed" in change
    assert "disk 97% full" in change
    assert "kubelet running" not in change
    assert "No longer reported: worker-1: disk 91% full" in change


async def test_alerts_joining_and_resolving_edit_the_root_in_place(setup):
    chat, clock, make = setup
    tm = make()
    a1 = alert("NodeDiskPressure", node="worker-1", fp="a1")
    a2 = alert("NodeDiskPressure", node="worker-2", fp="a2")
    await tm.process(P(payload("disk", [a1])), 1)
    await tm.process(P(payload("disk", [a1, a2])), 2)
    root = chat.roots[0]
    assert len(chat.roots) == 1
    assert "2 of 2 alerts firing" in root.text and "node=worker-2" in root.text
    assert len(chat.replies(root.id)) == 2  # one diagnosis per target
    clock.advance(125)
    await tm.process(P(payload("disk", [alert("NodeDiskPressure", "resolved", node="worker-1", fp="a1"), a2])), 3)
    assert "1 of 2 alerts firing" in root.text
    clock.advance(600)
    resolved = payload("disk", [alert("NodeDiskPressure", "resolved", node="worker-1", fp="a1"),
                                alert("NodeDiskPressure", "resolved", node="worker-2", fp="a2")])
    await tm.process(P(resolved), 4)
    assert "RESOLVED" in root.text and "resolved after 12m" in root.text
    replies = chat.replies(root.id)
    assert replies[-1].text.startswith(":white_check_mark: **Resolved** after 12m")
    await tm.process(P(resolved), 5)  # the resolution repeated
    assert chat.replies(root.id) == replies
    assert len(chat.roots) == 1


async def test_firing_again_within_the_window_reopens_the_thread(setup):
    chat, clock, make = setup
    tm = make(reopen_window_s=600)
    fire = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(fire, 1)
    await tm.process(P(payload("disk", [alert("NodeDiskPressure", "resolved", node="worker-1", fp="a1")])), 2)
    clock.advance(300)
    await tm.process(fire, 3)
    assert len(chat.roots) == 1
    root = chat.roots[0]
    assert "FIRING" in root.text
    assert any("Firing again" in r.text and "5m" in r.text for r in chat.replies(root.id))


async def test_firing_again_after_the_window_starts_a_new_thread_linking_the_old(setup):
    chat, clock, make = setup
    tm = make(reopen_window_s=600)
    fire = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(fire, 1)
    await tm.process(P(payload("disk", [alert("NodeDiskPressure", "resolved", node="worker-1", fp="a1")])), 2)
    clock.advance(601)
    await tm.process(fire, 3)
    old, new = chat.roots
    assert "RESOLVED" in old.text
    assert "FIRING" in new.text and f"follows [an earlier thread](http://mm/pl/{old.id})" in new.text
    assert any("`node-disk`" in r.text for r in chat.replies(new.id))


async def test_an_unmapped_alert_gets_a_thread_pointing_at_the_closest_runbook_sections(setup):
    chat, clock, make = setup
    tm = make()
    await tm.process(P(payload("dns", [alert("CoreDNSFailures", pod="coredns-1", fp="d1")])), 1)
    root = chat.roots[0]
    assert "No SOP matches" in root.text
    reply = chat.replies(root.id)[0].text
    assert "No SOP matches `CoreDNSFailures`" in reply
    assert "[runbook 3.6](https://runbook.example#36-dns-resolution-failures)" in reply


async def test_a_label_that_fails_validation_is_reported_and_not_used(setup, handlers):
    chat, clock, make = setup
    tm = make()
    await tm.process(P(payload("nodes", [alert("NodeNotReady", node="Worker_1!", fp="n1")])), 1)
    await tm.process(P(payload("disk", [alert("NodeDiskCritical", node="Bad Node", fp="n2")])), 2)
    assert handlers.runs == [("node-status", {})]  # ran without the bad node label
    status_reply = chat.replies(chat.roots[0].id)[0].text
    assert "Alert labels not used" in status_reply and "label node: must be a Kubernetes name" in status_reply
    disk_reply = chat.replies(chat.roots[1].id)[0].text
    assert "NOT RUN" in disk_reply and "cannot run: node: Field required" in disk_reply
    clock.advance(3600)  # repeat_interval: the same labels, nothing new to say
    await tm.process(P(payload("disk", [alert("NodeDiskCritical", node="Bad Node", fp="n2")])), 3)
    assert len(chat.replies(chat.roots[1].id)) == 1


async def test_routes_pick_sop_channel_and_mentions_first_match_wins(setup, handlers):
    chat, clock, make = setup
    routes = [AlertRouteConfig(matchers=['alertname="NodeDiskPressure"', 'node=~"cp-.*"'],
                               sop="node-status", channel="sop-ops", mention=["alice"], severity="P1"),
              AlertRouteConfig(matchers=['alertname="NodeDiskPressure"'], mention=["bob"])]
    tm = make(routes)
    await tm.process(P(payload("cp", [alert("NodeDiskPressure", node="cp-1", fp="c1")])), 1)
    await tm.process(P(payload("w", [alert("NodeDiskPressure", node="worker-1", fp="w1")])), 2)
    cp, worker = chat.roots
    assert cp.channel_id == "ch-sop-ops" and "cc @alice" in cp.text and "**P1**" in cp.text
    assert worker.channel_id == "ch-sop-alerts" and "cc @bob" in worker.text and "**P3**" in worker.text
    assert handlers.runs == [("node-status", {"node": "cp-1"}), ("node-disk", {"node": "worker-1"})]


async def test_a_resolved_notification_for_an_unknown_group_posts_nothing(setup):
    chat, clock, make = setup
    tm = make()
    await tm.process(P(payload("x", [alert("NodeDiskPressure", "resolved", node="w", fp="x")])), 1)
    assert chat.messages == {}


async def test_a_stale_notification_after_a_newer_one_is_ignored(setup):
    chat, clock, make = setup
    tm = make()
    fire = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(fire, 1)
    await tm.process(P(payload("disk", [alert("NodeDiskPressure", "resolved", node="worker-1", fp="a1")])), 3)
    await tm.process(fire, 2)  # a retried older entry: the group stays resolved
    assert "RESOLVED" in chat.roots[0].text


async def test_the_root_post_jumps_the_write_queue_and_replies_do_not(setup):
    chat, clock, make = setup
    await make().process(P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")])), 1)
    [root] = chat.roots
    assert root.urgent
    assert [m.urgent for m in chat.replies(root.id)] == [False]


async def test_a_diagnosis_report_goes_to_the_report_hooks_once(setup, handlers):
    chat, clock, make = setup
    seen: list[tuple[str, str, str, str]] = []

    async def hook(report, channel_id: str, root_id: str, requester: str) -> None:
        seen.append((report.sop_id, channel_id, root_id, requester))

    tm = make(on_report=lambda: [hook])
    body = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    await tm.process(body, 1)
    [root] = chat.roots
    assert seen == [("node-disk", "ch-sop-alerts", root.id, "alertmanager")]
    clock.advance(120)  # past rediagnose_after_s: the SOP runs again, same findings
    await tm.process(body, 2)
    assert len(handlers.runs) == 2 and len(seen) == 1


async def test_a_post_whose_id_was_not_saved_is_found_not_posted_again(setup, store):
    chat, clock, make = setup
    tm = make()
    repo = tm.repo
    saved = repo.posted
    failed: list[str] = []

    async def fail_once(key: str, post_id: str) -> None:
        if not failed:
            failed.append(key)
            raise OSError("disk I/O error")  # the post exists; the store never learns its id
        await saved(key, post_id)

    repo.posted = fail_once  # type: ignore[method-assign]
    body = P(payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")]))
    with pytest.raises(OSError):
        await tm.process(body, 1)
    assert failed and failed[0].startswith("alert-root:") and len(chat.roots) == 1
    restarted = make()  # a new process: nothing in memory, the same store
    await restarted.process(body, 1)
    [root] = chat.roots
    assert root.props is not None and root.props["sopbot_key"] == failed[0]
    assert len(chat.replies(root.id)) == 1
