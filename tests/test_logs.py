"""Logs: a correlation id per command, JSON on request, and no secret ever printed."""

import json
import logging

import pytest

from bot import logs


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level for n in logs._CHATTY}
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    for name, level in saved[2].items():
        logging.getLogger(name).setLevel(level)


def test_json_lines_carry_the_correlation_id_and_mask_secrets(capsys):
    logs.setup("INFO", json_format=True, secrets=["hvs.super-secret-token", "abc"])
    log = logging.getLogger("sopbot.test")
    with logs.correlate("cmd-1234"):
        log.info("calling vault with %s", "hvs.super-secret-token")
    log.warning("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["correlation_id"] == "cmd-1234"
    assert lines[0]["message"] == "calling vault with **********"
    assert lines[1]["correlation_id"] == "-" and lines[1]["level"] == "WARNING"
    # Chatty HTTP libraries are quiet at INFO.
    assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING


def test_text_format_shows_the_id(capsys):
    logs.setup("DEBUG", json_format=False)
    with logs.correlate("alert-42"):
        logging.getLogger("sopbot.test").debug("routed")
    assert "[alert-42] routed" in capsys.readouterr().err
