"""Structured logs: text or JSON lines, a correlation id per command/alert/approval, and a last
line of defence that masks every configured secret in whatever is logged."""

from __future__ import annotations

import json
import logging
import secrets as _secrets
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime, timezone

from bot.redact import redact, remember_all

correlation_id: ContextVar[str] = ContextVar("correlation_id", default="-")

# Libraries that log every HTTP request at INFO: one line per post is noise at 3 a.m.
_CHATTY = ("httpx", "httpcore", "urllib3", "hvac", "aiohttp.access", "apscheduler.executors.default",
           # aiosqlite logs every statement with its parameters at DEBUG: shares, PEMs.
           "aiosqlite")


def new_id(kind: str) -> str:
    return f"{kind}-{_secrets.token_hex(4)}"


@contextmanager
def correlate(cid: str) -> Iterator[str]:
    """Tag every log line of this task (and the tasks it starts) with ``cid``."""
    token = correlation_id.set(cid)
    try:
        yield cid
    finally:
        correlation_id.reset(token)


class _Context(logging.Filter):
    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        remember_all(secrets)  # one registry for logs and chat (bot.redact)

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            # A traceback quotes values too; formatters use exc_text when it is set.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
        }
        if record.exc_info:
            out["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup(level: str = "INFO", json_format: bool = False, secrets: Iterable[str] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(secrets))
    handler.setFormatter(JsonFormatter() if json_format else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
