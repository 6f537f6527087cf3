"""POST /alertmanager reads the whole body, however it arrives: split TCP writes, a slow chunked
sender, bodies right at ``max_body_bytes``; beyond it a 413, also without a Content-Length.
Raw sockets, so the test controls exactly how the bytes reach the bot."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bot.store import Store
from tests.alerts.support import FakeHandlers, RecordingChat, alert, payload
from tests.alerts.test_receiver import BODY, TOKEN, client_for, make_service


async def raw_post(port: int, parts: list[bytes], *, pause_s: float = 0.0,
                   length: int | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``parts`` in separate TCP writes ``pause_s`` apart; with ``length`` None the parts
    are sent as HTTP chunks (Transfer-Encoding: chunked)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    writer.write((f"POST /alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n").encode())
    try:
        for i, part in enumerate(parts):
            if i and pause_s:
                await asyncio.sleep(pause_s)
            writer.write(part if length is not None else b"%x\r\n%s\r\n" % (len(part), part))
            await writer.drain()
        if length is None:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except ConnectionResetError:  # refused early (413): the answer is still there to read
        pass
    answer = await reader.read()
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return status, json.loads(body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            return bytes(out)
        out += rest[:n]
        data = rest[n + 2:]


def padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON of exactly ``size`` bytes (trailing whitespace is valid JSON)."""
    data = json.dumps(body).encode()
    assert len(data) <= size
    return data + b" " * (size - len(data))


def split(data: bytes, n: int) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i:i + step] for i in range(0, len(data), step)]


@pytest.fixture
async def bot_at(tmp_path: Path):
    """A started alert service behind a real loopback server; ``bot_at(limit)``."""
    opened: list[Any] = []

    async def make(limit: int = 1 << 20):
        store = await Store.open(tmp_path / f"bot-{len(opened)}.db")
        chat = RecordingChat()
        service = make_service(store, chat, FakeHandlers(), max_body_bytes=limit)
        await service.start(loops=False)
        client = await client_for(service)
        opened.append((client, service, store))
        return client.server.port, service, chat

    yield make
    for client, service, store in opened:
        await client.close()
        await service.stop()
        await store.close()


async def test_a_body_in_two_writes_200ms_apart_is_read_whole(bot_at):
    port, service, chat = await bot_at()
    data = json.dumps(BODY).encode()
    for length in (len(data), None):  # with a Content-Length, and chunked
        status, answer = await raw_post(port, split(data, 2), pause_s=0.2, length=length)
        assert status == 200, answer
    await service.idle()
    [root] = chat.roots
    assert "NodeDiskPressure" in root.text
    assert await service.inbox.count("done") == 2


async def test_a_slow_sender_dribbling_the_body_is_read_whole(bot_at):
    port, service, chat = await bot_at()
    data = json.dumps(BODY).encode()
    status, answer = await raw_post(port, split(data, 40), pause_s=0.02, length=len(data))
    assert status == 200, answer
    status, answer = await raw_post(port, split(data, 40), pause_s=0.02)
    assert status == 200, answer
    await service.idle()
    assert len(chat.roots) == 1 and await service.inbox.count("done") == 2


async def test_bodies_at_the_limit_are_accepted_one_byte_more_is_413(bot_at):
    limit = 8192
    port, service, chat = await bot_at(limit)
    exact, over = padded(BODY, limit), padded(BODY, limit + 1)
    for parts in ([exact], split(exact, 5)):
        for length in (limit, None):
            status, answer = await raw_post(port, parts, pause_s=0.01, length=length)
            assert status == 200, answer
    for parts in ([over], split(over, 5)):
        for length in (limit + 1, None):
            status, answer = await raw_post(port, parts, pause_s=0.01, length=length)
            assert status == 413 and "max_body_bytes" in answer["error"]
    await service.idle()
    assert await service.inbox.count("done") == 4 and len(chat.roots) == 1


async def test_a_large_group_under_the_limit_in_one_write_is_accepted_whole(bot_at):
    port, service, chat = await bot_at()  # the default 1 MiB
    alerts = [alert("BigGroupAlert", fp=f"{i:016x}", pod=f"worker-{i}", replica=f"r{i}",
                    description="x" * 250) for i in range(1500)]
    body = payload("big", alerts)
    data = json.dumps(body).encode()
    assert 800 * 1024 < len(data) < 1 << 20
    status, answer = await raw_post(port, [data], length=len(data))
    assert status == 200, answer
    await service.idle(timeout_s=60)
    group = await service.repo.current(body["groupKey"])
    assert group is not None and len(group.alerts) == 1500
    [root] = chat.roots
    assert "BigGroupAlert" in root.text


async def test_a_10mb_chunked_body_is_413_and_nothing_is_stored(bot_at):
    port, service, chat = await bot_at()
    data = padded(BODY, 10 * 1024 * 1024)
    status, answer = await raw_post(port, split(data, 160))
    assert status == 413 and "max_body_bytes" in answer["error"]
    assert await service.inbox.count("pending") + await service.inbox.count("done") == 0
    assert chat.messages == {}
