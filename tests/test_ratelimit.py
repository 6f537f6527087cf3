"""The command rate limits' arithmetic with a hand-driven clock: burst, refill, retry time."""

from __future__ import annotations

import re

from bot.config import CommandRateLimitConfig
from bot.ratelimit import CommandLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_user_gets_the_burst_then_one_per_refill_and_is_told_how_long_to_wait():
    clock = Clock()
    limiter = CommandLimiter(CommandRateLimitConfig(per_user_burst=2, per_user_refill_s=10,
                                                    global_burst=100, global_refill_s=1), clock)
    assert limiter.check("u1") is None and limiter.check("u1") is None
    refusal = limiter.check("u1")
    assert refusal is not None and "Try again in 10 s" in refusal
    clock.t += 4
    assert "Try again in 6 s" in (limiter.check("u1") or "")
    assert limiter.check("u2") is None  # another user's bucket is full
    clock.t += 6
    assert limiter.check("u1") is None  # one refilled
    assert limiter.check("u1") is not None
    assert limiter.refused == 3


def test_the_global_bucket_limits_everyone_together_and_can_be_disabled():
    clock = Clock()
    cfg = CommandRateLimitConfig(per_user_burst=5, per_user_refill_s=1, global_burst=3, global_refill_s=4)
    limiter = CommandLimiter(cfg, clock)
    assert [limiter.check(f"u{i}") for i in range(3)] == [None, None, None]
    refusal = limiter.check("u9")
    assert refusal is not None and "for everyone" in refusal
    assert re.search(r"Try again in 4 s \(after \d\d:\d\d:\d\d UTC\)", refusal)
    off = CommandLimiter(cfg.model_copy(update={"enabled": False}), clock)
    assert all(off.check("u1") is None for _ in range(50))
