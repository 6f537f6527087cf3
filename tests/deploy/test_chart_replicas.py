"""The chart with two or three replicas (issue 18): only on the PostgreSQL store (the schema
refuses replicaCount 2 with SQLite), a PDB that keeps one up, replicas spread across nodes, the
runbook's general node class; the rendered config and env load into the bot's settings."""

from __future__ import annotations

import pytest
from test_chart import CHART, mounts, one, of_kind, render, settings_from

import helm_python as helm

URL = "postgresql://sopbot@sopbot-db-rw.database.svc.cluster.local:5432/sopbot"
HA = {"replicaCount": 2,
      "store": {"url": URL, "passwordSecret": {"name": "sopbot-db-app"}, "caSecret": {"name": "sopbot-db-ca"}}}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def pod(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]


@pytest.mark.parametrize("values", [{"replicaCount": 2}, {"replicaCount": 3, "store": {"url": ""}}])
def test_several_replicas_on_sqlite_are_refused(chart, values):
    with pytest.raises(helm.HelmValuesError, match="/store/url"):
        render(chart, values)


def test_a_password_in_the_store_url_is_refused(chart):
    with pytest.raises(helm.HelmValuesError, match="/store/url"):
        render(chart, {"store": {"url": "postgresql://sopbot:hunter2@db:5432/sopbot"}})
    with pytest.raises(helm.HelmValuesError, match="/store/url"):
        render(chart, {"store": {"url": "mysql://sopbot@db/sopbot"}})
    assert one(render(chart, {"store": {"url": "postgresql://db.example:5432/sopbot"}}), "Deployment")


def test_ha_values_render_two_replicas_on_postgresql(chart, tmp_path, monkeypatch):
    objects = render(chart, HA)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    assert not of_kind(objects, "PersistentVolumeClaim")  # no ReadWriteOnce volume to share
    m = mounts(deployment)
    assert "emptyDir" in m["/data"]
    assert m["/etc/sopbot/store-ca"]["secret"] == {"secretName": "sopbot-db-ca",
                                                   "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert m["/etc/sopbot/store-ca"]["readOnly"] is True
    (container,) = pod(objects)["containers"]
    assert container["env"] == [{"name": "SOPBOT_STORE__PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "sopbot-db-app", "key": "password"}}}]
    settings = settings_from(objects, tmp_path, monkeypatch, {"SOPBOT_STORE__PASSWORD": "from-the-secret"})
    assert settings.store.url == URL and settings.store.sslmode == "verify-full"
    assert str(settings.store.sslrootcert) == "/etc/sopbot/store-ca/ca.crt"
    assert settings.store.password.get_secret_value() == "from-the-secret"
    assert "from-the-secret" not in str(one(objects, "ConfigMap"))


def test_ha_keeps_one_replica_up_and_spreads_them_across_nodes(chart):
    objects = render(chart, HA)
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    (spread,) = pod(objects)["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname" and spread["maxSkew"] == 1
    assert spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert spread["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert pod(objects)["nodeSelector"] == {"workload-type": "general"}


def test_one_replica_never_blocks_a_drain_and_keeps_its_volume(chart):
    objects = render(chart)
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in one(objects, "PodDisruptionBudget")["spec"]
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "topologySpreadConstraints" not in pod(objects)
    assert pod(objects)["nodeSelector"] == {"workload-type": "general"}  # the runbook's class, by default
    assert one(objects, "PersistentVolumeClaim")
    # One replica may use PostgreSQL too (no volume then), and keeps the drain-friendly PDB.
    single_pg = render(chart, {"store": {"url": URL}})
    assert not of_kind(single_pg, "PersistentVolumeClaim")
    assert one(single_pg, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
