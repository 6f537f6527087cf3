"""Mattermost-style identifiers and timestamps."""

from __future__ import annotations

import base64
import secrets
import time

# Mattermost's NewId(): 16 random bytes, base32 with this alphabet, padding dropped -> 26 chars.
_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ENCODING = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id() -> str:
    return base64.b32encode(secrets.token_bytes(16)).translate(_ENCODING).decode()[:26]


def now_ms() -> int:
    return int(time.time() * 1000)
