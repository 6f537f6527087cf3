"""Prometheus metrics, served at ``GET /metrics`` by the bot's web app.

Each ``Runtime`` owns one ``Metrics`` with its own ``CollectorRegistry`` (several bots in one test
process must not share counters). Event counts are prometheus-client counters incremented where
the event happens; chat queue and websocket figures are read from the objects that already count
them (``WriteQueue``, ``EventSupervisor``) by a collector at scrape time.

Label values come from bounded sets only (SOP ids, subcommand names, configured schedule names,
action names, fixed reasons): never user text, arguments or secrets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.models import Report

# SOP runs: quick API reads up to the 60 s handler timeout.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# Why a webhook or slash command was refused, by the HTTP status the bot answered.
REJECT_REASONS = {400: "invalid", 401: "unauthorized", 413: "too_large", 503: "unavailable"}

APPROVAL_OUTCOMES = frozenset({"approved", "rejected", "expired"})
REMEDIATION_RESULTS = frozenset({"succeeded", "failed", "stale", "interrupted"})


def reject_reason(status: int) -> str:
    return REJECT_REASONS.get(status, "other")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.webhooks_received = Counter(
            "sopbot_webhooks_received", "Alertmanager webhook requests received (accepted or not)",
            registry=r)
        self.webhooks_rejected = Counter(
            "sopbot_webhooks_rejected", "Alertmanager webhook requests refused, by reason",
            ["reason"], registry=r)
        self.alerts_routed = Counter(
            "sopbot_alerts_routed", "Alert diagnoses run, by the SOP the alert was routed to",
            ["sop"], registry=r)
        self.handler_duration = Histogram(
            "sopbot_handler_duration_seconds", "SOP handler run time (slash commands, alerts, health)",
            ["sop"], buckets=DURATION_BUCKETS, registry=r)
        self.findings = Counter(
            "sopbot_findings", "Findings reported by SOP handlers, by SOP and status",
            ["sop", "status"], registry=r)
        self.slash_commands = Counter(
            "sopbot_slash_commands", "Slash commands answered, by SOP id or subcommand",
            ["command"], registry=r)
        self.slash_rejected = Counter(
            "sopbot_slash_commands_rejected", "Slash command requests refused, by reason",
            ["reason"], registry=r)
        self.approvals = Counter(
            "sopbot_approvals", "Remediation proposals decided, by outcome (approved/rejected/expired)",
            ["outcome"], registry=r)
        self.remediations = Counter(
            "sopbot_remediations", "Remediation actions finished, by action and result",
            ["action", "result"], registry=r)
        self.scheduled_runs = Counter(
            "sopbot_scheduled_runs", "Scheduled health checks run, by schedule and outcome "
            "(the report's status, or error)", ["schedule", "outcome"], registry=r)

    def observe_report(self, report: Report) -> None:
        """One SOP run: its duration and findings."""
        self.handler_duration.labels(report.sop_id).observe(report.duration_s)
        for finding in report.findings:
            self.findings.labels(report.sop_id, finding.status.value).inc()

    def proposal_changed(self, action: str, state: str) -> None:
        """A proposal moved to ``state`` (bot.approvals.repo.ProposalRepo.on_change)."""
        if state in APPROVAL_OUTCOMES:
            self.approvals.labels(state).inc()
        elif state in REMEDIATION_RESULTS:
            self.remediations.labels(action, state).inc()

    def watch(self, runtime: Any) -> None:
        """Also export what the runtime's chat queue, websocket and bot count themselves."""
        self.registry.register(RuntimeCollector(lambda: runtime))


class RuntimeCollector(Collector):
    """Reads the counters ``WriteQueue`` and ``EventSupervisor`` keep, at scrape time."""

    def __init__(self, runtime: Callable[[], Any]):
        self._runtime = runtime

    def describe(self) -> Iterable[Metric]:
        return []  # no duplicate check needed: the names are unique in this registry

    def collect(self) -> Iterable[Metric]:
        rt = self._runtime()
        chat = getattr(rt, "chat", None)
        queue = getattr(chat, "queue", None)
        if queue is not None:
            yield _counter("sopbot_chat_writes", "Mattermost write requests that succeeded "
                           "(posts, edits, uploads, reactions)", queue.sent)
            yield _counter("sopbot_chat_rate_limited", "429 answers from Mattermost", queue.rate_limited)
            yield _counter("sopbot_chat_wait_seconds", "Seconds chat writes waited (client-side "
                           "limiter, 429 Retry-After and retry backoff)", queue.waited_s)
            yield _counter("sopbot_chat_rate_limited_wait_seconds",
                           "Seconds chat writes waited because Mattermost answered 429",
                           queue.rate_limited_wait_s)
            yield _counter("sopbot_chat_retries", "Chat write retries after 5xx or connection errors",
                           queue.retries)
            yield _counter("sopbot_chat_write_failures", "Chat write jobs that ended in an error",
                           queue.failed)
            yield _gauge("sopbot_chat_queue_depth", "Chat writes waiting or running", queue.depth)
        events = getattr(rt, "events", None)
        if events is not None:
            yield _counter("sopbot_websocket_reconnects", "Websocket connections made after a drop",
                           events.reconnects)
        backlog = getattr(rt, "backlog", None)
        if backlog is not None:
            last = backlog.last
            yield _gauge("sopbot_backlog_alert_notifications", "Accepted alert notifications not yet "
                         "processed (Mattermost down or slow: retried until the horizon)",
                         last["alert_notifications"])
            yield _gauge("sopbot_backlog_chat_posts", "Accepted posts and edits not yet delivered "
                         "to Mattermost (the outbox)", last["chat_posts"])
            yield _gauge("sopbot_backlog_oldest_seconds", "Age of the oldest undelivered piece of "
                         "accepted work", last["oldest_s"])
        bot = getattr(rt, "bot", None)
        if bot is not None:
            yield _gauge("sopbot_background_tasks", "SOP runs and replies still in flight", bot.busy)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


# For code run outside a Runtime (the CLI, unit tests): counts go to a registry nobody serves.
DISCARD = Metrics()
