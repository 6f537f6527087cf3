"""Concurrent requests for the same run (same SOP or health check, same arguments, same
channel) share one run: thirty ``/sop health`` at once make one report, not thirty. Who asks
while it runs is told where the report will be, and mentioned in its thread once it is there."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


@dataclass
class Run:
    key: Hashable
    label: str  # what runs, for people: "`/sop health`"
    channel_id: str
    started_by: str
    started_at: float = field(default_factory=time.monotonic)
    root_id: str | None = None  # the thread the report goes to, once posted
    joiners: list[str] = field(default_factory=list)

    def join(self, user_name: str) -> None:
        if user_name != self.started_by and user_name not in self.joiners:
            self.joiners.append(user_name)

    def joined_text(self, permalink: Callable[[str], str] | None) -> str:
        ago = max(0, int(time.monotonic() - self.started_at))
        if self.root_id:
            where = f"[its thread]({permalink(self.root_id)})" if permalink else "its thread in this channel"
        else:
            where = f"the thread @{self.started_by}'s request opens in this channel"
        return (f"{self.label} with the same arguments is already running (started by "
                f"@{self.started_by} {ago} s ago): not starting another. The report will appear in "
                f"{where}; you will be mentioned there.")

    def joiners_text(self) -> str:
        return (" ".join(f"@{u}" for u in self.joiners)
                + f": you asked for {self.label} while it ran; this thread has the report.")


class Runs:
    """The runs in flight, by key."""

    def __init__(self) -> None:
        self._runs: dict[Hashable, Run] = {}
        self.joined = 0  # requests that joined a run instead of starting one (metrics, tests)

    def get(self, key: Hashable) -> Run | None:
        return self._runs.get(key)

    def begin(self, key: Hashable, label: str, channel_id: str, user_name: str) -> Run:
        run = self._runs[key] = Run(key, label, channel_id, user_name)
        return run

    def end(self, run: Run) -> None:
        if self._runs.get(run.key) is run:
            del self._runs[run.key]

    def __len__(self) -> int:
        return len(self._runs)
