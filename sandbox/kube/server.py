"""The sandbox's Kubernetes API server: aiohttp on loopback, serving the ObjectStore.

kubectl and kubernetes-asyncio talk to it unmodified: discovery, CRUD with the real Status
errors, selectors, limit/continue, the three patch types, dryRun, status/scale/eviction
subresources, server-side Tables and watch. Objects written into the store by the world builder
or scenarios are visible on the next request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hmac
import logging
import secrets
import string
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from sandbox.kube import (
    controllers, discovery, execs, jsonio, kubevirt, openapi, podlogs, protobuf, reviews, tables, watching,
)
from sandbox.kube.errors import (
    ApiError, already_exists, bad_request, conflict, invalid, method_not_allowed,
    namespace_not_found, not_found, path_not_found, unauthorized, unprocessable,
    unsupported_media_type,
)
from sandbox.kube.deletion import Deleter
from sandbox.kube.eviction import check_eviction
from sandbox.kube.listing import list_page
from sandbox.kube.patching import PatchDecodeError, PatchError, json_patch, merge_patch, strategic_merge
from sandbox.kube.paths import Target, parse
from sandbox.kube.resources import CATALOG, Catalog, ResourceType
from sandbox.kube.selectors import (
    LabelSelector, compile_field_selector, label_selector_string, parse_field_selector,
    parse_label_selector,
)
from sandbox.kube.store import ObjectStore, WatchEvent, now_iso
from sandbox.kube.validation import validate_name

log = logging.getLogger(__name__)
Obj = dict[str, Any]

STORE_KEY = web.AppKey("kube_store", ObjectStore)
_WATCHES: web.AppKey[set[asyncio.Queue[WatchEvent]]] = web.AppKey("kube_watches", set)
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
    "application/apply-patch+yaml": "apply",
}


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=jsonio.dumps(obj), status=status, content_type="application/json")


def _error(err: ApiError) -> web.Response:
    return _json(err.status(), err.code)


def _get_path(obj: Obj, dotted: str) -> Any:
    cur: Any = obj
    for k in dotted.split("."):
        cur = cur.get(k) if isinstance(cur, dict) else None
    return cur


def _set_path(obj: Obj, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    cur = obj
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value


def _without(obj: Obj, *keys: str) -> Obj:
    return {k: v for k, v in obj.items() if k not in keys}


def _accept_params(accept: str) -> dict[str, str]:
    """Parameters of the first Accept entry that asks for a meta.k8s.io rendering (as=Table...)."""
    for part in accept.split(","):
        params = {p.split("=", 1)[0].strip(): p.split("=", 1)[1].strip()
                  for p in part.split(";")[1:] if "=" in p}
        if params.get("g") == "meta.k8s.io" and params.get("as"):
            return params
    return {}


class KubeApi:
    """Request handlers over one ObjectStore."""

    def __init__(self, store: ObjectStore, catalog: Catalog = CATALOG,
                 continue_ttl_s: float | None = 300.0):
        self.store = store
        self.catalog = catalog
        self.continue_ttl_s = continue_ttl_s
        self.deleter = Deleter(store, catalog)

    # -- plumbing ----------------------------------------------------------------------------
    def _get(self, rt: ResourceType, name: str, namespace: str | None) -> Obj:
        obj = self.store.get(rt.api_version, rt.kind, name, namespace or "")
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _require_namespace(self, namespace: str) -> None:
        if self.store.get("v1", "Namespace", namespace) is None:
            raise namespace_not_found(namespace)

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty")
        if request.content_type == protobuf.CONTENT_TYPE:
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, UnicodeDecodeError, KeyError) as exc:
                raise ApiError(415, "UnsupportedMediaType", str(exc)) from None
        try:
            if request.content_type == "application/apply-patch+yaml":
                return yaml.safe_load(raw)
            return jsonio.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"error decoding request body: {exc}") from None

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        values = request.query.getall("dryRun", [])
        for v in values:
            if v != "All":
                raise bad_request(f'dryRun: Unsupported value: "{v}": supported values: "All"')
        return bool(values)

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        """What a read serves: PDB status as the disruption controller would have it now."""
        if rt.kind == "PodDisruptionBudget" and rt.group == "policy":
            return controllers.pdb_view(self.store, obj)
        return obj

    @staticmethod
    def _out(rt: ResourceType, obj: Obj) -> Obj:
        """An object as a response carries it: apiVersion and kind first."""
        return {"apiVersion": rt.api_version, "kind": rt.kind, **_without(obj, "apiVersion", "kind")}

    # -- read --------------------------------------------------------------------------------
    async def get(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        self.store.track_history(t.rt.api_version, t.rt.kind)
        obj = self._view(t.rt, self._get(t.rt, t.name, t.namespace))
        params = _accept_params(request.headers.get("Accept", ""))
        if params.get("as") == "Table":
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return _json(tables.table(t.rt, [obj], meta, request.query.get("includeObject", "Metadata")))
        if params.get("as") == "PartialObjectMetadata":
            return _json({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                          "metadata": obj["metadata"]})
        return _json(self._out(t.rt, obj))

    async def list(self, request: web.Request, t: Target) -> web.StreamResponse:
        q = request.query
        labels = parse_label_selector(q.get("labelSelector"))
        fields = compile_field_selector(parse_field_selector(q.get("fieldSelector")),
                                        t.rt.group, t.rt.kind, t.rt.crd)
        self.store.track_history(t.rt.api_version, t.rt.kind)
        if q.get("watch") in ("1", "true", "True"):
            return await self.watch(request, t, labels, fields)
        try:
            limit = int(q.get("limit") or 0)
        except ValueError:
            raise bad_request(f"limit: Invalid value: {q.get('limit')!r}") from None
        page = list_page(self.store, t.rt.api_version, t.rt.kind, t.namespace, labels=labels,
                         fields=fields, limit=limit, cont=q.get("continue"),
                         continue_ttl_s=self.continue_ttl_s)
        page.items = [self._view(t.rt, o) for o in page.items]
        meta: Obj = {"resourceVersion": page.resource_version}
        if page.continue_token:
            meta["continue"] = page.continue_token
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        params = _accept_params(request.headers.get("Accept", ""))
        if params.get("as") == "Table":
            return _json(tables.table(t.rt, page.items, meta, q.get("includeObject", "Metadata")))
        if params.get("as") == "PartialObjectMetadataList":
            return _json({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                          "metadata": meta,
                          "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                                     "metadata": o["metadata"]} for o in page.items]})
        if t.rt.crd:
            items = page.items
        else:  # typed lists of built-in kinds leave apiVersion/kind off their items
            items = [_without(o, "apiVersion", "kind") for o in page.items]
        return _json({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version, "metadata": meta,
                      "items": items})

    async def watch(self, request: web.Request, t: Target, labels: LabelSelector,
                    fields: Callable[[Obj], bool] | None) -> web.StreamResponse:
        rt = t.rt
        as_table = _accept_params(request.headers.get("Accept", "")).get("as") == "Table"
        include = request.query.get("includeObject", "Metadata")

        def render(obj: Obj) -> Obj:
            obj = self._view(rt, obj)
            if as_table:
                meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                return tables.table(rt, [obj], meta, include)
            return self._out(rt, obj)
        return await watching.stream(request, self.store, rt, t.namespace, labels, fields, render,
                                     request.app[_WATCHES])

    # -- write -------------------------------------------------------------------------------
    @staticmethod
    def _fold_string_data(obj: Obj) -> None:
        """A Secret's stringData is write-only: the server folds it into data (base64)."""
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.setdefault("data", {})
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()

    def _admit(self, rt: ResourceType, obj: Obj) -> None:
        """Defaults the real registries fill in on create."""
        if rt.kind == "Secret" and not rt.group:
            self._fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        if rt.kind == "Namespace":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj.setdefault("status", {"phase": "Active"})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif rt.kind == "Pod":
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        elif rt.kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            obj.setdefault("spec", {}).setdefault("replicas", 1)

    async def create(self, request: web.Request, t: Target) -> web.StreamResponse:
        rt = t.rt
        body = await self._body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        if body.get("kind") not in (None, rt.kind) or body.get("apiVersion") not in (None, rt.api_version):
            raise bad_request(f"the API version in the data ({body.get('apiVersion')}) does not match "
                              f"the expected API version ({rt.api_version})")
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        review = reviews.answer(rt.kind, obj, request.headers.get("Impersonate-User"))
        if review is not None:
            return _json(review, 201)
        meta = obj.setdefault("metadata", {})
        if rt.namespaced:
            if t.namespace is None:
                raise method_not_allowed()
            if meta.get("namespace") not in (None, "", t.namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        name = meta.get("name") or ""
        validate_name(rt, name)
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError", "Internal error occurred: resourceVersion should not "
                           "be set on objects to be created")
        if rt.namespaced:
            self._require_namespace(t.namespace or "")
        if self.store.get(rt.api_version, rt.kind, name, t.namespace or "") is not None:
            raise already_exists(rt, name)
        ns_obj = self.store.get("v1", "Namespace", t.namespace or "") if rt.namespaced else None
        if ns_obj is not None and ns_obj["metadata"].get("deletionTimestamp"):
            raise ApiError(403, "Forbidden", f'{rt.group_resource} "{name}" is forbidden: unable to '
                           f'create new content in namespace {t.namespace} because it is being '
                           f'terminated', {"name": name, "kind": rt.plural,
                                           "causes": [{"reason": "NamespaceTerminating",
                                                       "message": f"namespace {t.namespace} is being terminated",
                                                       "field": "metadata.namespace"}]})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(k, None)
        self._admit(rt, obj)
        if self._dry_run(request):
            meta["uid"] = secrets.token_hex(16)
            meta["creationTimestamp"] = now_iso()
            meta["generation"] = 1
            return _json(self._out(rt, obj), 201)
        controllers.reconcile(obj)
        created = self.store.add(obj)
        controllers.after_create(self.store, created)
        return _json(self._out(rt, created), 201)

    def _commit(self, request: web.Request, rt: ResourceType, old: Obj, new: Obj,
                subresource: str | None) -> web.Response:
        """Finish an update or patch: keep identity, apply the status split, bump generation."""
        if not isinstance(new, dict):
            raise unprocessable("the patched object is not a JSON object")
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            meta = new["metadata"] = {}
        old_meta = old["metadata"]
        if meta.get("name", old_meta["name"]) != old_meta["name"]:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name "
                              f"on the URL ({old_meta['name']})")
        rv = meta.get("resourceVersion")
        if rv and rv != old_meta.get("resourceVersion"):
            raise conflict(rt, old_meta["name"])
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if rt.status and "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            elif rt.status:
                new.pop("status", None)
            new["apiVersion"], new["kind"] = rt.api_version, rt.kind
            if old_meta.get("deletionTimestamp"):
                added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
                if added:
                    raise invalid(rt, old_meta["name"], [(
                        "metadata.finalizers", "Forbidden: no new finalizers can be added if the "
                        f"object is being deleted, found new finalizers {added}")])
            for k in ("name", "namespace", "uid", "creationTimestamp", "generation",
                      "deletionTimestamp", "deletionGracePeriodSeconds"):
                if k in old_meta:
                    meta[k] = old_meta[k]
                else:
                    meta.pop(k, None)
            if (_without(new, "metadata", "status") != _without(old, "metadata", "status")
                    and rt.kind not in ("Namespace", "Node", "ConfigMap", "Secret", "Event")):
                meta["generation"] = int(old_meta.get("generation") or 1) + 1
        if rt.kind == "Secret" and not rt.group:
            self._fold_string_data(new)
        if self._dry_run(request):
            return _json(self._out(rt, new))
        if new["metadata"].get("generation") != old_meta.get("generation"):
            controllers.reconcile(new)
        stored = self.store.replace(new)
        self.deleter.finish_if_released(rt, stored)  # the last finalizer removed: gone now
        return _json(self._out(rt, stored))

    async def update(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        old = self._get(t.rt, t.name, t.namespace)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        new = copy.deepcopy(body)
        new.setdefault("metadata", {}).setdefault("name", t.name)
        if t.subresource != "status":
            validate_name(t.rt, new["metadata"]["name"])
        return self._commit(request, t.rt, old, new, t.subresource)

    def _apply_patch(self, request: web.Request, rt: ResourceType, doc: Obj, patch: Any) -> Any:
        kind = _PATCH_TYPES.get(request.content_type)
        if kind is None:
            raise unsupported_media_type(request.content_type)
        try:
            if kind == "merge" or kind == "apply":
                return merge_patch(doc, patch)
            if kind == "strategic":
                if rt.crd:
                    raise unsupported_media_type(request.content_type)
                return strategic_merge(doc, patch)
            return json_patch(doc, patch)
        except PatchError as exc:
            raise unprocessable(str(exc)) from None
        except PatchDecodeError as exc:
            raise bad_request(str(exc)) from None

    async def patch(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        rt = t.rt
        patch = await self._body(request)
        old = self.store.get(rt.api_version, rt.kind, t.name, t.namespace or "")
        if old is None:
            if request.content_type == "application/apply-patch+yaml" and t.subresource is None:
                return await self._apply_create(request, t, patch)
            raise not_found(rt, t.name)
        new = self._apply_patch(request, rt, copy.deepcopy(old), patch)
        return self._commit(request, rt, old, new, t.subresource)

    async def _apply_create(self, request: web.Request, t: Target, body: Any) -> web.Response:
        """Server-side apply of an object that does not exist yet: a create."""
        rt = t.rt
        if not isinstance(body, dict):
            raise bad_request("the request body must be an object")
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta = obj.setdefault("metadata", {})
        meta["name"] = t.name
        if rt.namespaced:
            meta["namespace"] = t.namespace
            self._require_namespace(t.namespace or "")
        validate_name(rt, t.name or "")
        self._admit(rt, obj)
        if self._dry_run(request):
            return _json(self._out(rt, obj), 201)
        controllers.reconcile(obj)
        created = self.store.add(obj)
        controllers.after_create(self.store, created)
        return _json(self._out(rt, created), 201)

    async def delete(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        rt = t.rt
        old = self._get(rt, t.name, t.namespace)
        raw = await request.read()
        if raw:
            try:
                opts = jsonio.loads(raw)
            except ValueError:
                raise bad_request("error decoding DeleteOptions") from None
            pre = (opts or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"].get("uid"):
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.group_resource} '
                               f'"{t.name}": Precondition failed: UID in precondition: {pre["uid"]}, '
                               f'UID in object meta: {old["metadata"].get("uid")}',
                               {"name": t.name, "kind": rt.plural})
            if pre.get("resourceVersion") and pre["resourceVersion"] != old["metadata"].get("resourceVersion"):
                raise conflict(rt, t.name)
        if self._dry_run(request):
            return _json(self._out(rt, old))
        return _json(self._out(rt, self.deleter.delete(rt, old)))

    async def delete_collection(self, request: web.Request, t: Target) -> web.StreamResponse:
        rt = t.rt
        if "deletecollection" not in rt.verbs:
            raise method_not_allowed()
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = compile_field_selector(parse_field_selector(request.query.get("fieldSelector")),
                                        rt.group, rt.kind, rt.crd)
        page = list_page(self.store, rt.api_version, rt.kind, t.namespace, labels=labels, fields=fields)
        dry = self._dry_run(request)
        items = []
        for obj in list(page.items):
            meta = obj["metadata"]
            if self.store.get(rt.api_version, rt.kind, meta["name"], meta.get("namespace", "")) is None:
                continue  # already taken away by an earlier deletion's side effects
            items.append(obj if dry else self.deleter.delete(rt, obj))
        return _json({"kind": rt.list_kind, "apiVersion": rt.api_version,
                      "metadata": {"resourceVersion": str(self.store.resource_version)},
                      "items": items})

    # -- subresources ------------------------------------------------------------------------
    def _scale_of(self, rt: ResourceType, obj: Obj) -> Obj:
        assert rt.scale is not None
        sel = _get_path(obj, rt.scale.selector) if rt.scale.selector else None
        status: Obj = {"replicas": int(_get_path(obj, rt.scale.status_replicas) or 0)}
        if isinstance(sel, dict):
            status["selector"] = label_selector_string(sel)
        elif isinstance(sel, str):
            status["selector"] = sel
        meta = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta}, "spec": {"replicas": int(_get_path(obj, rt.scale.spec_replicas) or 0)},
            "status": status}

    async def scale(self, request: web.Request, t: Target) -> web.StreamResponse:
        rt = t.rt
        assert t.name is not None and rt.scale is not None
        old = self._get(rt, t.name, t.namespace)
        current = self._scale_of(rt, old)
        if request.method == "GET":
            return _json(current)
        if request.method == "PUT":
            scale = await self._body(request)
        elif request.method == "PATCH":
            scale = self._apply_patch(request, rt if not rt.crd else _SCALE_RT, current,
                                      await self._body(request))
        else:
            raise method_not_allowed()
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid(rt, t.name, [("spec.replicas", f"Invalid value: {replicas}: must be "
                                        "greater than or equal to 0")])
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"].get("resourceVersion"):
            raise conflict(rt, t.name)
        new = copy.deepcopy(old)
        _set_path(new, rt.scale.spec_replicas, replicas)
        if replicas != _get_path(old, rt.scale.spec_replicas):
            new["metadata"]["generation"] = int(old["metadata"].get("generation") or 1) + 1
        if self._dry_run(request):
            return _json(self._scale_of(rt, new))
        controllers.reconcile(new)
        return _json(self._scale_of(rt, self.store.replace(new)))

    async def evict(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        pod_rt = t.rt
        body = await self._body(request)
        if isinstance(body, dict) and (body.get("metadata") or {}).get("name") not in (None, t.name):
            raise bad_request("name in URL does not match name in Eviction object")
        pod = self._get(pod_rt, t.name, t.namespace)
        check_eviction(self.store, pod)
        dry = self._dry_run(request) or "All" in (
            ((body or {}).get("deleteOptions") or {}).get("dryRun") or [])
        if not dry:
            self.store.remove(pod_rt.api_version, pod_rt.kind, t.name, t.namespace or "")
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "code": 201}, 201)

    async def pod_log(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        return podlogs.serve_log(request, self.store, self._get(t.rt, t.name, t.namespace))

    async def pod_exec(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        pod = self._get(t.rt, t.name, t.namespace)
        container = execs.check_target(pod, request.query.get("container"))
        handler = (self.store.pod_exec.get((t.namespace or "", t.name))
                   or execs.no_handler(t.namespace or "", t.name))
        return await execs.serve(request, handler, container, request.query.getall("command", []))

    async def token(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        sa = self._get(t.rt, t.name, t.namespace)
        body = await self._body(request)
        seconds = int(((body or {}).get("spec") or {}).get("expirationSeconds") or 3600)
        spec = dict((body or {}).get("spec") or {})
        # Absent and empty are the same in a decoded protobuf body: both mean the API server's audience.
        spec["audiences"] = list(spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"])
        spec["expirationSeconds"] = seconds
        jwt, exp = self.store.tokens.issue(t.namespace or "", t.name, sa["metadata"].get("uid", ""), seconds,
                                           list(spec["audiences"]))
        expires = datetime.fromtimestamp(exp, timezone.utc)
        return _json({"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                      "metadata": {"name": t.name, "namespace": t.namespace,
                                   "creationTimestamp": None},
                      "spec": spec,
                      "status": {"token": jwt,
                                 "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}},
                     201)

    # -- routing -----------------------------------------------------------------------------
    async def resource(self, request: web.Request, t: Target) -> web.StreamResponse:
        m = request.method
        if t.subresource is None:
            # method → (Kubernetes verb, handler); the verb must be one the resource allows.
            routes = ({"GET": ("list", self.list), "POST": ("create", self.create),
                       "DELETE": ("deletecollection", self.delete_collection)} if t.name is None else
                      {"GET": ("get", self.get), "PUT": ("update", self.update),
                       "PATCH": ("patch", self.patch), "DELETE": ("delete", self.delete)})
            verb, handler = routes.get(m, ("", None))
            if handler is None or verb not in t.rt.verbs:
                raise method_not_allowed()
            return await handler(request, t)
        if t.subresource == "status":
            status_handler = {"GET": self.get, "PUT": self.update, "PATCH": self.patch}.get(m)
            if status_handler is not None:
                return await status_handler(request, t)
        elif t.subresource == "scale" and m in ("GET", "PUT", "PATCH"):
            return await self.scale(request, t)
        elif t.subresource == "eviction" and m == "POST":
            return await self.evict(request, t)
        elif t.subresource == "log" and m == "GET":
            return await self.pod_log(request, t)
        elif t.subresource == "exec" and m in ("GET", "POST"):
            return await self.pod_exec(request, t)
        elif t.subresource == "token" and m == "POST":
            return await self.token(request, t)
        raise method_not_allowed()

    def _control_plane_version(self) -> str | None:
        """The API server runs the control plane nodes' version, as on an RKE2 cluster."""
        for node in self.store.list("v1", "Node"):
            labels = node["metadata"].get("labels") or {}
            if "node-role.kubernetes.io/control-plane" in labels:
                version = ((node.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion")
                if version:
                    return str(version)
        return None

    def _health(self, path: str, host: str) -> web.Response:
        """A control-plane node's own API server, probed at its address (runbook 2.4 curl -sk
        https://<cp-node-ip>:6443/healthz): it follows that node's kube-apiserver mirror pod, so a
        scenario that breaks the pod breaks the node's endpoints. Any other host: this server."""
        ip = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        node = next((n for n in self.store.list("v1", "Node")
                     if any(a.get("address") == ip for a in (n.get("status") or {}).get("addresses") or [])), None)
        pod = self.store.get("v1", "Pod", f"kube-apiserver-{node['metadata']['name']}", "kube-system") if node else None
        if pod is None or any(c.get("type") == "Ready" and c.get("status") == "True"
                              for c in (pod.get("status") or {}).get("conditions") or []):
            return web.Response(text="ok")
        # What the real server answers while its etcd is gone (verbose list of checks).
        checks = ["[+]ping ok", "[+]log ok", "[-]etcd failed: reason withheld", "[+]poststarthook/start-apiextensions-informers ok"]
        return web.Response(status=500, text="\n".join(checks) + f"\n{path.strip('/')} check failed\n")

    async def discovery_doc(self, request: web.Request) -> web.StreamResponse | None:
        path = request.path.rstrip("/") or "/"
        accept = request.headers.get("Accept", "")
        if path == "/version":
            return _json(discovery.version_info(self._control_plane_version()))
        if path in ("/healthz", "/readyz", "/livez"):
            return self._health(path, request.host)
        if path == "/.well-known/openid-configuration":  # ServiceAccount issuer discovery
            return _json({"issuer": self.store.tokens.issuer,
                          "jwks_uri": f"https://{request.host}/openid/v1/jwks",
                          "response_types_supported": ["id_token"], "subject_types_supported": ["public"],
                          "id_token_signing_alg_values_supported": ["ES256"]})
        if path == "/openid/v1/jwks":
            return _json({"keys": [self.store.tokens.jwk()]})
        if path in ("/api", "/apis"):
            if discovery.wants_aggregated(accept):
                return web.Response(body=jsonio.dumps(discovery.aggregated(self.catalog, path == "/api")),
                                    headers={"Content-Type": discovery.AGGREGATED_CONTENT_TYPE})
            if path == "/api":
                return _json(discovery.api_versions(f"{request.host}"))
            return _json(discovery.api_group_list(self.catalog))
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["openapi", "v3"]:
            if len(parts) == 2:
                return _json(openapi.root_document(self.catalog))
            rest = parts[2:]
            body = None
            if rest[:1] == ["api"] and len(rest) == 2:
                body = openapi.gv_document("", rest[1], self.catalog)
            elif rest[:1] == ["apis"] and len(rest) == 3:
                body = openapi.gv_document(rest[1], rest[2], self.catalog)
            if body is None:
                raise path_not_found()
            return web.Response(body=body, content_type="application/json")
        doc: Obj | None = None
        if parts == ["api", "v1"]:
            doc = discovery.api_resource_list(self.catalog, "", "v1")
        elif len(parts) == 2 and parts[0] == "apis":
            doc = discovery.api_group(self.catalog, parts[1])
        elif len(parts) == 3 and parts[0] == "apis":
            doc = discovery.api_resource_list(self.catalog, parts[1], parts[2])
        else:
            return None
        if doc is None:
            raise path_not_found()
        return _json(doc)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path.startswith(kubevirt.PREFIX):  # virt-api's start/stop/restart
                return await kubevirt.handle(request, self.store)
            doc = await self.discovery_doc(request) if request.method == "GET" else None
            if doc is not None:
                return doc
            target = parse(self.catalog, request.path)
            if target is None:
                raise path_not_found()
            return await self.resource(request, target)
        except ApiError as err:
            return _error(err)
        except Exception as exc:  # a bug here must still answer like an API server
            log.exception("kube sandbox: %s %s failed", request.method, request.path)
            return _error(ApiError(500, "InternalError",
                                   f"Internal error occurred: {exc.__class__.__name__}: {exc}"))


# A stand-in ResourceType so the Scale of a CRD accepts strategic merge patches (Scale is built in).
_SCALE_RT = ResourceType(group="autoscaling", version="v1", kind="Scale", plural="scale",
                         singular="scale", namespaced=True)


def _auth_middleware(token: str) -> Any:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.headers.get("Authorization", "").encode()
        # system:public-info-viewer: anonymous health checks are allowed (the upstream default).
        if request.path not in ("/healthz", "/readyz", "/livez") and not hmac.compare_digest(given, expected):
            return _error(unauthorized())
        return await handler(request)
    return auth


async def _close_watches(app: web.Application) -> None:
    for queue in list(app[_WATCHES]):
        queue.put_nowait(WatchEvent(watching.CLOSE, {}))


class KubeFaults:
    """Fault injection for tests: the next ``n`` API requests answer ``status`` (a Status body,
    as an overloaded API server's 503 ``ServiceUnavailable``) and/or wait ``delay_s`` first (an
    API server slower than the client's timeout)."""

    def __init__(self) -> None:
        self.pending: list[list[Any]] = []  # [remaining, status or None, delay_s]

    def fail_next(self, n: int, status: int | None = 503, delay_s: float = 0.0) -> None:
        self.pending.append([n, status, delay_s])

    def clear(self) -> None:
        self.pending.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.pending and request.path.startswith(("/api/", "/apis/")):
            fault = self.pending[0]
            fault[0] -= 1
            if fault[0] <= 0:
                self.pending.pop(0)
            if fault[2]:
                await asyncio.sleep(fault[2])
            if fault[1] is not None:
                reason = {503: "ServiceUnavailable", 500: "InternalError"}.get(fault[1], "InternalError")
                return _error(ApiError(fault[1], reason, "the server is currently unable to handle the request"))
        return await handler(request)


FAULTS_KEY: web.AppKey[KubeFaults] = web.AppKey("kube_faults", KubeFaults)


def make_app(store: ObjectStore, token: str, *,
             continue_ttl_s: float | None = 300.0) -> web.Application:
    """The API server over ``store``; every request needs ``Authorization: Bearer <token>``.
    Continue tokens expire (410) after ``continue_ttl_s``, like the real server's 5-minute etcd
    compaction; None keeps them forever."""
    api = KubeApi(store, continue_ttl_s=continue_ttl_s)
    faults = KubeFaults()
    app = web.Application(middlewares=[_auth_middleware(token), faults.middleware],
                          client_max_size=64 * 1024 * 1024)
    app[STORE_KEY] = store
    app[FAULTS_KEY] = faults
    app[_WATCHES] = set()
    app.on_shutdown.append(_close_watches)
    app.router.add_route("*", "/{tail:.*}", api.handle)
    return app


def write_kubeconfig(path: Path, server_url: str, token: str, context: str = "sandbox",
                     namespace: str = "default", ca_file: Path | None = None) -> None:
    """A kubeconfig with a bearer-token user. kubectl sends the token only to an https server,
    so give ``ca_file`` (see ``sandbox.kube.tls``) and an https URL for kubectl; kubernetes-asyncio
    also works against http."""
    cluster: Obj = {"server": server_url}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_file.read_bytes()).decode()
    doc = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": context, "cluster": cluster}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                   "namespace": namespace}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)
