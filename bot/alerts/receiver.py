"""``POST /alertmanager``: authenticate, bound the size, validate, commit to the inbox, answer.

Status codes follow what Alertmanager does with them: it retries 5xx (and connection errors),
never 4xx. So a payload we cannot read is a 400 naming the field, and a store failure is a 503
so that the notification comes again.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from collections.abc import Callable

from aiohttp import web
from pydantic import ValidationError

from bot.alerts.inbox import Inbox
from bot.alerts.models import WebhookPayload
from bot.config import AlertmanagerConfig

log = logging.getLogger(__name__)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def authorized(header: str, config: AlertmanagerConfig) -> bool:
    """Bearer token (``http_config.authorization``) or ``http_config.basic_auth``, whichever is
    configured; with neither configured nothing is accepted."""
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and config.webhook_token is not None:
        return _same(value, config.webhook_token.get_secret_value())
    if scheme.lower() == "basic" and config.webhook_username and config.webhook_password:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always: no early exit that tells which half was wrong.
        ok_user = _same(user, config.webhook_username)
        ok_password = _same(password, config.webhook_password.get_secret_value())
        return ok_user and ok_password
    return False


def _field_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "body"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{loc}: {err['msg']}{more}"


def alertmanager_handler(config: AlertmanagerConfig, inbox: Inbox,
                         accepted: Callable[[int], None]) -> Callable[[web.Request], object]:
    """The aiohttp handler; ``accepted(entry_id)`` wakes the processing worker."""
    if config.webhook_token is None and not (config.webhook_username and config.webhook_password):
        log.warning("no Alertmanager webhook credentials configured "
                    "(alertmanager.webhook_token or webhook_username/password): every webhook is refused")

    async def handle(request: web.Request) -> web.Response:
        if not authorized(request.headers.get("Authorization", ""), config):
            return web.json_response({"error": "missing or wrong credentials"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="sopbot"'})
        limit = config.max_body_bytes
        body = await read_body(request, limit)
        if body is None:
            return _too_large(limit)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return web.json_response({"error": f"body is not JSON: {exc}"}, status=400)
        try:
            payload = WebhookPayload.model_validate(data)
        except ValidationError as exc:
            return web.json_response({"error": _field_problem(exc)}, status=400)
        if payload.version != "4":
            return web.json_response({"error": f"version: expected \"4\", got {payload.version!r}"},
                                     status=400)
        try:
            entry_id = await inbox.add(body.decode())
        except Exception as exc:  # disk full, locked database...: Alertmanager must retry
            log.error("cannot store an Alertmanager notification: %s", exc)
            return web.json_response({"error": "cannot store the notification now; retry"}, status=503)
        accepted(entry_id)
        return web.json_response({"status": "accepted", "id": entry_id})

    return handle


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None when it is larger than ``limit`` (declared or, when chunked, as it
    arrives: reading stops at ``limit + 1`` bytes). ``StreamReader.read(n)`` returns what is
    buffered so far, not ``n`` bytes: a body sent in several TCP writes needs the loop."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:  # end of the body
            return bytes(body)
        body += chunk
    return None


def _too_large(limit: int) -> web.Response:
    return web.json_response({"error": f"body larger than {limit} bytes "
                                       "(alertmanager.max_body_bytes; lower max_alerts in the receiver)"},
                             status=413)
