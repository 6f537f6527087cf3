"""PrometheusClient against a real Prometheus: samples with labels, scalars, the server's own
error text for a bad query, and "unreachable" when nothing listens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.clients.errors import SourceError
from bot.clients.prometheus import PrometheusClient

from .conftest import Platform, free_port


@pytest.fixture
async def client(platform: Platform) -> AsyncIterator[PrometheusClient]:
    c = PrometheusClient(platform.url, timeout_s=5)
    try:
        yield c
    finally:
        await c.close()


async def test_vector_query_returns_each_target_with_its_labels(platform: Platform, client: PrometheusClient):
    platform.healthy()
    await platform.settle(scrapes=2)
    samples = await client.query('up{job="etcd"}')
    assert sorted(s.labels["instance"] for s in samples) == sorted(m.instance for m in platform.members)
    assert all(s.labels["job"] == "etcd" and s.value == 1.0 for s in samples)
    assert all(s.labels["__name__"] == "up" for s in samples)


async def test_scalar_query_is_one_unlabelled_sample(client: PrometheusClient):
    [sample] = await client.query("scalar(vector(42))")
    assert sample.value == 42.0 and sample.labels == {}


async def test_empty_vector_is_an_empty_list(client: PrometheusClient):
    assert await client.query('up{job="no-such-job"}') == []


async def test_bad_promql_carries_the_servers_error_text(client: PrometheusClient):
    with pytest.raises(SourceError) as err:
        await client.query("sum(up{job=")
    assert err.value.source == "prometheus"
    assert err.value.status == 400
    assert err.value.reason.startswith("query failed (bad_data): ")
    assert "parse error" in err.value.reason  # Prometheus's own words


async def test_range_vector_is_refused_with_a_reason(client: PrometheusClient):
    with pytest.raises(SourceError, match="returned a matrix"):
        await client.query('up{job="etcd"}[5s]')


async def test_server_down_is_unreachable():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = PrometheusClient(url, timeout_s=2)
    try:
        with pytest.raises(SourceError) as err:
            await client.query("up")
    finally:
        await client.close()
    assert err.value.reason == f"{url} unreachable (ClientConnectorError)"


async def test_credentials_in_the_url_never_reach_the_reason():
    url = f"http://admin:s3cret@127.0.0.1:{free_port()}"
    client = PrometheusClient(url, timeout_s=2)
    try:
        with pytest.raises(SourceError) as err:
            await client.query("up")
    finally:
        await client.close()
    assert "s3cret" not in str(err.value) and "unreachable" in err.value.reason
