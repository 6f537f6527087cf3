"""The sandbox's exporter metrics: gauges that the platform's exporters would serve (CNPG's
instance exporter, mysqld_exporter on the Galera nodes, redis_exporter on the Sentinels, …),
kept as plain state that scenarios change, served at ``/metrics`` in the Prometheus text
exposition format. A real Prometheus scrapes it when the sandbox runs with ``prometheus=True``
(``sandbox.prometheus``), so the bot's PromQL is evaluated by the real engine.

A value may be a callable of the scrape count: a lag that grows scrape after scrape is a real
trend to ``deriv()``, not a made-up answer."""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

Value = float | Callable[[int], float]
Labels = tuple[tuple[str, str], ...]


def _labels(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


VERSION_METRIC = "sandbox_exporter_version"


@dataclass
class Exporter:
    """Gauge families by metric name → label set → value."""

    families: dict[str, dict[Labels, Value]] = field(default_factory=dict)
    help: dict[str, str] = field(default_factory=dict)
    scrapes: int = 0
    version: int = 0  # bumped by every change: the runner waits for a scrape after one
    # Which exporter this is: every scrape carries VERSION_METRIC{exporter=<id>} = version, so
    # the runner can ask Prometheus whether a scrape after a change was stored (not only served:
    # on a loaded machine Prometheus may give up on a scrape it was being served).
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    # Scrapes come from the shared Prometheus's proxy thread (sandbox.prometheus), changes from the loop.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def set(self, name: str, labels: dict[str, str], value: Value, help_text: str = "") -> None:
        with self._lock:
            self.families.setdefault(name, {})[_labels(labels)] = value
            if help_text:
                self.help[name] = help_text
            self.version += 1

    def get(self, name: str, labels: dict[str, str]) -> Value | None:
        return self.families.get(name, {}).get(_labels(labels))

    def remove(self, name: str, **match: str) -> int:
        """Drop the series of ``name`` whose labels include ``match``; how many were dropped."""
        with self._lock:
            series = self.families.get(name, {})
            gone = [k for k in series if all(dict(k).get(a) == b for a, b in match.items())]
            for k in gone:
                del series[k]
            self.version += 1
            return len(gone)

    def text(self) -> str:
        """One scrape: the exposition text (each callable evaluated with this scrape's number)."""
        with self._lock:
            return self._text()

    def _text(self) -> str:
        self.scrapes += 1
        out: list[str] = []
        for name in sorted(self.families):
            series = self.families[name]
            if not series:
                continue
            if name in self.help:
                out.append(f"# HELP {name} {self.help[name]}")
            out.append(f"# TYPE {name} gauge")
            for labels, value in series.items():
                v = value(self.scrapes) if callable(value) else value
                body = ",".join(f'{k}="{_escape(val)}"' for k, val in labels)
                out.append(f"{name}{{{body}}} {_number(v)}" if body else f"{name} {_number(v)}")
        out += [f"# TYPE {VERSION_METRIC} gauge", f'{VERSION_METRIC}{{exporter="{self.id}"}} {self.version}']
        return "\n".join(out) + "\n"
