"""A minimal OpenAPI v3 surface: enough for ``kubectl apply/create/replace`` to see that the
server validates fields itself (the ``fieldValidation`` PATCH parameter), so kubectl skips its
client-side schema validation. Schemas are left out: without a strategic-merge request body in
the document, kubectl computes apply patches from its compiled-in types (built-in kinds) or as
JSON merge patches (custom resources), as it does against aggregated APIs.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sandbox.kube import jsonio
from sandbox.kube.discovery import GIT_VERSION
from sandbox.kube.resources import CATALOG, Catalog, ResourceType

Obj = dict[str, Any]


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _item_path(rt: ResourceType) -> str:
    base = "/" + _gv_path(rt.group, rt.version)
    if rt.namespaced:
        base += "/namespaces/{namespace}"
    return f"{base}/{rt.plural}/{{name}}"


_QUERY_PARAMS = ("dryRun", "fieldManager", "fieldValidation", "force")


_DOCS: dict[tuple[int, str, str], bytes | None] = {}


def _gv_doc_bytes(group: str, version: str, catalog: Catalog = CATALOG) -> bytes | None:
    key = (id(catalog), group, version)
    if key not in _DOCS:
        _DOCS[key] = _build_gv_doc(catalog, group, version)
    return _DOCS[key]


def _build_gv_doc(catalog: Catalog, group: str, version: str) -> bytes | None:
    rts = catalog.in_group_version(group, version)
    if not rts:
        return None
    paths: Obj = {}
    for rt in rts:
        gvk = {"group": rt.group, "version": rt.version, "kind": rt.kind}
        params = [{"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
                  for p in _QUERY_PARAMS]
        paths[_item_path(rt)] = {
            "patch": {"operationId": f"patch{rt.kind}", "parameters": params,
                      "responses": {"200": {"description": "OK"}},
                      "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk},
        }
    doc = {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": GIT_VERSION},
           "paths": paths, "components": {"schemas": {}}}
    return jsonio.dumps(doc)


def gv_document(group: str, version: str, catalog: Catalog = CATALOG) -> bytes | None:
    return _gv_doc_bytes(group, version, catalog)


def root_document(catalog: Catalog = CATALOG) -> Obj:
    paths: Obj = {}
    for group, versions in catalog.groups.items():
        for version in versions:
            body = _gv_doc_bytes(group, version, catalog)
            digest = hashlib.sha512(body or b"").hexdigest()[:32].upper()
            rel = _gv_path(group, version)
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={digest}"}
    return {"paths": paths}
