"""The management cluster's RBAC (charts/sop-bot/templates/rbac-management.yaml): a different
cluster with its own kubeconfig, so it is rendered only on demand and never into the bot's own
cluster; what it grants is exactly what the code calls through ``kube_mgmt`` — scanned from
handlers/ like test_chart_vs_code.py scans the in-cluster client — and nothing more."""

from __future__ import annotations

import ast
from pathlib import Path

import kubernetes_validate
import pytest
from test_chart import CHART, KUBE_VERSIONS, notes, one, render
from test_chart_vs_code import VERBS, _literal

from bot.approvals.actions import ACTIONS
from bot.registry import load_handlers

try:
    import helm_python as helm
except ImportError as exc:  # pragma: no cover
    raise ImportError("helm-python-sdk is not installed: `pip install helm-python-sdk`") from exc

REPO = Path(__file__).resolve().parents[2]
ON = {"mgmtKubeconfig": {"rbac": {"render": True}}}
ALL_ACTIONS = {"startVm": True, "restartVm": True, "deleteMachine": True}
TOGGLES = {"startVm": "start-vm", "restartVm": "restart-vm", "deleteMachine": "delete-machine"}
MGMT_SA = ("ServiceAccount", "sop-bot", "sop-bot-management")


def _values(*, remediation: bool = False, actions: dict[str, bool] | None = None) -> dict:
    rbac = {"render": True, **({"actions": actions} if actions is not None else {})}
    return {"mgmtKubeconfig": {"rbac": rbac}, "remediation": {"enabled": remediation}}


def _is_mgmt(node: ast.expr | None, aliases: frozenset[str]) -> bool:
    """``mgmt``, ``ctx.kube_mgmt``, ``mgmt(env)`` / ``_mgmt(ctx)``, ``ctx.kube_mgmt or ...``, or a
    name the same function assigned one of those."""
    if isinstance(node, ast.Name):
        return node.id == "mgmt" or node.id in aliases
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id in ("mgmt", "_mgmt")
    if isinstance(node, ast.BoolOp):  # `ctx.kube_mgmt or ctx.require_kube()`: the management client when set
        return any(_is_mgmt(v, aliases) for v in node.values)
    return isinstance(node, ast.Attribute) and node.attr == "kube_mgmt"


def mgmt_calls(source: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of each KubeClient call on the management client."""
    tree = ast.parse(source)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    out = set()
    for scope in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        aliases = frozenset(t.id for n in ast.walk(scope) if isinstance(n, ast.Assign)
                            and _is_mgmt(n.value, frozenset()) for t in n.targets if isinstance(t, ast.Name))
        for node in ast.walk(scope):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in VERBS and _is_mgmt(node.func.value, aliases)):
                continue
            api_version = _literal(node.args[0] if node.args else None, constants)
            plural = _literal(node.args[1] if len(node.args) > 1 else None, constants)
            if api_version is None or plural is None:
                continue
            out.add(("" if api_version == "v1" else api_version.split("/")[0], plural, VERBS[node.func.attr]))
    return out


def code_reads_and_writes() -> tuple[set, set]:
    calls: set[tuple[str, str, str]] = set()
    for path in sorted((REPO / "handlers").rglob("*.py")):
        calls |= mgmt_calls(path.read_text())
    reads = {c for c in calls if c[2] in ("get", "list")}
    writes = {c for c in calls if c[2] not in ("get", "list")}
    # start-vm / restart-vm PUT virt-api's subresources: PUT is the `update` verb.
    from handlers.actions.harvester import SUBRESOURCES_API, _VmVerb
    for action in ACTIONS.values():
        if isinstance(action, _VmVerb):
            writes.add((SUBRESOURCES_API.split("/")[0], f"virtualmachines/{action.verb}", "update"))
    return reads, writes


def rules(role: dict) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
            for v in rule["verbs"]}


@pytest.fixture(scope="module")
def chart():
    load_handlers()  # registers the actions the writes are derived from
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def mgmt_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if "management" in o["metadata"]["name"]]


def test_the_scanner_sees_the_management_calls():
    sample = ("async def h(ctx, env):\n"
              "    mgmt = ctx.kube_mgmt\n"
              "    await mgmt.list('kubevirt.io/v1', 'virtualmachines')\n"
              "    k = mgmt(env)\n"
              "    await k.delete('cluster.x-k8s.io/v1beta1', 'machines', 'm', 'fleet-default')\n"
              "    await ctx.kube.list('v1', 'pods')\n"
              "async def g(ctx):\n"
              "    kube = ctx.kube_mgmt or ctx.require_kube()\n"
              "    await kube.list('provisioning.cattle.io/v1', 'clusters', 'fleet-default')\n"
              "async def f(ctx):\n"
              "    kube = ctx.require_kube()\n"
              "    await kube.list('v1', 'secrets')\n")
    assert mgmt_calls(sample) == {("kubevirt.io", "virtualmachines", "list"),
                                  ("cluster.x-k8s.io", "machines", "delete"),
                                  ("provisioning.cattle.io", "clusters", "list")}
    reads, writes = code_reads_and_writes()
    assert ("kubevirt.io", "virtualmachines", "list") in reads
    assert ("subresources.kubevirt.io", "virtualmachines/start", "update") in writes


def test_nothing_for_the_management_cluster_is_rendered_into_the_bots_cluster(chart):
    for values in ({}, {"remediation": {"enabled": True}}, {"mgmtKubeconfig": {"existingSecret": "hv"}}):
        assert mgmt_objects(render(chart, values)) == []


def test_rendered_on_demand_it_is_valid_and_reads_exactly_what_the_sops_read(chart):
    objects = render(chart, _values())
    for obj in mgmt_objects(objects):
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
    role = one(objects, "ClusterRole", "sop-bot-management-diagnostics")
    reads, _ = code_reads_and_writes()
    assert rules(role) == reads
    assert "secret" not in str(role["rules"]).lower()
    assert not any("*" in item for rule in role["rules"] for key in rule.values() for item in key)
    binding = one(objects, "ClusterRoleBinding", "sop-bot-management-diagnostics")
    assert [(s["kind"], s["namespace"], s["name"]) for s in binding["subjects"]] == [MGMT_SA]
    token = one(objects, "Secret", "sop-bot-management-token")
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "sop-bot-management"
    assert {o["kind"] for o in mgmt_objects(objects)} == {"ServiceAccount", "Secret", "ClusterRole",
                                                          "ClusterRoleBinding"}
    # Rendering it changes nothing else: the bot's own cluster gets the same objects either way.
    assert [o for o in objects if o not in mgmt_objects(objects)] == render(chart, {"remediation": {"enabled": False}})
    # Read-only unless remediation is on, whatever the action toggles say.
    assert [o for o in objects if o["metadata"]["name"] == "sop-bot-management-remediation"] == []
    off = render(chart, _values(actions=ALL_ACTIONS))
    assert [o for o in off if o["metadata"]["name"] == "sop-bot-management-remediation"] == []


def test_with_remediation_the_writes_are_exactly_the_management_actions(chart):
    _, writes = code_reads_and_writes()
    role = one(render(chart, _values(remediation=True, actions=ALL_ACTIONS)), "ClusterRole",
               "sop-bot-management-remediation")
    assert rules(role) == writes
    for toggle, action in TOGGLES.items():
        objects = render(chart, _values(remediation=True, actions={k: k == toggle for k in TOGGLES}))
        granted = rules(one(objects, "ClusterRole", "sop-bot-management-remediation"))
        assert len(granted) == 1 and granted <= writes, (toggle, granted)
        assert action in ACTIONS
    none = render(chart, _values(remediation=True, actions={k: False for k in TOGGLES}))
    assert [o for o in none if o["metadata"]["name"] == "sop-bot-management-remediation"] == []
    # The defaults: start (low risk) on, restart and delete-machine (high risk) off.
    defaults = rules(one(render(chart, _values(remediation=True)), "ClusterRole", "sop-bot-management-remediation"))
    assert defaults == {("subresources.kubevirt.io", "virtualmachines/start", "update")}


def test_mistyped_management_values_are_refused(chart):
    with pytest.raises(helm.HelmValuesError, match="startVM"):
        render(chart, {"mgmtKubeconfig": {"rbac": {"render": True, "actions": {"startVM": True}}}})


def test_the_install_notes_say_how_to_apply_the_management_rbac(chart):
    text = notes(chart, {"mgmtKubeconfig": {"existingSecret": "harvester-kubeconfig"}})
    assert "--show-only templates/rbac-management.yaml" in text and "Secret harvester-kubeconfig" in text
    assert "rbac-management.yaml" not in notes(chart)
