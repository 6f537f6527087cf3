"""'What changed since the last report': new, resolved and still-open problems, kept in the store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.health import HealthStore, health_markdown
from bot.store import Store
from sandbox.runner import Sandbox
from tests.health.conftest import am_section, bad_token_kubeconfig


async def open_store(tmp_path: Path) -> HealthStore:
    store = HealthStore(await Store.open(tmp_path / "sopbot.db"))
    await store.setup()
    return store


def keys(problems) -> set[str]:
    return {p.key for p in problems}


async def test_new_resolved_and_still_open_across_reports(tmp_path, alertmanager, run_daily):
    hstore = await open_store(tmp_path)
    try:
        async with Sandbox(["pod-crashloop", "pvc-pending"], workdir=tmp_path / "day0") as sb:
            first = await run_daily(sb.settings(alertmanager=am_section(sb, alertmanager)))
        first.changes = await hstore.record(first)
        assert first.changes.previous_at is None  # nothing to compare with yet
        assert "first report" in health_markdown(first)[0]

        # Two days later: the PVC got storage, a certificate is now expiring, harbor still crashes.
        async with Sandbox(["pod-crashloop", "cert-expiring"], workdir=tmp_path / "day2") as sb:
            second = await run_daily(sb.settings(alertmanager=am_section(sb, alertmanager)))
        second.started_at = first.started_at + timedelta(days=2, minutes=1)
        changes = second.changes = await hstore.record(second)
    finally:
        await hstore.store.close()

    assert changes.previous_at == first.started_at
    assert keys(changes.new) == {"cert-health|certificate/keycloak/keycloak-example-com-tls"}
    assert keys(changes.resolved) == {"pvc-health|pvc/uptime-kuma/uptime-kuma", "pod-health|uptime-kuma Pending"}
    assert "pod-health|harbor CrashLoopBackOff" in keys(changes.still_open)
    crash = next(p for p in changes.still_open if p.key == "pod-health|harbor CrashLoopBackOff")
    assert crash.first_seen == first.started_at
    root = health_markdown(second)[0]
    # still open: the group, the pods count and the registry's crash log line (MinIO unreachable)
    assert "1 new, 2 resolved, 3 still open" in root
    assert any(p.key.startswith("pod-health|pod/harbor/harbor-registry-") for p in changes.still_open)
    assert "harbor CrashLoopBackOff: 1 pod(s) CrashLoopBackOff" in root and "open for 2 days" in root
    assert ":white_check_mark: PVCs: pvc/uptime-kuma/uptime-kuma" in root


async def test_a_source_that_fails_does_not_resolve_its_problems(tmp_path, sandbox, settings, run_daily):
    hstore = await open_store(tmp_path)
    try:
        await sandbox.apply("pod-crashloop")
        first = await run_daily()
        await hstore.record(first)
        bad = bad_token_kubeconfig(sandbox)
        blind = await run_daily(settings.model_copy(update={
            "kubernetes": settings.kubernetes.model_copy(update={"kubeconfig": bad})}))
        changes = await hstore.record(blind)
        # Kubernetes unreadable: the crash loop is not known to be fixed, so it stays open.
        assert "pod-health|harbor CrashLoopBackOff" in keys(changes.still_open)
        assert not any(p.key.startswith("pod-health|") for p in changes.resolved)
        # The next readable report still knows when it started.
        again = await run_daily()
        again.started_at = first.started_at + timedelta(days=3)
        changes = await hstore.record(again)
        crash = next(p for p in changes.still_open if p.key == "pod-health|harbor CrashLoopBackOff")
        assert crash.first_seen == first.started_at
    finally:
        await hstore.store.close()


async def test_reports_of_different_names_keep_separate_histories(tmp_path, sandbox, run_daily):
    hstore = await open_store(tmp_path)
    try:
        await sandbox.apply("lb-ip-pending")
        daily = await run_daily()
        await hstore.record(daily)
        hourly = await run_daily()
        hourly.name = "hourly-p1"
        changes = await hstore.record(hourly)
        assert changes.previous_at is None and keys(changes.new) == {p.key for p in hourly.problems()}
    finally:
        await hstore.store.close()
