"""The last filter on everything the bot sends or writes down: posts, edits, uploaded files,
dialogs, slash replies, HTTP error answers, log lines and stored alert data.

Masks what the bot knows to be secret (configured secrets; Vault tokens and key shares it saw
this run) and what looks secret whatever its source: PEM private keys, ``Authorization``
headers, bearer tokens, JWTs, Vault tokens, Vault key shares, and long values after a secret-ish
key (``token=…``, ``"password": "…"``). One process-wide registry: secrets come from config at
start and from the unseal path at run time, and every outbound path must see all of them.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

MASK = "**********"
_MIN_LEN = 6  # shorter "secrets" would mask ordinary words

_PATTERNS = [
    # PEM private keys, whole block (or to the end when the footer is cut off).
    re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"),
    # Authorization / Proxy-Authorization headers, whatever the scheme.
    re.compile(r"(?i)((?:proxy-)?authorization\s*[:=]\s*)(?:[A-Za-z]+\s+)?[^\s,;\"']+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]{12,}"),
    # JWT: three base64url parts, the first two JSON objects ("eyJ").
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    # Vault service/batch/recovery tokens (hvs./hvb./hvr.) and the legacy s./b./r. ones.
    re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{20,}"),
    # A Vault key share: 33 bytes, as hex (66) or base64 (44).
    re.compile(r"(?<![0-9A-Fa-f])[0-9A-Fa-f]{66}(?![0-9A-Fa-f])"),
    re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{43}[A-Za-z0-9+/=](?![A-Za-z0-9+/=])"),
    # A long value right after a secret-ish key: token=…, "password": "…", secret: …
    re.compile(r"(?i)((?:token|secret|password|passwd|api[_-]?key|unseal[_-]?key|key[_-]?share|share|"
               r"private[_-]?key|credential)s?[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._~+/=-]{16,}"),
]
_BASE64_44 = _PATTERNS[6]
_KEYED = _PATTERNS[7]


class Redactor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: list[str] = []

    def remember(self, *secrets: str | None) -> None:
        """Mask these from now on (configured secrets, a share or token seen at run time)."""
        with self._lock:
            known = set(self._secrets)
            known.update(s.strip() for s in secrets if s and len(s.strip()) >= _MIN_LEN)
            # Longest first, so a secret containing another is masked whole.
            self._secrets = sorted(known, key=len, reverse=True)

    def forget_all(self) -> None:  # tests
        with self._lock:
            self._secrets = []

    def __call__(self, value: str) -> str:
        if not value:
            return value
        out = value
        for secret in self._secrets:
            if secret in out:
                out = out.replace(secret, MASK)
        for pattern in _PATTERNS:
            if pattern is _BASE64_44:
                out = pattern.sub(_base64_share, out)
            elif pattern is _KEYED:
                out = pattern.sub(_keyed, out)
            elif pattern.groups:
                out = pattern.sub(lambda m: m.group(1) + MASK, out)
            else:
                out = pattern.sub(MASK, out)
        return out

    def deep(self, value: Any) -> Any:
        """Every string in a JSON-like structure (a dialog, stored alert data) redacted."""
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.deep(v) for v in value]
        return value


def _base64_share(m: re.Match[str]) -> str:
    # 44 base64 characters with both cases and a digit: a key share, not a word or a path.
    s = m.group(0)
    mixed = any(c.islower() for c in s) and any(c.isupper() for c in s) and any(c.isdigit() for c in s)
    return MASK if mixed else s


def _keyed(m: re.Match[str]) -> str:
    # After "secret:" a name like vault-server-tls-2024 is information; a random value is not.
    value = m.group(0)[len(m.group(1)):]
    digits = sum(c.isdigit() for c in value)
    letters = sum(c.isalpha() for c in value)
    random_ish = digits >= 3 and letters >= 3 and value.count("-") <= 2
    return m.group(1) + MASK if random_ish else m.group(0)


redact = Redactor()


def remember(*secrets: str | None) -> None:
    redact.remember(*secrets)


def remember_all(secrets: Iterable[str]) -> None:
    redact.remember(*secrets)
