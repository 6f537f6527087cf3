"""The real Alertmanager sending one large group (1,500 alerts, a webhook of ~850 KiB, under
the 1 MiB ``max_body_bytes``): accepted whole the first time, one thread, no 4xx that would make
Alertmanager give the notification up."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from tests.alerts.test_alertmanager_e2e import World, wait_until, world  # noqa: F401 (fixture)


async def test_a_1500_alert_group_from_alertmanager_gets_its_thread(world: World):  # noqa: F811
    bot = await world.start_bot()
    assert bot.alerts is not None
    sizes: list[int] = []
    add = bot.alerts.inbox.add

    async def recording(body: str) -> int:
        sizes.append(len(body.encode()))
        return await add(body)

    bot.alerts.inbox.add = recording  # type: ignore[method-assign]
    now = datetime.now(timezone.utc)
    await world.am.client.post_alerts([{
        "labels": {"alertname": "VaultSealed", "group": "vault", "namespace": "vault",
                   "instance": f"vault-{i}.vault-internal:8200"},
        "annotations": {"summary": f"Vault pod vault-{i} is sealed",
                        "description": f"vault-{i} reports sealed=true; " + "see runbook 4.1. " * 12},
        "generatorURL": "http://prometheus.test/graph?g0.expr=vault_core_unsealed",
        "startsAt": (now - timedelta(minutes=1)).isoformat(),
        "endsAt": (now + timedelta(minutes=10)).isoformat(),
    } for i in range(1500)])
    [root] = await wait_until("the large group's thread", lambda: world.roots(), timeout_s=60)
    assert "VaultSealed" in root.message
    group = await wait_until("the group with all 1,500 alerts", lambda: _group(bot), timeout_s=60)
    assert len(group.alerts) == 1500
    assert 512 * 1024 < max(sizes) < 1 << 20  # the whole group in one notification, under the limit
    assert "unrecoverable error" not in world.am.logs()
    assert len(world.roots()) == 1


async def _group(bot):
    groups = await bot.alerts.repo.open_groups()
    return groups[0] if groups and len(groups[0].alerts) == 1500 else None
