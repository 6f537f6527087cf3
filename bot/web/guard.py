"""One aiohttp middleware for every endpoint: malformed input is a 400 (never a 500 with a
traceback), and every answer is redacted (bot.redact) before it leaves.

Handlers parse their own bodies; what they cannot parse raises one of the errors below, which
say "the client sent something unreadable", not "the bot is broken":
- ``UnicodeError``: a non-UTF-8 form body, a non-latin-1 ``Authorization`` header compared
  as bytes;
- ``RecursionError``: deeply nested JSON (``json.loads`` recurses per level);
- ``ValueError`` from parsing (bad JSON, bad numbers, ``int("²")``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from bot.redact import redact

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MALFORMED = (UnicodeError, RecursionError, ValueError)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except MALFORMED as exc:
        log.warning("%s %s: malformed request (%s)", request.method, request.path,
                    exc.__class__.__name__)
        return web.json_response({"error": "malformed request"}, status=400)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": "internal error"}, status=500)
    # /metrics carries counters only (bounded labels, never user text).
    return response if request.path == "/metrics" else _redacted(response)


def _redacted(response: web.StreamResponse) -> web.StreamResponse:
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes | bytearray):
        return response
    ctype = response.content_type
    if ctype == "application/json":
        try:
            data = json.loads(response.body)
        except ValueError:
            return response
        clean = redact.deep(data)
        if clean != data:
            response.body = json.dumps(clean).encode()
    elif ctype.startswith("text/"):
        text = response.body.decode(response.charset or "utf-8", errors="replace")
        clean = redact(text)
        if clean != text:
            response.text = clean
    return response
