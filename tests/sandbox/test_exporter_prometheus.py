"""The sandbox's exporter metrics and the shared real Prometheus scraping them: the exposition
text, a change reaching Prometheus before apply() returns, and a later sandbox never seeing an
earlier one's series (range queries included)."""

from __future__ import annotations

from bot.clients.prometheus import PrometheusClient
from sandbox.exporter import Exporter
from sandbox.runner import Sandbox


def test_exposition_text_escapes_labels_and_evaluates_callables_per_scrape() -> None:
    e = Exporter()
    e.set("demo_lag", {"pod": "a", "note": 'say "hi"\\'}, 1.5, "Help text")
    e.set("demo_lag", {"pod": "b"}, lambda n: 10 * n)
    first, second = e.text(), e.text()
    assert first.splitlines() == ["# HELP demo_lag Help text", "# TYPE demo_lag gauge",
                                  'demo_lag{note="say \\"hi\\"\\\\",pod="a"} 1.5', 'demo_lag{pod="b"} 10.0',
                                  # the exporter's change counter, for the runner's settle()
                                  "# TYPE sandbox_exporter_version gauge",
                                  f'sandbox_exporter_version{{exporter="{e.id}"}} 2']
    assert second.splitlines()[3] == 'demo_lag{pod="b"} 20.0'
    assert e.remove("demo_lag", pod="a") == 1 and "pod=\"a\"" not in e.text()


async def query(sb: Sandbox, promql: str):
    client = PrometheusClient(sb.settings().prometheus.url, timeout_s=5)
    try:
        return await client.query(promql)
    finally:
        await client.close()


async def test_changes_reach_prometheus_and_sandboxes_do_not_see_each_other(tmp_path) -> None:
    async with Sandbox(workdir=tmp_path / "one", prometheus=True) as one:
        lag = await query(one, 'cnpg_pg_replication_lag{pod="keycloak-pg-3"}')
        assert [s.value for s in lag] == [0.6000000000000001]  # the healthy world, already scraped
        one.platform.metrics.set("sandbox_marker", {"run": "one"}, 7)
        await one.settle()
        assert [s.value for s in await query(one, "sandbox_marker")] == [7]
    async with Sandbox(workdir=tmp_path / "two", prometheus=True) as two:
        assert await query(two, "max_over_time(sandbox_marker[10m])") == []
        series = await query(two, 'count_over_time(cnpg_pg_replication_lag{pod="keycloak-pg-3"}[10m])')
        assert len(series) == 1  # only this sandbox's own series


async def test_without_prometheus_the_bot_config_has_none(tmp_path) -> None:
    async with Sandbox(workdir=tmp_path / "plain") as sb:
        assert "prometheus" not in sb.bot_config()
        assert sb.platform.metrics.text().count("cnpg_pg_replication_lag{") == 12
