"""Property-based fuzzing of every HTTP endpoint of a running bot (hypothesis, seeded and
bounded): whatever arrives, the answer is never a 5xx, always comes within the timeout, and
nothing is posted or opened in Mattermost (issue 12)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from bot.runtime import Runtime

pytestmark = pytest.mark.asyncio

EXAMPLES = 40
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))
TIMEOUT_S = 10.0  # "no hang": every answer within this

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
# JSON-ish bytes: valid documents, truncated ones, raw bytes and pathological nesting.
json_bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()[:-1]),
    st.binary(max_size=200),
    st.integers(1, 20000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
)
words = st.sampled_from(["audit", "share", "help", "search", "fix", "list", "nosuch", "vault-status"])
args = st.lists(st.text(max_size=12) | st.sampled_from(["²", "١٢", "9" * 30, "#1", "-1", "x=@all"]),
                max_size=3)
texts = st.tuples(words, args).map(lambda t: " ".join([t[0], *t[1]]))
raw_forms = st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode))
def _header(b: bytes) -> bytes:  # what HTTP can carry: no control characters, no edge spaces
    return bytes(c for c in b if c >= 0x20 and c != 0x7F).strip()


headers = st.one_of(st.binary(max_size=40).map(lambda b: _header(b"Bearer " + b)),
                    st.text(max_size=40).map(lambda t: _header(t.encode())))


class Fuzzer:
    """Sends requests from a worker thread while the bot serves on the test's event loop."""

    def __init__(self, sb):
        self.sb = sb
        self.http = httpx.Client(base_url=sb.bot_url, timeout=TIMEOUT_S)
        self.statuses: list[int] = []

    def check(self, resp: httpx.Response) -> None:
        self.statuses.append(resp.status_code)
        assert resp.status_code < 500, (resp.request.url, resp.status_code, resp.text[:200])
        assert "Traceback" not in resp.text

    def run(self) -> None:
        sb = self.sb
        form_ct = {"Content-Type": "application/x-www-form-urlencoded"}

        @FUZZ
        @seed(1201)
        @given(body=raw_forms)
        @example(body=b"token=\xff\xfe&text=\xc3\x28")
        def slash_raw(body: bytes) -> None:
            self.check(self.http.post("/mattermost/command", content=body, headers=form_ct))

        @FUZZ
        @seed(1202)
        @given(text=texts, user=st.text(max_size=10), channel=st.text(max_size=10))
        @example(text="audit ²", user="u", channel="c")
        @example(text="share ²", user="u", channel="c")
        @example(text="share " + "9" * 30, user="u", channel="c")
        def slash_commands(text: str, user: str, channel: str) -> None:
            form = {"token": sb.mattermost.slash_token, "text": text, "user_id": user or "u",
                    "user_name": user or "u", "channel_id": channel or "c", "team_id": "t"}
            self.check(self.http.post("/mattermost/command", data=form))

        @FUZZ
        @seed(1203)
        @given(body=json_bodies, auth=headers, good=st.booleans())
        @example(body=b"[" * 10000 + b"]" * 10000, auth=b"", good=True)
        @example(body=b"{}", auth=b"Bearer \xff\xfe\xfd", good=False)
        def webhook(body: bytes, auth: bytes, good: bool) -> None:
            value = f"Bearer {sb.alertmanager_token}".encode() if good else auth
            self.check(self.http.post("/alertmanager", content=body,
                                      headers={"Content-Type": "application/json", "Authorization": value}))

        @FUZZ
        @seed(1204)
        @given(body=json_bodies)
        @example(body=b'{"a":' * 3000 + b"1" + b"}" * 3000)
        def dialog(body: bytes) -> None:
            self.check(self.http.post("/mattermost/dialog", content=body,
                                      headers={"Content-Type": "application/json"}))

        @FUZZ
        @seed(1205)
        @given(path=st.sampled_from(["/healthz", "/readyz", "/metrics"]), query=st.text(max_size=20))
        def gets(path: str, query: str) -> None:
            self.check(self.http.get(path, params={"q": query}))

        for fuzz in (slash_raw, slash_commands, webhook, dialog, gets):
            fuzz()


async def test_no_input_to_any_endpoint_gets_a_5xx_hangs_or_posts(sandbox):
    runtime = Runtime(sandbox.settings(alertmanager={"webhook_token": sandbox.alertmanager_token}))
    await runtime.start()
    fuzzer = Fuzzer(sandbox)
    try:
        await asyncio.to_thread(fuzzer.run)
        await runtime.bot.drain()
    finally:
        fuzzer.http.close()
        await runtime.stop()
    assert len(fuzzer.statuses) >= 5 * EXAMPLES
    assert {400, 401} <= set(fuzzer.statuses)  # malformed and unauthenticated were both seen
    bot_id = sandbox.mattermost.user("sop-bot").id
    assert [p.message for p in sandbox.mattermost.posts.values() if p.user_id == bot_id] == []
    assert sandbox.mattermost.dialogs == {}
