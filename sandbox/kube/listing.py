"""Paginated, filtered lists over the ObjectStore (limit/continue, label and field selectors).

Pages start by bisecting the store's cached sorted key list, so a page costs O(log n + page)
rather than a sort or scan of every object of the kind.
"""

from __future__ import annotations

import base64
import binascii
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.kube import jsonio
from sandbox.kube.errors import bad_request, continue_expired
from sandbox.kube.selectors import LabelSelector, labels_match
from sandbox.kube.store import ObjectStore

Obj = dict[str, Any]


@dataclass
class Page:
    items: list[Obj]
    resource_version: str
    continue_token: str | None
    remaining: int | None  # remainingItemCount: only known when nothing is filtered


def encode_continue(rv: int, namespace: str, name: str, issued: float | None = None) -> str:
    """Opaque to clients: where the next page starts, and when the list began (wall clock, so
    a token outlives nothing but its TTL)."""
    raw = jsonio.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": [namespace, name],
                        "t": time.time() if issued is None else issued})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str], float]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = jsonio.loads(raw)
        ns, name = data["start"]
        return int(data["rv"]), (str(ns), str(name)), float(data.get("t", 0.0))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad_request(f"continue key is not valid: {token!r}") from None


def list_page(store: ObjectStore, api_version: str, kind: str, namespace: str | None, *,
              labels: LabelSelector = (), fields: Callable[[Obj], bool] | None = None,
              limit: int = 0, cont: str | None = None,
              continue_ttl_s: float | None = None) -> Page:
    """One page. A continue token older than ``continue_ttl_s`` is refused with 410 Expired
    (the real server's answer once etcd compacted the list's revision)."""
    keys = store.sorted_keys(api_version, kind)
    if namespace:
        lo = bisect_left(keys, (namespace, ""))
        hi = bisect_left(keys, (namespace + "\x00", ""))
    else:
        lo, hi = 0, len(keys)
    issued: float | None = None
    list_rv = store.resource_version  # every page of one list reports the first page's version
    if cont:
        list_rv, start, issued = decode_continue(cont)
        lo = max(lo, bisect_right(keys, start))
        if continue_ttl_s is not None and time.time() - issued > continue_ttl_s:
            fresh = (encode_continue(store.resource_version, start[0], start[1])
                     if lo < hi else None)
            raise continue_expired(fresh)
    filtered = bool(labels) or fields is not None
    rv = str(list_rv)
    items: list[Obj] = []
    i = lo
    if not filtered and limit > 0:
        end = min(hi, lo + limit)
        items = [o for ns, name in keys[lo:end]
                 if (o := store.get(api_version, kind, name, ns)) is not None]
        i = end
    else:
        while i < hi:
            ns, name = keys[i]
            i += 1
            obj = store.get(api_version, kind, name, ns)
            if obj is None:
                continue
            if labels and not labels_match(labels, obj):
                continue
            if fields is not None and not fields(obj):
                continue
            items.append(obj)
            if limit > 0 and len(items) >= limit:
                break
    token = None
    remaining = None
    if limit > 0 and i < hi:
        last = keys[i - 1]
        token = encode_continue(list_rv, last[0], last[1], issued)
        if not filtered:
            remaining = hi - i
    return Page(items, rv, token, remaining)
