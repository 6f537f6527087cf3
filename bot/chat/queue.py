"""One ordered write queue for every Mattermost write, with a client-side rate limiter and the
retry policy (429 → wait as told, 5xx / connection errors → backoff, other 4xx → fail).

A single worker runs one job at a time, so writes reach the server in submission order even
while it waits out a 429: the waiting request is retried before anything queued behind it.
A job may make several requests (upload a file, then the post that carries it); each request
takes its own limiter token and is retried on its own, so nothing is sent twice.
The driver's own retries are switched off (``max_retries=0``): its sleeps cannot be injected
and it never retries a POST on 5xx.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

import httpx
from mattermostautodriver.exceptions import (
    FeatureDisabled,
    InvalidMattermostError,
    MattermostError,
    TooManyRequests,
)

from bot.chat.errors import ChatError

log = logging.getLogger(__name__)

T = TypeVar("T")
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
Call = Callable[[], Awaitable[T]]


class Send(Protocol):
    """What a job gets: ``await send(call, what)`` runs one request through limiter and retries."""

    async def __call__(self, call: Call[T], what: str) -> T: ...


Job = Callable[[Send], Awaitable[T]]


class TokenBucket:
    """``rate_per_s`` tokens per second, at most ``burst`` saved up; burst=1 is fixed spacing."""

    def __init__(self, rate_per_s: float, burst: int = 1, *, clock: Clock = time.monotonic,
                 sleep: Sleep = asyncio.sleep):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    async def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds slept."""
        waited = 0.0
        self._refill()
        while self._tokens < 1.0 - 1e-9:  # float slack: 0.3 - 0.2 is not quite 0.1
            wait = (1.0 - self._tokens) / self.rate_per_s
            await self._sleep(wait)
            waited += wait
            self._refill()
        self._tokens = max(self._tokens - 1.0, 0.0)
        return waited


@dataclass(frozen=True)
class Verdict:
    kind: Literal["rate_limited", "retry", "fail"]
    reason: str
    status: int | None = None
    wait_s: float | None = None


def classify(exc: Exception) -> Verdict:
    """How the retry policy treats one failed request."""
    if isinstance(exc, TooManyRequests):
        return Verdict("rate_limited", "rate limited", 429, exc.retry_after)
    if isinstance(exc, (MattermostError, InvalidMattermostError)):
        status = exc.status_code
        reason = _short(str(exc)) or exc.__class__.__name__
        # 501 means "feature disabled": retrying will not switch it on.
        if status >= 500 and not isinstance(exc, FeatureDisabled) and status != 501:
            return Verdict("retry", f"server error: {reason}", status)
        if status == 401:
            reason = "the access token was rejected"
        return Verdict("fail", reason, status)
    if isinstance(exc, httpx.TimeoutException):
        return Verdict("retry", f"no answer in time ({exc.__class__.__name__})")
    if isinstance(exc, httpx.TransportError):
        return Verdict("retry", f"connection failed ({exc.__class__.__name__})")
    return Verdict("fail", _short(str(exc)) or exc.__class__.__name__)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class _Item(Generic[T]):
    job: Job[T]
    what: str
    future: asyncio.Future[T]
    # The submitter's context (its correlation id): the worker runs the job in it, so a
    # failure is logged under the command that queued it, not the one that started the worker.
    context: contextvars.Context = field(default_factory=contextvars.copy_context)


class WriteQueue:
    """Ordered, rate-limited, retrying executor for Mattermost writes.

    Counters for metrics: ``depth`` (jobs waiting or running), ``sent`` (write requests that
    succeeded), ``rate_limited`` (429s seen), ``retries`` (5xx / connection retries),
    ``failed`` (jobs that ended in an error), ``waited_s`` (all seconds slept: limiter, 429 and
    backoff), ``rate_limited_wait_s`` (seconds slept on the server's say-so).
    """

    def __init__(self, rate_per_s: float = 10.0, *, burst: int = 1,
                 clock: Clock = time.monotonic, sleep: Sleep = asyncio.sleep,
                 max_attempts: int = 5, backoff_base_s: float = 0.5, backoff_max_s: float = 30.0,
                 max_rate_limited: int = 50, max_retry_after_s: float = 300.0,
                 rng: Callable[[], float] = random.random):
        self._limiter = TokenBucket(rate_per_s, burst, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._rng = rng
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_rate_limited = max_rate_limited
        self.max_retry_after_s = max_retry_after_s
        self._items: collections.deque[_Item[Any]] = collections.deque()
        self._urgent: collections.deque[_Item[Any]] = collections.deque()  # served first, FIFO
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self._running = 0
        self._closed = False
        self.sent = 0
        self.rate_limited = 0
        self.retries = 0
        self.failed = 0
        self.waited_s = 0.0
        self.rate_limited_wait_s = 0.0

    @property
    def depth(self) -> int:
        return len(self._items) + len(self._urgent) + self._running

    async def submit(self, job: Job[T], *, what: str, urgent: bool = False) -> T:
        """Queue a job and wait for its result. ``urgent`` jobs go ahead of the others (dialogs,
        whose trigger ids expire within seconds; thread roots that replies wait for); order is
        kept among the urgent jobs and among the others."""
        if self._closed:
            raise ChatError(what, "the chat adapter is closed")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        item = _Item(job, what, fut)
        (self._urgent if urgent else self._items).append(item)
        self._idle.clear()
        self._ensure_worker()
        self._wakeup.set()
        return await fut

    async def submit_call(self, call: Call[T], *, what: str, urgent: bool = False) -> T:
        """Queue a single request."""
        async def job(send: Send) -> T:
            return await send(call, what)
        return await self.submit(job, what=what, urgent=urgent)

    async def call(self, call: Call[T], *, what: str) -> T:
        """Run a read now, outside the queue and the limiter, with the same retry policy."""
        return await self._attempt(call, what, limited=False)

    async def drain(self) -> None:
        """Wait until every queued job has finished."""
        if self._worker is not None and not self._worker.done():
            await self._idle.wait()

    async def close(self, *, drain: bool = True, timeout_s: float | None = 30.0) -> None:
        """Refuse new jobs; let queued ones finish (up to ``timeout_s``), fail the rest."""
        self._closed = True
        if drain and self._worker is not None:
            try:
                async with asyncio.timeout(timeout_s):
                    await self.drain()
            except TimeoutError:
                log.warning("closing with %d chat writes still queued; they are dropped", self.depth)
        while self._urgent or self._items:
            item = (self._urgent or self._items).popleft()
            if not item.future.done():
                item.future.set_exception(ChatError(item.what, "the chat adapter was closed"))
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None

    def _ensure_worker(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="chat-writes")

    async def _work(self) -> None:
        while True:
            if not self._items and not self._urgent:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            item = (self._urgent or self._items).popleft()
            if item.future.done():  # the caller gave up before we started
                continue
            self._running = 1
            try:
                result = await asyncio.get_running_loop().create_task(
                    item.job(self._send), name="chat-write", context=item.context)
            except asyncio.CancelledError:
                if not item.future.done():
                    item.future.set_exception(ChatError(item.what, "the chat adapter was closed"))
                raise
            except Exception as exc:
                self.failed += 1
                if not item.future.done():
                    item.future.set_exception(exc)
            else:
                if not item.future.done():
                    item.future.set_result(result)
            finally:
                self._running = 0

    async def _send(self, call: Call[T], what: str) -> T:
        return await self._attempt(call, what, limited=True)

    async def _attempt(self, call: Call[T], what: str, *, limited: bool) -> T:
        failures = 0
        limited_count = 0
        while True:
            if limited:
                self.waited_s += await self._limiter.acquire()
            try:
                result = await call()
            except ChatError:
                raise
            except Exception as exc:
                verdict = classify(exc)
                if verdict.kind == "rate_limited":
                    self.rate_limited += 1
                    limited_count += 1
                    if limited_count > self.max_rate_limited:
                        raise ChatError(what, f"still rate limited after {limited_count} tries",
                                        429) from None
                    wait = verdict.wait_s
                    if wait is None:  # a 429 without Retry-After / X-RateLimit-Reset
                        wait = self._backoff(limited_count - 1)
                    wait = min(wait, self.max_retry_after_s)
                    log.info("%s: rate limited, retrying in %.2fs", what, wait)
                    self.rate_limited_wait_s += wait
                    await self._pause(wait)
                    continue
                if verdict.kind == "retry":
                    failures += 1
                    if failures >= self.max_attempts:
                        raise ChatError(what, f"{verdict.reason}; gave up after {failures} attempts",
                                        verdict.status) from None
                    self.retries += 1
                    wait = self._backoff(failures - 1)
                    log.warning("%s: %s, retrying in %.2fs", what, verdict.reason, wait)
                    await self._pause(wait)
                    continue
                raise ChatError(what, verdict.reason, verdict.status) from None
            if limited:
                self.sent += 1
            return result

    def _backoff(self, n: int) -> float:
        # Exponential, capped, with "equal jitter" (half fixed, half random) so retries from
        # several bots do not line up.
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** n))
        return ceiling / 2 + ceiling / 2 * self._rng()

    async def _pause(self, seconds: float) -> None:
        self.waited_s += seconds
        await self._sleep(seconds)
