"""Find the error lines a runbook names in a container log and quote a few, secrets redacted.

A SOP declares its patterns (``LogPattern("Vault is sealed", cause="...")``); the scan returns
the first matching lines per pattern, newest last, each cut to a readable width, with anything
that looks like a credential replaced by ``**********`` before it can reach a chat post."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

REDACTED = "**********"
# key=value / key: value / "key":"value" where the key names a credential; bearer tokens; URL
# user:password; PEM blocks; Vault tokens (hvs./s.) and JWTs.
_SECRETS = [
    re.compile(r"(?i)((?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]{8,})"),  # before "authorization: <scheme>"
    re.compile(r"(?i)((?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret"
               r"|authorization)\"?\s*[:=]\s*\"?)([^\s\",;&]+)"),
    re.compile(r"(://[^/\s:@]+:)([^@\s/]+)(@)"),
    re.compile(r"()(-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$))", re.S),
    re.compile(r"()(\bhv[sbr]\.[A-Za-z0-9_-]{20,}|\bs\.[A-Za-z0-9]{24}\b)"),
    re.compile(r"()(\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+)"),
]


def redact(text: str) -> str:
    for pattern in _SECRETS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED + (m.group(3) if m.lastindex and m.lastindex >= 3 else ""),
                           text)
    return text


class LogPattern(BaseModel):
    """A regex from the runbook's Diagnostic Steps and the root cause it points to."""

    model_config = ConfigDict(frozen=True)
    regex: str
    cause: str = ""
    flags: int = re.IGNORECASE


class LogHit(BaseModel):
    pattern: LogPattern
    lines: list[str]  # redacted, at most ``quote`` per pattern
    count: int  # all matching lines


def scan(text: str, patterns: Iterable[LogPattern], *, quote: int = 3, width: int = 240) -> list[LogHit]:
    """Hits in declaration order (the first pattern is the most specific cause)."""
    lines = text.splitlines()
    hits = []
    for p in patterns:
        rx = re.compile(p.regex, p.flags)
        found = [line for line in lines if rx.search(line)]
        if found:
            # The last lines are the most recent: those are quoted.
            quoted = [_cut(redact(line.strip()), width) for line in found[-quote:]]
            hits.append(LogHit(pattern=p, lines=quoted, count=len(found)))
    return hits


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"
