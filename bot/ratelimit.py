"""Rate limits on commands that hit the platform's APIs (SOP runs, health checks): a token
bucket per user and one for everyone. A refusal says when to try again."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from bot.config import CommandRateLimitConfig


class TokenBucket:
    """``burst`` at once, then one more every ``refill_s`` seconds."""

    def __init__(self, burst: int, refill_s: float, now: float):
        self.burst = burst
        self.refill_s = refill_s
        self.tokens = float(burst)
        self.at = now

    def _fill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) / self.refill_s)
        self.at = now

    def wait_s(self, now: float) -> float:
        """Seconds until a token is there (0: now)."""
        self._fill(now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.refill_s

    def take(self) -> None:
        self.tokens -= 1

    def full(self, now: float) -> bool:
        self._fill(now)
        return self.tokens >= self.burst


class CommandLimiter:
    def __init__(self, config: CommandRateLimitConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self._users: dict[str, TokenBucket] = {}
        self._global = TokenBucket(config.global_burst, config.global_refill_s, clock())
        self.refused = 0  # metrics, tests

    def check(self, user_id: str, user_name: str = "") -> str | None:
        """None and one token taken from both buckets, or the refusal to show the user."""
        if not self.config.enabled:
            return None
        now = self.clock()
        user = self._user(user_id, now)
        wait_user, wait_all = user.wait_s(now), self._global.wait_s(now)
        if wait_user == 0 and wait_all == 0:
            user.take()
            self._global.take()
            return None
        self.refused += 1
        c = self.config
        if wait_user >= wait_all:
            why = (f"you started {c.per_user_burst} runs in a short time (at most {c.per_user_burst} "
                   f"at once, then one every {c.per_user_refill_s:g} s)")
        else:
            why = (f"the bot is running many commands for everyone right now (at most "
                   f"{c.global_burst} at once, then one every {c.global_refill_s:g} s)")
        wait = max(1, math.ceil(max(wait_user, wait_all)))
        at = datetime.now(timezone.utc) + timedelta(seconds=wait)
        return f":hourglass: Not run: {why}. Try again in {wait} s (after {at:%H:%M:%S} UTC)."

    def _user(self, user_id: str, now: float) -> TokenBucket:
        bucket = self._users.get(user_id)
        if bucket is None:
            if len(self._users) >= 10_000:  # forget users whose bucket refilled: nothing to remember
                self._users = {k: b for k, b in self._users.items() if not b.full(now)}
            bucket = self._users[user_id] = TokenBucket(self.config.per_user_burst,
                                                        self.config.per_user_refill_s, now)
        return bucket
