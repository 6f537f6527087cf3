"""Planted secrets never leave the bot: a scan of every post, uploaded file, dialog, slash
answer, log line and store row after hostile traffic finds none of them (issue 12)."""

from __future__ import annotations

import io
import logging
import secrets
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from bot import logs
from bot.config import secret_values
from bot.redact import redact
from bot.runtime import Runtime
from tests.test_slash_e2e import run_as

pytestmark = pytest.mark.asyncio

PEM_BODY = "MIIEowIBAAKCAQEA" + secrets.token_hex(24)
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
STRANGER = secrets.token_urlsafe(24)  # a bearer token the bot was never told about
SHARE = secrets.token_hex(33)  # a Vault key share's shape, typed where it should not be


def scan(canaries: dict[str, str], places: dict[str, str]) -> list[str]:
    return [f"{name} in {where}" for where, blob in places.items()
            for name, value in canaries.items() if value in blob]


def everything(sb, log_text: str, answers: list[str], db: Path) -> dict[str, str]:
    mm = sb.mattermost
    places = {f"post {p.id}": p.message + repr(p.props) for p in mm.posts.values()}
    places |= {f"file {fid}": data.decode(errors="replace") for fid, (_, data) in mm.files.items()}
    places |= {f"ephemeral {i}": repr(e) for i, e in enumerate(mm.ephemerals)}
    places |= {f"dialog {k}": repr(d) for k, d in mm.dialogs.items()}
    places |= {f"answer {i}": a for i, a in enumerate(answers)}
    places["log"] = log_text
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            places[f"table {t}"] = "\n".join(map(repr, conn.execute(f'SELECT * FROM "{t}"')))
    return places


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


async def test_planted_canaries_appear_in_no_post_file_log_line_or_store_row(sandbox, restore_logging):
    settings = sandbox.settings()
    bot_token = sandbox.mattermost.tokens["sop-bot"]
    canaries = {"bot token": bot_token, "slash token": sandbox.mattermost.slash_token,
                "alertmanager token": sandbox.alertmanager_token,
                "vault token": sandbox.platform.vault.root_token,
                "PEM": PEM_BODY, "stranger bearer": STRANGER, "key share": SHARE}
    stream = io.StringIO()
    logs.setup("DEBUG", secrets=secret_values(settings))
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]
    runtime = Runtime(settings)
    await runtime.start()
    answers: list[str] = []
    try:
        now = datetime.now(timezone.utc)
        body = {
            "version": "4", "groupKey": '{}:{alertname="VaultSealed"}', "truncatedAlerts": 0,
            "status": "firing", "receiver": "sopbot", "groupLabels": {"alertname": "VaultSealed"},
            "commonLabels": {}, "externalURL": "http://am.example:9093",
            "commonAnnotations": {"summary": f"Authorization: Bearer {bot_token}"},
            "alerts": [{"status": "firing", "fingerprint": "c0ffee",
                        "labels": {"alertname": "VaultSealed", "namespace": "vault",
                                   "leak": sandbox.alertmanager_token},
                        "annotations": {"description": f"key:\n{PEM}", "runbook": f"Bearer {STRANGER}"},
                        "startsAt": (now - timedelta(minutes=1)).isoformat(),
                        "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom.example/graph"}],
        }
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.post(f"{sandbox.bot_url}/alertmanager", json=body,
                                   headers={"Authorization": f"Bearer {sandbox.alertmanager_token}"})
            assert resp.status_code == 200, resp.text
            answers.append(resp.text)
        for command in (f"/sop vault-status replica={bot_token}",
                        f"/sop etcd-health instance={sandbox.mattermost.slash_token}",
                        f"/sop fix restart namespace=vault kind=statefulset name={SHARE}",
                        f"/sop nosuch-{STRANGER}"):
            resp = await run_as(sandbox, "alice", command)
            answers.append(resp.text)
        logging.getLogger("bot.test").debug("an error quoting Authorization: Bearer %s", STRANGER)
        await runtime.bot.drain()
        await runtime.chat.queue.drain()
    finally:
        await runtime.stop()
    log_text = stream.getvalue()
    posts = [p.message for p in sandbox.mattermost.posts.values()]
    assert any("vault-status" in m for m in posts) and any("VaultSealed" in m for m in posts)
    assert "**********" in "".join(posts)  # the values were there, masked
    places = everything(sandbox, log_text, answers, Path(settings.store.path))
    assert scan(canaries, places) == [], [l for l in log_text.splitlines() if STRANGER in l]

    # The scan sees a leak: a canary written past the redaction layer is found.
    stream.write(f"leaked {bot_token}\n")
    assert scan(canaries, everything(sandbox, stream.getvalue(), answers,
                                     Path(settings.store.path))) == ["bot token in log"]


async def test_redaction_masks_known_and_shaped_secrets_and_leaves_ordinary_text():
    redact.remember("configured-secret-123456")
    assert redact("x configured-secret-123456 y") == "x ********** y"
    assert "eyJ" not in redact("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlMTIz")
    assert "hvs." not in redact("token hvs.CAESIJ1234567890abcdefghijklmnopq")
    assert redact(f"name={SHARE}") == "name=**********"
    for ordinary in ("the access token was rejected", "secret: vault-server-tls-2024",
                     "image sha256:" + "a" * 64, "/usr/local/share/some/long/path/file.txt",
                     "6/6 nodes Ready (expected 6)"):
        assert redact(ordinary) == ordinary
