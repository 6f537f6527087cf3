"""How long accepted work waits between delivery attempts, and when it is given up: capped
exponential backoff up to a horizon of hours. A 2xx to Alertmanager or an acknowledged ``/sop``
is a promise, so an outage of minutes must never exhaust it."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    base_s: float = 2.0
    max_s: float = 60.0
    horizon_s: float = 24 * 3600.0
    rng: Callable[[], float] = field(default=random.random, compare=False)

    @classmethod
    def from_config(cls, config: object) -> "Backoff":
        """From ``MattermostConfig``'s retry_base_s, retry_max_s and retry_horizon_h."""
        return cls(base_s=getattr(config, "retry_base_s"), max_s=getattr(config, "retry_max_s"),
                   horizon_s=getattr(config, "retry_horizon_h") * 3600.0)

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (1-based): half fixed, half jitter,
        so replicas and entries that failed together do not retry in lockstep."""
        ceiling = min(self.max_s, self.base_s * (2 ** min(max(attempts - 1, 0), 40)))
        return ceiling / 2 + ceiling / 2 * self.rng()

    def expired(self, accepted_at: float, now: float) -> bool:
        return now - accepted_at >= self.horizon_s
