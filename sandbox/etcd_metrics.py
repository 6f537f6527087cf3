"""etcd's /metrics on each control-plane node (RKE2 serves them on :2381), as the sandbox
exporter's series: a ``member`` label names the member, and the sandbox Prometheus relabels those
series to ``job="etcd"``, ``instance=<member>`` (sandbox/prometheus.py), so the bot's PromQL sees
three scrape targets as a real Prometheus scraping the three members would, ``up`` included.

Counters and histogram buckets grow at each scrape (100 WAL fsyncs and 100 peer round trips per
scrape at the member's current latency), so ``rate()`` and ``histogram_quantile`` see a trend."""

from __future__ import annotations

from dataclasses import dataclass, field

from sandbox.exporter import Exporter

PORT = 2381
FSYNC_BUCKETS = [0.001 * 2 ** i for i in range(14)]   # etcd's own layouts (wal/metrics.go)
RTT_BUCKETS = [0.0001 * 2 ** i for i in range(16)]    # (rafthttp/metrics.go)
PER_SCRAPE = 100


@dataclass
class _Histogram:
    buckets: list[float]
    latency: float
    counts: list[float] = field(default_factory=list)
    seen: int = 0  # the last scrape number counted

    def advance(self, scrape: int) -> None:
        if not self.counts:
            self.counts = [0.0] * (len(self.buckets) + 1)
        while self.seen < scrape:  # one batch per scrape, at the latency of that moment
            self.seen += 1
            for i, le in enumerate(self.buckets):
                if self.latency <= le:
                    self.counts[i] += PER_SCRAPE
            self.counts[-1] += PER_SCRAPE

    def bucket(self, i: int):  # noqa: ANN201 - the exporter's Value callable
        def value(scrape: int) -> float:
            self.advance(scrape)
            return self.counts[i]
        return value


@dataclass
class Member:
    instance: str
    fsync: _Histogram = field(default_factory=lambda: _Histogram(FSYNC_BUCKETS, 0.002))
    rtt: _Histogram = field(default_factory=lambda: _Histogram(RTT_BUCKETS, 0.004))
    up: bool = True
    leader: bool = False


def members(metrics: Exporter) -> dict[str, Member]:
    return metrics.__dict__.setdefault("etcd_members", {})


def install(metrics: Exporter, ips: list[str]) -> None:
    """A healthy three-member etcd: all up, the first the leader, 2 ms fsync, 4 ms round trips."""
    for i, ip in enumerate(ips):
        m = Member(f"{ip}:{PORT}", leader=i == 0)
        members(metrics)[m.instance] = m
        publish(metrics, m)


def publish(metrics: Exporter, m: Member) -> None:
    """(Re)serve one member's series; a member that is down serves only up 0, as a failed scrape."""
    label = {"member": m.instance}
    for name in ("etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
                 "etcd_mvcc_db_total_size_in_bytes", "etcd_server_quota_backend_bytes",
                 "etcd_disk_wal_fsync_duration_seconds_bucket", "etcd_network_peer_round_trip_time_seconds_bucket"):
        metrics.remove(name, member=m.instance)
    metrics.set("up", label, 1 if m.up else 0)
    if not m.up:
        return
    metrics.set("etcd_server_has_leader", label, 1, "Whether or not a leader exists. 1 is existence, 0 is not.")
    metrics.set("etcd_server_is_leader", label, 1 if m.leader else 0)
    metrics.set("etcd_server_leader_changes_seen_total", label, 1)
    metrics.set("etcd_mvcc_db_total_size_in_bytes", label, 41_943_040)
    metrics.set("etcd_server_quota_backend_bytes", label, 2 * 1024 ** 3)
    for name, hist, extra in (("etcd_disk_wal_fsync_duration_seconds_bucket", m.fsync, {}),
                              ("etcd_network_peer_round_trip_time_seconds_bucket", m.rtt, {"To": "8e9e05c52164694d"})):
        for i, le in enumerate(hist.buckets):
            metrics.set(name, {**label, **extra, "le": f"{le:g}"}, hist.bucket(i))
        metrics.set(name, {**label, **extra, "le": "+Inf"}, hist.bucket(len(hist.buckets)))
