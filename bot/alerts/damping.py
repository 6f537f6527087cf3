"""Noise control for one group's thread: at most ``limit`` diagnosis / "no SOP matches" replies
per group per window (the rest are folded into the root), and flap damping (a group that keeps
firing and resolving is diagnosed at most once per window)."""

from __future__ import annotations

from collections import deque


class ReplyBudget:
    """Replies posted per group id within the last ``window_s`` seconds (in memory: a restart
    allows one more window's worth, never more)."""

    def __init__(self, limit: int, window_s: float):
        self.limit = limit
        self.window_s = window_s
        self._sent: dict[int, deque[float]] = {}

    def left(self, group_id: int, now: float) -> int:
        sent = self._sent.get(group_id)
        if sent is None:
            return self.limit
        while sent and now - sent[0] >= self.window_s:
            sent.popleft()
        return max(0, self.limit - len(sent))

    def spend(self, group_id: int, now: float) -> bool:
        """Take one reply; False (nothing taken) when the group's budget is used up."""
        if self.left(group_id, now) <= 0:
            return False
        if len(self._sent) >= 10_000:  # forget groups with nothing in the window
            self._sent = {g: d for g, d in self._sent.items() if d and now - d[-1] < self.window_s}
        self._sent.setdefault(group_id, deque()).append(now)
        return True


class Flaps:
    """When each group key last fired again after resolving."""

    def __init__(self, window_s: float):
        self.window_s = window_s
        self._reopened: dict[str, float] = {}

    def reopened(self, group_key: str, now: float) -> None:
        if len(self._reopened) >= 10_000:
            self._reopened = {k: t for k, t in self._reopened.items() if now - t < self.window_s}
        self._reopened[group_key] = now

    def flapping(self, group_key: str, now: float) -> bool:
        t = self._reopened.get(group_key)
        return t is not None and now - t < self.window_s
