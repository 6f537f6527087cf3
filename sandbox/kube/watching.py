"""Watch streams (``?watch=1``): chunked JSON lines of ``{"type", "object"}`` fed by
ObjectStore.subscribe, with the initial ADDED events, a replay from a list's resourceVersion and
the 410 ERROR event a real server sends once that version is compacted away."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sandbox.kube import jsonio
from sandbox.kube.errors import ApiError, bad_request
from sandbox.kube.listing import list_page
from sandbox.kube.resources import ResourceType
from sandbox.kube.selectors import LabelSelector, labels_match
from sandbox.kube.store import ObjectStore, WatchEvent

Obj = dict[str, Any]
CLOSE = "__CLOSE__"  # sentinel event type that ends a stream (server shutdown)
DEFAULT_TIMEOUT_S = 1800.0
_IDLE_CHECK_S = 1.0  # how often an idle stream looks whether its client is gone


async def stream(request: web.Request, store: ObjectStore, rt: ResourceType,
                 namespace: str | None, labels: LabelSelector,
                 fields: Callable[[Obj], bool] | None, render: Callable[[Obj], Obj],
                 active: set[asyncio.Queue[WatchEvent]]) -> web.StreamResponse:
    """Serve one watch; ``render`` turns a stored object into the event's object (plain or a
    one-row Table); ``active`` holds the open streams' queues so shutdown can end them."""
    q = request.query
    try:
        timeout = float(q.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
    except ValueError:
        raise bad_request(f"timeoutSeconds: Invalid value: {q.get('timeoutSeconds')!r}") from None
    rv = q.get("resourceVersion")
    initial = q.get("sendInitialEvents") in ("true", "1")
    queue = store.subscribe(rt.api_version, rt.kind)
    active.add(queue)
    # taken with the subscription and no await in between: together they miss nothing
    replay: list[WatchEvent] | None = []
    if rv and rv.isdigit() and rv != "0":
        replay = store.events_since(rt.api_version, rt.kind, int(rv))
    snapshot = (list_page(store, rt.api_version, rt.kind, namespace, labels=labels,
                          fields=fields).items if rv in (None, "", "0") or initial else [])
    snapshot = [render(o) for o in snapshot]

    def matches(obj: Obj) -> bool:
        if namespace and obj["metadata"].get("namespace", "") != namespace:
            return False
        return labels_match(labels, obj) and (fields is None or fields(obj))

    resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    deadline = time.monotonic() + timeout
    try:
        await resp.prepare(request)

        async def send(kind: str, payload: Obj) -> None:
            await resp.write(jsonio.dumps({"type": kind, "object": payload}) + b"\n")

        for payload in snapshot:
            await send("ADDED", payload)
        if replay is None:  # the history no longer reaches back to rv: the client must relist
            await send("ERROR", ApiError(410, "Expired", f"too old resource version: {rv} "
                                         f"({store.resource_version})").status())
            replay, deadline = [], 0.0
        for event in replay:
            if matches(event.object):
                await send(event.type, render(event.object))
        if initial:
            await send("BOOKMARK", {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {
                "resourceVersion": str(store.resource_version),
                "annotations": {"k8s.io/initial-events-end": "true"}}})
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), timeout=min(remaining, _IDLE_CHECK_S))
            except TimeoutError:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break  # the client went away
                continue
            if event.type == CLOSE:
                break
            if matches(event.object):
                await send(event.type, render(event.object))
        await resp.write_eof()
    except ConnectionResetError:
        pass  # the client hung up mid-write
    finally:
        store.unsubscribe(queue)
        active.discard(queue)
    return resp
