"""Vault's HTTP answer shapes: plain JSON with ``Content-Type: application/json`` exactly (hvac
only parses error bodies with that exact header), ``{"errors": [...]}`` on failure, and the
standard envelope for logical reads."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web


def vault_json(body: Any, status: int = 200) -> web.Response:
    resp = web.Response(body=json.dumps(body).encode(), status=status)
    resp.headers["Content-Type"] = "application/json"
    resp.headers["Cache-Control"] = "no-store"
    return resp


def vault_error(status: int, *errors: str) -> web.Response:
    return vault_json({"errors": list(errors)}, status)


def envelope(data: Any, mount_type: str = "system", **extra: Any) -> dict[str, Any]:
    """The logical response every ``vault read`` gets."""
    return {"request_id": str(uuid.uuid4()), "lease_id": "", "renewable": False,
            "lease_duration": 0, "data": data, "wrap_info": None, "warnings": None,
            "auth": None, "mount_type": mount_type, **extra}


def pem_body(pem: str) -> web.Response:
    resp = web.Response(body=pem.encode(), status=200)
    resp.headers["Content-Type"] = "application/pem-certificate-chain"
    return resp
