"""Kubernetes API access through kubernetes-asyncio, as plain JSON dicts.

Handlers read many kinds, core and custom alike; working on the decoded JSON (instead of the
generated model classes) keeps one code path for CRDs and avoids model construction cost on
large lists.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import aiohttp

from bot.clients import k8s_import
from bot.clients.errors import SourceError

client = k8s_import.load()  # ApiClient + Configuration, without the generated models
from kubernetes_asyncio import config  # noqa: E402  (after the light import above)

PatchType = Literal["merge", "strategic", "json"]
_PATCH_CONTENT = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}


def resource_path(api_version: str, plural: str, namespace: str | None = None, name: str | None = None,
                  subresource: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = base
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class KubeClient:
    """One cluster. ``source`` names it in findings ("kubernetes", "harvester")."""

    def __init__(self, api: client.ApiClient, source: str = "kubernetes", timeout_s: float = 10.0):
        self.api = api
        self.source = source
        self.timeout_s = timeout_s

    @classmethod
    async def connect(cls, kubeconfig: Path | None = None, context: str | None = None,
                      source: str = "kubernetes", timeout_s: float = 10.0) -> "KubeClient":
        """In-cluster config when running in a pod and no kubeconfig is given, else kubeconfig."""
        cfg = client.Configuration()
        if kubeconfig is None:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                await config.load_kube_config(context=context, client_configuration=cfg)
        else:
            await config.load_kube_config(config_file=str(kubeconfig), context=context,
                                          client_configuration=cfg)
        return cls(client.ApiClient(cfg), source=source, timeout_s=timeout_s)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
                    content_type: str, accept: str) -> tuple[int, bytes]:
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self.api.call_api(
                    path, method, query_params=params,
                    header_params={"Accept": accept, "Content-Type": content_type},
                    body=body, auth_settings=["BearerToken"], _preload_content=False,
                    _request_timeout=self.timeout_s,
                )
                return resp.status, await resp.read()
        except TimeoutError:
            raise SourceError(self.source, f"{method} {path} timed out after {self.timeout_s:g}s") from None
        except aiohttp.ClientError as exc:
            raise SourceError(self.source, f"{method} {path} failed: {exc.__class__.__name__}: {exc}") from None

    def _failed(self, method: str, path: str, status: int, data: Any) -> SourceError:
        message = data.get("message") if isinstance(data, dict) else None
        return SourceError(self.source, message or f"{method} {path} answered HTTP {status}", status=status)

    async def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                      body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """One API call; a non-2xx answer raises SourceError carrying the Status message."""
        status, raw = await self._call(method, path, query, body, content_type, "application/json")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not 200 <= status < 300:
            raise self._failed(method, path, status, data)
        return data

    async def request_text(self, path: str, *, query: dict[str, Any] | None = None) -> str:
        """A GET whose answer is text (pod logs); an error answer is still a JSON Status."""
        status, raw = await self._call("GET", path, query, None, "application/json", "*/*")
        if not 200 <= status < 300:
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                data = {}
            raise self._failed("GET", path, status, data)
        return raw.decode("utf-8", errors="replace")

    async def logs(self, namespace: str, pod: str, container: str | None = None, *,
                   tail: int | None = 200, since: timedelta | None = None, previous: bool = False,
                   limit_bytes: int = 256 * 1024) -> str:
        """A container's log (``kubectl logs [--previous] --tail --since``) as text; bounded by
        ``tail`` lines and ``limit_bytes`` so a chatty pod cannot flood the bot."""
        return await self.request_text(resource_path("v1", "pods", namespace, pod, "log"), query={
            "container": container, "tailLines": tail,
            "sinceSeconds": max(1, int(since.total_seconds())) if since is not None else None,
            "previous": "true" if previous else None, "limitBytes": limit_bytes})

    async def pages(self, api_version: str, plural: str, namespace: str | None = None, *,
                    label_selector: str | None = None, field_selector: str | None = None,
                    limit: int = 500) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield the items of a list one page at a time (limit/continue)."""
        path = resource_path(api_version, plural, namespace)
        cont: str | None = None
        while True:
            data = await self.request("GET", path, query={
                "labelSelector": label_selector, "fieldSelector": field_selector,
                "limit": limit, "continue": cont})
            yield data.get("items") or []
            cont = (data.get("metadata") or {}).get("continue")
            if not cont:
                return

    async def list(self, api_version: str, plural: str, namespace: str | None = None, *,
                   label_selector: str | None = None, field_selector: str | None = None,
                   limit: int = 500) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        async for page in self.pages(api_version, plural, namespace, label_selector=label_selector,
                                     field_selector=field_selector, limit=limit):
            items.extend(page)
        return items

    async def get(self, api_version: str, plural: str, name: str,
                  namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", resource_path(api_version, plural, namespace, name))

    async def metadata(self, api_version: str, plural: str, name: str,
                       namespace: str | None = None) -> dict[str, Any]:
        """An object's metadata only (``PartialObjectMetadata``): a Secret's existence, labels and
        age without its data ever reaching the bot. RBAC still needs ``get`` on it (by name)."""
        path = resource_path(api_version, plural, namespace, name)
        status, raw = await self._call("GET", path, None, None, "application/json",
                                       "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        if not 200 <= status < 300:
            raise self._failed("GET", path, status, data)
        return {"metadata": data.get("metadata") or {}}  # never more, whatever the server sent

    async def create(self, api_version: str, plural: str, body: dict[str, Any],
                     namespace: str | None = None, *, subresource_of: str | None = None,
                     subresource: str | None = None, dry_run: bool = False) -> dict[str, Any]:
        path = resource_path(api_version, plural, namespace, subresource_of, subresource)
        return await self.request("POST", path, body=body, query={"dryRun": "All" if dry_run else None})

    async def patch(self, api_version: str, plural: str, name: str, body: Any,
                    namespace: str | None = None, *, patch_type: PatchType = "merge",
                    dry_run: bool = False) -> dict[str, Any]:
        return await self.request(
            "PATCH", resource_path(api_version, plural, namespace, name), body=body,
            content_type=_PATCH_CONTENT[patch_type], query={"dryRun": "All" if dry_run else None})

    async def delete(self, api_version: str, plural: str, name: str, namespace: str | None = None,
                     *, dry_run: bool = False) -> dict[str, Any]:
        return await self.request("DELETE", resource_path(api_version, plural, namespace, name),
                                  query={"dryRun": "All" if dry_run else None})
