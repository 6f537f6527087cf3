"""The Helm chart (charts/sop-bot), rendered by Helm's own engine (helm-python-sdk binds Helm's Go
library): lint-clean, every object valid against the Kubernetes schemas, least-privilege RBAC
per toggle, the pod hardened, and the rendered config and Secret accepted by bot/config.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import Settings, load_settings

try:
    import helm_python as helm
except ImportError as exc:  # pragma: no cover - a clear message instead of a skip
    raise ImportError("helm-python-sdk is not installed: `pip install helm-python-sdk` "
                      "(CI installs it with the test extras)") from exc
try:
    import kubernetes_validate
    from kubernetes_validate.utils import SchemaNotFoundError
except ImportError as exc:  # pragma: no cover
    raise ImportError("kubernetes-validate is not installed: `pip install kubernetes-validate` "
                      "(CI installs it with the test extras)") from exc

CHART = Path(__file__).resolve().parents[2] / "charts" / "sop-bot"
RELEASE = "sop-bot"
NAMESPACE = "sop-bot"
FULLNAME = "sop-bot"
SA = ("ServiceAccount", NAMESPACE, FULLNAME)
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion >=1.25) that
# kubernetes-validate still ships, and the newest it has.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.utils.latest_version())
# Prometheus Operator CRDs: kubernetes-validate has no schema for them (asserted below), so
# only these two kinds skip schema validation; their shape is asserted field by field instead.
NO_SCHEMA_KINDS = {"ServiceMonitor", "AlertmanagerConfig"}
READ = {"get", "list", "watch"}

DIAGNOSTICS = {
    "": {"nodes", "pods", "pods/log", "services", "serviceaccounts", "configmaps", "endpoints", "events", "namespaces",
         "persistentvolumeclaims", "persistentvolumes"},
    "apps": {"deployments", "daemonsets", "statefulsets", "replicasets"},
    "batch": {"jobs", "cronjobs"},
    "networking.k8s.io": {"networkpolicies"},
    "policy": {"poddisruptionbudgets"},
    "cert-manager.io": {"certificates", "certificaterequests", "clusterissuers", "issuers"},
    "postgresql.cnpg.io": {"clusters", "backups", "scheduledbackups", "poolers"},
    "k8s.mariadb.com": {"mariadbs"},
    "gateway.networking.k8s.io": {"gateways", "httproutes"},
    "traefik.io": {"ingressroutes", "tlsstores"},
    "cilium.io": {"ciliuml2announcementpolicies", "ciliumloadbalancerippools", "ciliumnodes",
                  "ciliumnetworkpolicies"},
    "discovery.k8s.io": {"endpointslices"},
    "helm.cattle.io": {"helmchartconfigs"},
    "metrics.k8s.io": {"nodes", "pods"},
    "argoproj.io": {"applications", "rollouts"},
    "k3s.cattle.io": {"etcdsnapshotfiles"},
}

NO_ACTIONS = {k: False for k in ("restart", "scale", "deletePods", "cordon", "drain",
                                 "labelNodes", "reissueCertificates", "applyTlsStore", "recreateIssuerToken",
                                 "nodeMaintenance", "replaceNode", "ciliumLB",
                                 "cnpgBackup", "cnpgPooler", "cnpgRecovery")}
# What each remediation action alone must grant cluster-wide: (apiGroup, resource, verb).
ACTION_GRANTS = {
    "restart": {("apps", "deployments", "patch"), ("apps", "daemonsets", "patch"),
                ("apps", "statefulsets", "patch")},
    "scale": {("apps", "deployments/scale", "patch")},
    "deletePods": {("", "pods", "delete")},
    "cordon": {("", "nodes", "patch")},
    "drain": {("", "nodes", "patch"), ("", "pods/eviction", "create")},
    "labelNodes": {("", "nodes", "patch")},
    "reissueCertificates": set(),  # namespaced Roles only, see its own test
    "applyTlsStore": {("traefik.io", "tlsstores", "create"), ("traefik.io", "tlsstores", "patch")},
    "recreateIssuerToken": set(),  # a namespaced Role only, see the secret grants below
    "ciliumLB": {("cilium.io", "ciliuml2announcementpolicies", "create"),
                 ("cilium.io", "ciliumloadbalancerippools", "create"),
                 ("cilium.io", "ciliumloadbalancerippools", "patch")},
    "cnpgBackup": {("postgresql.cnpg.io", "backups", "create")},
    "cnpgPooler": {("postgresql.cnpg.io", "poolers", "create")},
    "cnpgRecovery": {("postgresql.cnpg.io", "clusters", "create")},
    # Procedures (bot/approvals/procedures.py, handlers/daytwo.py).
    "nodeMaintenance": {("", "nodes", "patch"), ("", "pods/eviction", "create"),
                        ("postgresql.cnpg.io", "clusters/status", "patch")},
    "replaceNode": {("", "nodes", "patch"), ("", "pods/eviction", "create"), ("", "nodes", "delete")},
}

SECRETS = {"mattermostToken": "mm-bot-token", "slashTokens": ["slash-a", "slash-b"],
           "alertmanagerWebhookToken": "am-bearer", "vaultToken": "hvs.read"}

# Every toggle the chart has; each set must render, lint and validate.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "remediation-defaults": {"remediation": {"enabled": True, "approvers": ["alice"]}},
    "remediation-everything": {"remediation": {
        "enabled": True, "approvers": ["alice", "bob"],
        "actions": {k: True for k in NO_ACTIONS},
        "reissueCertificates": {"namespaces": ["mattermost", "keycloak"]},
        "unsealFromSecret": {"enabled": True}},
        "vaultLoginTest": {"enabled": True}},
    **{f"only-{action}": {"remediation": {
        "enabled": True, "actions": {**NO_ACTIONS, action: True},
        "reissueCertificates": {"namespaces": ["mattermost"]}}} for action in NO_ACTIONS},
    "unseal-only": {"remediation": {"enabled": True, "actions": NO_ACTIONS,
                                    "unsealFromSecret": {"enabled": True}}},
    "service-monitor": {"serviceMonitor": {"enabled": True,
                                           "labels": {"release": "kube-prometheus-stack"}}},
    "alertmanager-config": {"alertmanagerConfig": {"enabled": True},
                            "secrets": {"alertmanagerWebhookToken": "am-bearer"}},
    "existing-secret": {"existingSecret": "sop-bot-tokens",
                        "alertmanagerConfig": {"enabled": True}},
    "created-secret": {"secrets": SECRETS},
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "network-policy-egress": {"networkPolicy": {"egress": {"restrict": True, "rules": [
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}],
         "ports": [{"port": 53, "protocol": "UDP"}]}]}}},
    "no-persistence": {"persistence": {"enabled": False}},
    "existing-claim": {"persistence": {"existingClaim": "sopbot-data"}},
    "runbook-content": {"runbook": {"content": "# Runbook\n\n## 5. Vault\n"}},
    "runbook-configmap": {"runbook": {"existingConfigMap": "platform-runbook"}},
    "mgmt-kubeconfig": {"mgmtKubeconfig": {"existingSecret": "harvester-kubeconfig"}},
    "no-leader-election-no-pdb": {"leaderElection": {"enabled": False},
                                  "podDisruptionBudget": {"enabled": False}},
    # two replicas on PostgreSQL (tests/deploy/test_chart_replicas.py)
    "ha-postgresql": {"replicaCount": 2, "store": {
        "url": "postgresql://sopbot@sopbot-db-rw.database.svc.cluster.local:5432/sopbot",
        "passwordSecret": {"name": "sopbot-db-app"}, "caSecret": {"name": "sopbot-db-ca"}}},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    manifests = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE,
                             is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart, values: dict[str, Any] | None = None) -> str:
    manifests = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE)
    return manifests[f"{RELEASE}/templates/NOTES.txt"]


def of_kind(objects, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def grants(objects) -> set[tuple[str, str | None, str, str, str, tuple[str, ...]]]:
    """(role kind, namespace, apiGroup, resource, verb, resourceNames) the bot's ServiceAccount
    holds through the rendered bindings; asserts every role is bound to it and to nothing else."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    bound = set()
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert [(s["kind"], s.get("namespace"), s["name"]) for s in b["subjects"]] == [SA]
        ref = b["roleRef"]
        namespace = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        key = (ref["kind"], namespace, ref["name"])
        assert key in roles, f"{b['kind']} {b['metadata']['name']} binds a missing {key}"
        bound.add(key)
    assert bound == set(roles), f"roles without a binding: {set(roles) - bound}"
    out = set()
    for (kind, namespace, _), role in roles.items():
        for rule in role["rules"]:
            for group in rule.get("apiGroups", []):  # nonResourceURLs rules have none
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((kind, namespace, group, resource, verb,
                                 tuple(rule.get("resourceNames", ()))))
    return out


def cluster_writes(objects) -> set[tuple[str, str, str]]:
    return {(g, r, v) for kind, _, g, r, v, _ in grants(objects)
            if kind == "ClusterRole" and v not in READ}


# --- rendering, lint and schema validity ----------------------------------------------------

def test_helm_lint_is_clean_in_strict_mode():
    for values in (VALUE_SETS["defaults"], VALUE_SETS["remediation-everything"],
                   VALUE_SETS["alertmanager-config"]):
        report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
        assert report["errors"] == []
        problems = [m for m in report["messages"]
                    if not (m["severity"] == 1 and "icon is recommended" in m["error"])]
        assert problems == [], problems


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_rendered_object_is_valid_kubernetes(chart, name):
    objects = render(chart, VALUE_SETS[name])
    assert objects
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for version in KUBE_VERSIONS:
            if obj["kind"] in NO_SCHEMA_KINDS:
                with pytest.raises(SchemaNotFoundError):
                    kubernetes_validate.validate(obj, version, strict=True)
                continue
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name}: {where} is invalid for Kubernetes {version}: "
                            f"{exc.message} at {list(exc.path)}")
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE, where
    # The Kubernetes-object names the chart creates are unique per kind and namespace.
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_no_wildcards_in_any_rbac_rule(chart, name):
    objects = render(chart, VALUE_SETS[name])
    for role in of_kind(objects, "ClusterRole") + of_kind(objects, "Role"):
        for rule in role["rules"]:
            for key in ("verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key, [])), (role, rule)
            assert "nonResourceURLs" not in rule


@pytest.mark.parametrize("values, problem", [
    ({"remediation": {"actions": {"restrat": True}}}, "restrat"),
    ({"config": {"mattermost": {"token": "in-a-configmap"}}}, "token"),
    ({"config": {"slash": {"tokens": ["in-a-configmap"]}}}, "tokens"),
    ({"config": {"remediation": {"enabled": True}}}, "remediation"),
    ({"config": {"store": {"path": "/tmp/x.db"}}}, "store"),
    ({"config": {"server": {"port": 9000}}}, "port"),
    ({"config": {"health": {"lease_namespace": "default"}}}, "lease_namespace"),
    ({"remediation": {"settings": {"enabled": True}}}, "enabled"),
    ({"config": {"vault": {"addrs": ["vault-0:8200"]}}}, "addrs"),
    ({"networkPolicy": {"ingressFrom": {"everyone": {"namespaceSelector": {}}}}},
     "namespaceSelector"),
    ({"remediation": {"reissueCertificates": {"namespaces": ["Not_A_Namespace"]}}},
     "namespaces"),
])
def test_values_schema_rejects_mistakes(chart, values, problem):
    with pytest.raises(helm.HelmValuesError, match=problem):
        render(chart, values)


# --- RBAC ---------------------------------------------------------------------------------

def test_diagnostics_role_reads_exactly_the_handlers_resources_and_no_secrets(chart):
    role = one(render(chart), "ClusterRole", f"{FULLNAME}-diagnostics")
    assert "secret" not in json.dumps(role["rules"]).lower()
    got: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert set(rule["verbs"]) == READ, rule
        assert "resourceNames" not in rule
        for group in rule.get("apiGroups", []):  # nonResourceURLs rules have none
            got.setdefault(group, set()).update(rule["resources"])
    assert got == DIAGNOSTICS


def test_default_install_is_read_only(chart):
    objects = render(chart)
    assert cluster_writes(objects) == set()
    assert not [o for o in objects if "remediation" in o["metadata"]["name"]]
    # The only write anywhere is the leader-election Lease in the release namespace.
    writes = {g for g in grants(objects) if g[4] not in READ}
    assert writes == {("Role", NAMESPACE, "coordination.k8s.io", "leases", "create", ()),
                      ("Role", NAMESPACE, "coordination.k8s.io", "leases", "update",
                       ("sopbot-scheduler",))}
    assert not any(g[3] == "secrets" for g in grants(objects))
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["sopbot.yaml"])
    assert config["remediation"]["enabled"] is False
    assert config["remediation"]["unseal_from_secret"]["enabled"] is False


def test_actions_stay_off_while_remediation_is_disabled(chart):
    objects = render(chart, {"remediation": {
        "enabled": False, "actions": {k: True for k in NO_ACTIONS},
        "reissueCertificates": {"namespaces": ["mattermost"]},
        "unsealFromSecret": {"enabled": True}}})
    assert cluster_writes(objects) == set()
    assert not any(g[3] == "secrets" for g in grants(objects))


def test_remediation_defaults_grant_restart_scale_delete_cordon_label(chart):
    objects = render(chart, VALUE_SETS["remediation-defaults"])
    assert cluster_writes(objects) == (ACTION_GRANTS["restart"] | ACTION_GRANTS["scale"]
                                       | ACTION_GRANTS["deletePods"] | ACTION_GRANTS["cordon"])
    assert not any(g[3] == "secrets" for g in grants(objects))
    config = yaml.safe_load(one(objects, "ConfigMap")["data"]["sopbot.yaml"])
    assert config["remediation"]["enabled"] is True
    assert config["remediation"]["approvers"] == ["alice"]


@pytest.mark.parametrize("action", sorted(NO_ACTIONS))
def test_each_action_alone_grants_exactly_its_verbs(chart, action):
    objects = render(chart, VALUE_SETS[f"only-{action}"])
    assert cluster_writes(objects) == ACTION_GRANTS[action]
    secret_grants = {g for g in grants(objects) if g[3] == "secrets"}
    if action == "reissueCertificates":
        assert secret_grants == {("Role", "mattermost", "", "secrets", "delete", ())}
    elif action == "recreateIssuerToken":
        assert secret_grants == {("Role", "cert-manager", "", "secrets", "delete", ("vault-issuer-token",)),
                                 ("Role", "cert-manager", "", "secrets", "create", ())}
    else:
        assert secret_grants == set()
    remediation_roles = [r for r in of_kind(objects, "ClusterRole")
                         if r["metadata"]["name"] == f"{FULLNAME}-remediation"]
    assert len(remediation_roles) == (1 if ACTION_GRANTS[action] else 0)


def test_certificate_reissue_deletes_secrets_only_in_the_listed_namespaces(chart):
    objects = render(chart, VALUE_SETS["remediation-everything"])
    secret_grants = {g for g in grants(objects) if g[3] == "secrets"}
    assert {g for g in secret_grants if g[4] == "delete" and not g[5]} == {
        ("Role", ns, "", "secrets", "delete", ()) for ns in ("mattermost", "keycloak")}
    assert not any(g[0] == "ClusterRole" and "secret" in g[3] for g in grants(objects))


def test_certificate_reissue_without_namespaces_fails_with_a_clear_message(chart):
    with pytest.raises(helm.HelmError, match="reissueCertificates.namespaces"):
        render(chart, {"remediation": {"enabled": True,
                                       "actions": {"reissueCertificates": True}}})


def test_unseal_reads_only_the_vault_init_secret_in_terraform_state(chart):
    objects = render(chart, VALUE_SETS["unseal-only"])
    assert {g for g in grants(objects) if g[3] == "secrets"} == {
        ("Role", "terraform-state", "", "secrets", "get", ("vault-init",))}
    assert cluster_writes(objects) == set()
    everything = render(chart, VALUE_SETS["remediation-everything"])
    assert {g for g in grants(everything) if g[3] == "secrets" and g[4] == "get"} == {
        ("Role", "terraform-state", "", "secrets", "get", ("vault-init",))}
    without = render(chart, {"remediation": {"enabled": True,
                                             "actions": {"reissueCertificates": False}}})
    assert not any(g[3] == "secrets" for g in grants(without))


def test_leader_election_lease_role_in_the_release_namespace(chart):
    objects = render(chart)
    role = one(objects, "Role", f"{FULLNAME}-leader-election")
    assert role["metadata"]["namespace"] == NAMESPACE
    # (kube-system's cilium-l2announce lease is a read of its own, by name: rbac-diagnostics.yaml)
    assert {g for g in grants(objects) if g[3] == "leases" and g[1] != "kube-system"} == {
        ("Role", NAMESPACE, "coordination.k8s.io", "leases", "create", ()),
        ("Role", NAMESPACE, "coordination.k8s.io", "leases", "get", ("sopbot-scheduler",)),
        ("Role", NAMESPACE, "coordination.k8s.io", "leases", "update", ("sopbot-scheduler",))}
    off = render(chart, VALUE_SETS["no-leader-election-no-pdb"])
    assert not any(g[3] == "leases" and g[1] != "kube-system" for g in grants(off))


# --- the pod --------------------------------------------------------------------------------

def test_pod_is_hardened(chart):
    pod = one(render(chart), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert pod["serviceAccountName"] == FULLNAME


def test_probes_and_port(chart):
    objects = render(chart)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = one(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1  # never blocks a node drain
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def mounts(deployment) -> dict[str, dict[str, Any]]:
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    return {m["mountPath"]: {**volumes[m["name"]], "readOnly": m.get("readOnly", False)}
            for m in container["volumeMounts"]}


def test_writable_places_are_the_store_volume_and_tmp_only(chart):
    m = mounts(one(render(chart), "Deployment"))
    assert m["/data"]["persistentVolumeClaim"] == {"claimName": FULLNAME}
    assert "emptyDir" in m["/tmp"]
    assert m["/etc/sopbot/config"]["configMap"]["name"] == FULLNAME
    writable = {path for path, v in m.items() if not v["readOnly"]}
    assert writable == {"/data", "/tmp"}
    pvc = one(render(chart), "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert not of_kind(render(chart, VALUE_SETS["existing-claim"]), "PersistentVolumeClaim")
    assert mounts(one(render(chart, VALUE_SETS["existing-claim"]), "Deployment"))["/data"][
        "persistentVolumeClaim"] == {"claimName": "sopbot-data"}
    assert "emptyDir" in mounts(one(render(chart, VALUE_SETS["no-persistence"]),
                                    "Deployment"))["/data"]


def settings_from(objects, tmp_path: Path, monkeypatch, secret_env: dict[str, str]) -> Settings:
    """What the bot would load in the pod: the mounted sopbot.yaml plus the Secret's env."""
    deployment = one(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["run", "--config"]
    config_path = Path(container["args"][2])
    mounted = mounts(deployment)[str(config_path.parent)]
    (item,) = mounted["configMap"]["items"]
    assert item["path"] == config_path.name
    data = one(objects, "ConfigMap", mounted["configMap"]["name"])["data"][item["key"]]
    local = tmp_path / "sopbot.yaml"
    local.write_text(data)
    for key in list(os.environ):
        if key.startswith("SOPBOT_"):
            monkeypatch.delenv(key)
    for key, value in secret_env.items():
        monkeypatch.setenv(key, value)
    return load_settings(local)


def test_rendered_config_and_created_secret_load_into_the_bots_settings(chart, tmp_path,
                                                                         monkeypatch):
    objects = render(chart, VALUE_SETS["created-secret"])
    secret = one(objects, "Secret")
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    settings = settings_from(objects, tmp_path, monkeypatch, secret["stringData"])
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8080
    assert str(settings.store.path) == "/data/sopbot.db"
    assert settings.vault.addrs == [
        f"http://vault-{i}.vault-internal.vault.svc.cluster.local:8200" for i in range(3)]
    assert settings.mattermost.token.get_secret_value() == "mm-bot-token"
    assert [t.get_secret_value() for t in settings.slash.tokens] == ["slash-a", "slash-b"]
    assert settings.alertmanager.webhook_token.get_secret_value() == "am-bearer"
    assert settings.vault.token.get_secret_value() == "hvs.read"
    assert settings.remediation.enabled is False
    assert settings.alertmanager.url and settings.mattermost.url.startswith("http://")
    # No secret value ever lands in the ConfigMap.
    configmap = json.dumps(one(objects, "ConfigMap"))
    for value in ("mm-bot-token", "slash-a", "am-bearer", "hvs.read"):
        assert value not in configmap


def test_created_secret_leaves_out_unset_tokens(chart):
    secret = one(render(chart, {"secrets": {"mattermostToken": "t"}}), "Secret")
    assert secret.get("stringData") == {"SOPBOT_MATTERMOST__TOKEN": "t"}


def test_existing_secret_is_used_and_none_is_created(chart):
    objects = render(chart, VALUE_SETS["existing-secret"])
    assert not of_kind(objects, "Secret")
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "sop-bot-tokens"}}]
    amc = one(objects, "AlertmanagerConfig")
    (hook,) = amc["spec"]["receivers"][0]["webhookConfigs"]
    assert hook["httpConfig"]["authorization"]["credentials"] == {
        "name": "sop-bot-tokens", "key": "SOPBOT_ALERTMANAGER__WEBHOOK_TOKEN"}


def test_runbook_is_mounted_read_only_where_the_config_points(chart, tmp_path, monkeypatch):
    for name in ("runbook-content", "runbook-configmap"):
        objects = render(chart, VALUE_SETS[name])
        settings = settings_from(objects, tmp_path, monkeypatch, {})
        path = Path(settings.runbook.path)
        volume = mounts(one(objects, "Deployment"))[str(path.parent)]
        assert volume["readOnly"] is True
        (item,) = volume["configMap"]["items"]
        assert item["path"] == path.name
        if name == "runbook-content":
            cm = one(objects, "ConfigMap", volume["configMap"]["name"])
            assert cm["data"][item["key"]].startswith("# Runbook")
        else:
            assert volume["configMap"]["name"] == "platform-runbook"
    settings = settings_from(render(chart), tmp_path, monkeypatch, {})
    assert settings.runbook.path is None


def test_mgmt_kubeconfig_secret_is_mounted_for_the_second_cluster(chart, tmp_path,
                                                                   monkeypatch):
    objects = render(chart, VALUE_SETS["mgmt-kubeconfig"])
    settings = settings_from(objects, tmp_path, monkeypatch, {})
    path = Path(settings.kubernetes.mgmt_kubeconfig)
    volume = mounts(one(objects, "Deployment"))[str(path.parent)]
    assert volume["readOnly"] is True
    assert volume["secret"]["secretName"] == "harvester-kubeconfig"


def test_config_checksum_rolls_the_pod_when_the_config_changes(chart):
    def checksum(values):
        return one(render(chart, values), "Deployment")["spec"]["template"]["metadata"][
            "annotations"]["checksum/config"]

    assert checksum({}) != checksum({"config": {"mattermost": {"channel": "ops"}}})


def test_values_schema_config_keys_exist_in_the_bots_settings(chart):
    """Every key the schema names under `config` (allowed or held back for the Secret or the
    chart) is a real setting of bot/config.py, so the schema guards what it claims to."""
    schema = chart.schema["properties"]["config"]["properties"]
    for section, spec in schema.items():
        assert section in Settings.model_fields, section
        if spec is False or section == "checks":
            continue
        model = Settings.model_fields[section].annotation
        fields = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
        for key in spec["properties"]:
            assert key in fields, f"config.{section}.{key} is not a setting"
    settings_schema = chart.schema["properties"]["remediation"]["properties"]["settings"]
    for key in settings_schema["properties"]:
        assert key in Settings.model_fields["remediation"].annotation.model_fields, key


def test_bot_config_and_rbac_agree_on_unseal_and_the_lease(chart, tmp_path, monkeypatch):
    objects = render(chart, {"remediation": {
        "enabled": True, "unsealFromSecret": {"enabled": True, "namespace": "tf",
                                              "secretName": "init", "key": "init.json"},
        "settings": {"four_eyes": True, "quorum_high": 2}},
        "leaderElection": {"leaseName": "sop-lease"}})
    settings = settings_from(objects, tmp_path, monkeypatch, {})
    unseal = settings.remediation.unseal_from_secret
    assert (unseal.enabled, unseal.namespace, unseal.secret_name, unseal.key) == (
        True, "tf", "init", "init.json")
    assert ("Role", "tf", "", "secrets", "get", ("init",)) in grants(objects)
    assert settings.remediation.four_eyes is True and settings.remediation.quorum_high == 2
    assert settings.health.lease_name == "sop-lease"
    assert ("Role", NAMESPACE, "coordination.k8s.io", "leases", "update",
            ("sop-lease",)) in grants(objects)
    # Unseal stays off in the bot while remediation is off, as its RBAC does.
    off = render(chart, {"remediation": {"unsealFromSecret": {"enabled": True}}})
    assert settings_from(off, tmp_path, monkeypatch, {}).remediation.unseal_from_secret \
        .enabled is False
    assert not any(g[3] == "secrets" for g in grants(off))


# --- network policy and monitoring ----------------------------------------------------------

def test_network_policy_admits_only_mattermost_and_monitoring_namespaces(chart):
    policy = one(render(chart), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]  # egress unrestricted by default
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    namespaces = sorted(p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        for p in rule["from"])
    assert namespaces == ["mattermost", "monitoring"]
    assert all("podSelector" not in p or p["podSelector"] for p in rule["from"])


def test_network_policy_is_configurable_and_never_opens_up_when_emptied(chart):
    # Helm merges maps into the defaults, so a different selector goes under a new key and
    # the default entry is nulled (as values.yaml says).
    custom = one(render(chart, {"networkPolicy": {"ingressFrom": {
        "chat": {"namespaceSelector": {"matchLabels": {"team": "chat"}},
                 "podSelector": {"matchLabels": {"app": "mattermost"}}},
        "mattermost": None, "alertmanager": None}}}), "NetworkPolicy")
    assert custom["spec"]["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"team": "chat"}},
         "podSelector": {"matchLabels": {"app": "mattermost"}}}]
    closed = one(render(chart, {"networkPolicy": {"ingressFrom": {
        "mattermost": None, "alertmanager": None}}}), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []  # deny all, not allow all
    egress = one(render(chart, VALUE_SETS["network-policy-egress"]), "NetworkPolicy")
    assert egress["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert egress["spec"]["egress"][0]["ports"] == [{"port": 53, "protocol": "UDP"}]
    assert not of_kind(render(chart, VALUE_SETS["network-policy-off"]), "NetworkPolicy")


def test_service_monitor_scrapes_metrics_when_enabled(chart):
    assert not of_kind(render(chart), "ServiceMonitor")
    objects = render(chart, VALUE_SETS["service-monitor"])
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    service = one(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_alertmanager_config_routes_to_the_webhook_with_the_bearer_secret(chart):
    assert not of_kind(render(chart), "AlertmanagerConfig")
    objects = render(chart, VALUE_SETS["alertmanager-config"])
    amc = one(objects, "AlertmanagerConfig")
    assert amc["apiVersion"] == "monitoring.coreos.com/v1alpha1"
    assert amc["spec"]["route"]["receiver"] == "sop-bot"
    (receiver,) = amc["spec"]["receivers"]
    assert receiver["name"] == "sop-bot"
    (hook,) = receiver["webhookConfigs"]
    assert hook["url"] == f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8080/alertmanager"
    assert hook["sendResolved"] is True
    auth = hook["httpConfig"]["authorization"]
    assert auth["type"] == "Bearer"
    secret = one(objects, "Secret")
    assert auth["credentials"]["name"] == secret["metadata"]["name"]
    assert secret["stringData"][auth["credentials"]["key"]] == "am-bearer"


def test_alertmanager_config_without_a_token_fails_with_a_clear_message(chart):
    with pytest.raises(helm.HelmError, match="secrets.alertmanagerWebhookToken"):
        render(chart, {"alertmanagerConfig": {"enabled": True}})


def test_notes_walk_through_the_slash_command_and_alertmanager(chart):
    text = notes(chart)
    assert "mmctl bot create sop-bot" in text
    assert f"Request URL:   http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8080/mattermost/command" \
        in text
    assert "Method:        POST" in text
    assert "SOPBOT_SLASH__TOKENS" in text
    assert f"http://{FULLNAME}.{NAMESPACE}.svc.cluster.local:8080/alertmanager" in text
    assert "read-only diagnostics" in text
    assert "REMEDIATION ENABLED (approvers: alice)" in notes(
        chart, VALUE_SETS["remediation-defaults"])


def test_rbac_doc_lists_every_rule_the_chart_can_grant(chart):
    doc = (CHART.parents[1] / "docs" / "rbac.md").read_text()
    objects = render(chart, VALUE_SETS["remediation-everything"])
    for _, _, group, resource, verb, names in grants(objects):
        assert f"`{resource}`" in doc, resource
        assert f"`{verb}`" in doc, verb
        assert f"`{group}`" in doc or group == "", group
        for name in names:
            assert f"`{name}`" in doc, name


@pytest.mark.parametrize("content", [
    "# Runbook\n\n## 5. Vault\n\n```sh\nkubectl -n vault get pods\n```\n",
    "  indented first line, no final newline",
    "Unicode \u2713 \u00e9\u00e8 \u2014 {{ .Values.x }} ${VAR} --- # not a comment\n\n\n",
    "trailing spaces   \nand a tab\t\n",
])
def test_runbook_content_arrives_byte_for_byte(chart, content):
    objects = render(chart, {"runbook": {"content": content}})
    assert one(objects, "ConfigMap")["data"]["runbook.md"] == content


def test_pod_gets_time_to_drain_on_sigterm(chart):
    """The bot drains acknowledged SOP runs (up to 90 s) after SIGTERM; Kubernetes' default
    30 s grace would cut them off."""
    spec = one(render(chart), "Deployment")["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= 120


def test_vault_login_check_may_mint_tokens_only_for_cert_managers_issuer_account(chart):
    """Runbook 5.5's login test is opt-in; on, it grants TokenRequest for one ServiceAccount by
    name in one namespace and tells the bot to run it."""
    off = render(chart)
    assert not any(g[3] == "serviceaccounts/token" for g in grants(off))
    assert yaml.safe_load(one(off, "ConfigMap")["data"]["sopbot.yaml"])["checks"]["vault-k8s-auth"]["login_test"] is False
    on = render(chart, {"vaultLoginTest": {"enabled": True}})
    assert {g for g in grants(on) if g[3] == "serviceaccounts/token"} == {
        ("Role", "cert-manager", "", "serviceaccounts/token", "create", ("vault-issuer",))}
    checks = yaml.safe_load(one(on, "ConfigMap")["data"]["sopbot.yaml"])["checks"]
    assert checks["vault-k8s-auth"] == {"login_test": True, "namespace": "cert-manager",
                                        "service_account": "vault-issuer"}
    assert checks["cert-issuer"] == {"login_test": True}
