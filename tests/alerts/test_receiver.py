"""POST /alertmanager: credentials, size, schema, durable before 2xx, 5xx when the store fails,
and the pipeline finishing at the next start what a killed bot had accepted; on each store
backend (``open_store``: SQLite, then a real PostgreSQL server)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bot.alerts.service import AlertService
from bot.backoff import Backoff
from bot.config import AlertmanagerConfig
from bot.store import Store
from tests.postgres import urgent_ddl
from tests.alerts.support import Clock, FakeHandlers, RecordingChat, alert, payload

TOKEN = "s3cret-token"


def make_service(store: Store, chat: RecordingChat, handlers: FakeHandlers, **cfg) -> AlertService:
    config = AlertmanagerConfig(webhook_token=TOKEN, webhook_username="am", webhook_password="pw",
                                max_body_bytes=cfg.pop("max_body_bytes", 1 << 20), **cfg)
    return AlertService(config, store=store, chat=chat, registry=handlers.registry, run=handlers.run,
                        channel_id=chat.channel_id, default_channel="sop-alerts", clock=Clock())


async def client_for(service: AlertService) -> TestClient:
    app = web.Application()
    app.router.add_post("/alertmanager", service.handler())
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def running(tmp_path: Path, open_store):
    store = await open_store()
    chat, handlers = RecordingChat(), FakeHandlers()
    service = make_service(store, chat, handlers)
    await service.start(loops=False)
    client = await client_for(service)
    yield client, service, chat, store
    await client.close()
    await service.stop()
    await store.close()


BEARER = {"Authorization": f"Bearer {TOKEN}"}
BODY = payload("disk", [alert("NodeDiskPressure", node="worker-1", fp="a1")])


async def test_bearer_and_basic_credentials_are_accepted_anything_else_is_401(running):
    client, service, chat, _ = running
    basic = base64.b64encode(b"am:pw").decode()
    for headers in (BEARER, {"Authorization": f"Basic {basic}"}):
        resp = await client.post("/alertmanager", json=BODY, headers=headers)
        assert resp.status == 200, await resp.text()
    wrong_basic = base64.b64encode(b"am:nope").decode()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {wrong_basic}"},
                    {"Authorization": TOKEN}, {"Authorization": "Basic !!!"}):
        resp = await client.post("/alertmanager", json=BODY, headers=headers)
        assert resp.status == 401
    await service.idle()
    assert len(chat.roots) == 1  # two accepted notifications of one group: one thread


async def test_no_configured_credentials_refuse_everything(tmp_path, open_store):
    store = await open_store()
    service = AlertService(AlertmanagerConfig(), store=store, chat=RecordingChat(),
                           registry=FakeHandlers().registry, run=FakeHandlers().run,
                           channel_id=RecordingChat().channel_id, default_channel="x")
    await service.start(loops=False)
    client = await client_for(service)
    try:
        resp = await client.post("/alertmanager", json=BODY, headers={"Authorization": "Bearer "})
        assert resp.status == 401
    finally:
        await client.close()
        await service.stop()
        await store.close()


@pytest.mark.parametrize("body, field", [
    ({**BODY, "alerts": [{**BODY["alerts"][0], "fingerprint": None}]}, "alerts.0.fingerprint"),
    ({k: v for k, v in BODY.items() if k != "groupKey"}, "groupKey"),
    ({**BODY, "status": "exploded"}, "status"),
    ({**BODY, "version": "3"}, "version"),
])
async def test_a_payload_that_does_not_fit_is_400_naming_the_field(running, body, field):
    client, service, chat, store = running
    resp = await client.post("/alertmanager", json=body, headers=BEARER)
    assert resp.status == 400
    assert (await resp.json())["error"].startswith(field)
    assert await service.inbox.count("pending") + await service.inbox.count("done") == 0


async def test_malformed_json_is_400(running):
    client, *_ = running
    resp = await client.post("/alertmanager", data=b'{"version": "4",', headers=BEARER)
    assert resp.status == 400 and "not JSON" in (await resp.json())["error"]


async def test_an_oversize_body_is_413(tmp_path, open_store):
    store = await open_store()
    chat, handlers = RecordingChat(), FakeHandlers()
    service = make_service(store, chat, handlers, max_body_bytes=2000)
    await service.start(loops=False)
    client = await client_for(service)
    try:
        big = payload("disk", [alert("NodeDiskPressure", node=f"worker-{i}", fp=f"f{i}") for i in range(20)])
        resp = await client.post("/alertmanager", json=big, headers=BEARER)
        assert resp.status == 413
        # Without a Content-Length (chunked) the limit holds too.
        async def chunks():
            yield json.dumps(big).encode()
        resp = await client.post("/alertmanager", data=chunks(), headers=BEARER)
        assert resp.status == 413
    finally:
        await client.close()
        await service.stop()
        await store.close()


async def test_a_store_failure_is_503_so_alertmanager_retries(running):
    client, service, chat, store = running
    await urgent_ddl(store, "DROP TABLE alert_inbox")
    resp = await client.post("/alertmanager", json=BODY, headers=BEARER)
    assert resp.status == 503


async def test_accepted_means_committed_and_a_restart_finishes_the_work(tmp_path, open_store):
    store = await open_store()
    chat, handlers = RecordingChat(), FakeHandlers()
    service = make_service(store, chat, handlers)
    await service.inbox.migrate()
    await service.repo.migrate()
    # The worker never started: the bot "dies" right after answering 2xx.
    client = await client_for(service)
    resp = await client.post("/alertmanager", json=BODY, headers=BEARER)
    assert resp.status == 200
    await client.close()
    await store.close()
    assert chat.messages == {}

    store = await open_store()
    service = make_service(store, chat, handlers)
    await service.start(loops=False)
    try:
        await service.idle()
        assert len(chat.roots) == 1 and len(chat.replies(chat.roots[0].id)) == 1
        assert await service.inbox.count("pending") == 0
    finally:
        await service.stop()
        await store.close()


async def test_a_chat_failure_is_retried_without_losing_the_notification(running):
    client, service, chat, store = running
    service.inbox.backoff = Backoff(base_s=0.05, max_s=0.05)
    chat.fail_posts = 1
    resp = await client.post("/alertmanager", json=BODY, headers=BEARER)
    assert resp.status == 200
    await service.idle()  # waits for the retry: the entry stays pending until processed
    assert chat.fail_posts == 0
    assert len(chat.roots) == 1
    assert await service.inbox.count("done") == 1


async def test_processed_entries_are_pruned_after_a_week_pending_ones_never(tmp_path, open_store):
    store = await open_store()
    inbox = make_service(store, RecordingChat(), FakeHandlers()).inbox
    await inbox.migrate()
    ids = [await inbox.add("{}") for _ in range(3)]
    await inbox.done(ids[0])
    await inbox.done(ids[2])
    await store.execute_urgent("UPDATE alert_inbox SET received_at = received_at - 8 * 86400 "
                               "WHERE id IN (?, ?)", (ids[0], ids[1]))
    assert await inbox.prune() == 1
    assert [e.id for e in await inbox.pending()] == [ids[1]]
    assert await inbox.count("done") == 1
    await store.close()
