"""The chart agrees with the code: its RBAC covers every Kubernetes call the bot makes, and the
HTTP paths it points probes, Mattermost and Alertmanager at are routes the bot serves.

Scans bot/ and handlers/ for calls on the in-cluster KubeClient (`ctx.kube`, `self.kube`,
`kube`; not `kube_mgmt`, which talks to another cluster with its own credentials) whose
api_version and plural are string literals, and checks each against the rendered roles:
reads against the read-only diagnostics role, writes against the roles rendered with every
remediation action on. A handler that starts reading, say, Secrets fails here until the chart
and docs/rbac.md grant it on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_chart import CHART, VALUE_SETS, grants, notes, one, render

try:
    import helm_python as helm
except ImportError as exc:  # pragma: no cover
    raise ImportError("helm-python-sdk is not installed: `pip install helm-python-sdk` "
                      "(CI installs it with the test extras)") from exc

REPO = Path(__file__).resolve().parents[2]
VERBS = {"get": "get", "list": "list", "pages": "list", "patch": "patch", "delete": "delete",
         "create": "create"}


def _receiver_is_kube(node: ast.expr, aliases: frozenset[str] = frozenset()) -> bool:
    """``kube``, ``ctx.kube``/``self.kube``, ``kube(env)``, or a name assigned one of those."""
    if isinstance(node, ast.Name):
        return node.id == "kube" or node.id in aliases
    if isinstance(node, ast.Call):
        return isinstance(node.func, ast.Name) and node.func.id == "kube"
    return isinstance(node, ast.Attribute) and node.attr == "kube"


def _literal(node: ast.expr | None, constants: dict[str, str] | None = None) -> str | None:
    """A string literal, or a module-level ``NAME = "..."`` constant."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name) and constants:
        return constants.get(node.id)
    return None


def kube_calls(source: str, filename: str = "<src>") -> list[tuple[str, str, str, str, str | None]]:
    """(where, apiGroup, resource, verb, name) for each KubeClient call in ``source`` whose
    api_version and plural are literals or module constants."""
    tree = ast.parse(source, filename)
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                 for t in n.targets if isinstance(t, ast.Name)}
    aliases = frozenset(t.id for n in ast.walk(tree) if isinstance(n, ast.Assign)
                        and _receiver_is_kube(n.value) for t in n.targets
                        if isinstance(t, ast.Name))
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and _receiver_is_kube(node.func.value, aliases)):
            continue
        if node.func.attr == "request":
            out += _raw_request(node, filename, constants)
            continue
        if node.func.attr not in VERBS:
            continue
        kwargs = {k.arg: k.value for k in node.keywords if k.arg}
        api_version = _literal(node.args[0] if node.args else kwargs.get("api_version"),
                               constants)
        plural = _literal(node.args[1] if len(node.args) > 1 else kwargs.get("plural"), constants)
        if api_version is None or plural is None:
            continue
        group = "" if api_version == "v1" else api_version.split("/")[0]
        resource = plural
        sub = _literal(kwargs.get("subresource"), constants)
        if node.func.attr == "create" and sub:
            resource = f"{plural}/{sub}"
        name = None
        if node.func.attr in ("get", "patch", "delete"):
            name = _literal(node.args[2] if len(node.args) > 2 else kwargs.get("name"), constants)
        out.append((f"{filename}:{node.lineno}", group, resource, VERBS[node.func.attr], name))
    return out


_METHODS = {"GET": "get", "PATCH": "patch", "PUT": "update", "DELETE": "delete", "POST": "create"}


def _raw_request(node: ast.Call, filename: str, constants: dict[str, str]) -> list[tuple]:
    """``kube.request("PATCH", resource_path("apps/v1", "deployments", ns, name, "scale"))``."""
    method = _literal(node.args[0] if node.args else None, constants)
    path = node.args[1] if len(node.args) > 1 else None
    if method not in _METHODS or not (isinstance(path, ast.Call) and isinstance(
            path.func, ast.Name) and path.func.id == "resource_path"):
        return []
    args = path.args
    api_version = _literal(args[0] if args else None, constants)
    plural = _literal(args[1] if len(args) > 1 else None, constants)
    if api_version is None or plural is None:
        return []
    sub = _literal(args[4] if len(args) > 4 else None, constants)
    group = "" if api_version == "v1" else api_version.split("/")[0]
    name = _literal(args[3] if len(args) > 3 else None, constants)
    return [(f"{filename}:{node.lineno}", group, f"{plural}/{sub}" if sub else plural,
             _METHODS[method], name)]


def uncovered(calls, diagnostics, remediation, named) -> list[str]:
    """Calls no rule allows. ``named`` maps (group, resource, verb) to the resourceNames a
    rule restricts it to; a call whose name is not a literal gets the benefit of the doubt."""
    problems = []
    for where, group, resource, verb, name in calls:
        key = (group, resource, verb)
        allowed = diagnostics if verb in ("get", "list") else remediation
        if key in allowed or (key in named and (name is None or name in named[key])):
            continue
        problems.append(f"{where}: {verb} {resource} in apiGroup {group!r}"
                        + (f" named {name!r}" if name else ""))
    return problems


@pytest.fixture(scope="module")
def granted():
    with helm.Chart.load(CHART) as chart:
        defaults = grants(render(chart))
        everything = grants(render(chart, VALUE_SETS["remediation-everything"]))
    # Reads: what a default (read-only) install grants without naming objects.
    diagnostics = {(g, r, v) for _, _, g, r, v, names in defaults if not names}
    remediation = {(g, r, v) for _, _, g, r, v, names in everything if not names}
    named: dict[tuple[str, str, str], set[str]] = {}
    for _, _, g, r, v, names in everything:
        if names:
            named.setdefault((g, r, v), set()).update(names)
    return diagnostics, remediation, named


def test_the_scanner_finds_reads_and_writes_and_flags_ungranted_ones(granted):
    diagnostics, remediation, named = granted
    sample = (
        "CM = 'cert-manager.io/v1'\n"
        "async def h(ctx):\n"
        "    await ctx.kube.list('v1', 'pods', 'vault')\n"
        "    await ctx.kube.get(CM, 'certificates', 'x', 'ns')\n"
        "    await ctx.kube.get('v1', 'secrets', 'vault-init', 'terraform-state')\n"
        "    await ctx.kube_mgmt.list('v1', 'secrets')\n"
        "    await ctx.kube.patch('apps/v1', 'deployments', 'd', {}, 'ns')\n"
        "    await ctx.kube.create('v1', 'pods', {}, 'ns', subresource_of='p',"
        " subresource='eviction')\n"
        "    await ctx.kube.delete('v1', 'configmaps', 'c', 'ns')\n"
        "    k = kube(env)\n"
        "    await k.request('PATCH', resource_path('apps/v1', 'deployments', 'ns', 'd', 'scale'))\n"
        "    await kube(env).request('PATCH', resource_path('apps/v1', 'statefulsets', 'ns', 's',"
        " 'scale'))\n"
        "    await ctx.kube.get('v1', 'secrets', 'harbor-admin', 'harbor')\n"
        "    await ctx.kube.list('v1', 'secrets', 'terraform-state')\n"
    )
    calls = kube_calls(sample)
    assert [c[1:4] for c in calls] == [
        ("", "pods", "list"), ("cert-manager.io", "certificates", "get"),
        ("", "secrets", "get"), ("apps", "deployments", "patch"),
        ("", "pods/eviction", "create"), ("", "configmaps", "delete"),
        ("apps", "deployments/scale", "patch"), ("apps", "statefulsets/scale", "patch"),
        ("", "secrets", "get"), ("", "secrets", "list")]
    # Reading vault-init is the unseal feature's one named grant; other Secrets are not.
    assert uncovered(calls, diagnostics, remediation, named) == [
        "<src>:9: delete configmaps in apiGroup '' named 'c'",
        "<src>:12: patch statefulsets/scale in apiGroup 'apps' named 's'",
        "<src>:13: get secrets in apiGroup '' named 'harbor-admin'",
        "<src>:14: list secrets in apiGroup ''"]


def test_every_kubernetes_call_in_the_code_is_granted_by_the_chart(granted):
    diagnostics, remediation, named = granted
    calls = []
    for package in ("bot", "handlers"):
        for path in sorted((REPO / package).rglob("*.py")):
            calls += kube_calls(path.read_text(), str(path.relative_to(REPO)))
    problems = uncovered(calls, diagnostics, remediation, named)
    assert calls, "found no KubeClient calls: the scanner no longer matches the code"
    assert not problems, (
        "the chart's RBAC does not allow these calls: grant them in "
        "charts/sop-bot/templates (and docs/rbac.md), or drop the call:\n" + "\n".join(problems))


def served_routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every literal aiohttp ``router.add_get/add_post(...)`` in bot/."""
    routes = set()
    for path in sorted((REPO / "bot").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("add_get", "add_post") and node.args
                    and _literal(node.args[0])):
                routes.add((node.func.attr[4:].upper(), _literal(node.args[0])))
    return routes


def test_probes_slash_command_and_webhook_point_at_routes_the_bot_serves():
    routes = served_routes()
    with helm.Chart.load(CHART) as chart:
        objects = render(chart, VALUE_SETS["alertmanager-config"])
        text = notes(chart)
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert ("GET", container["livenessProbe"]["httpGet"]["path"]) in routes
    assert ("GET", container["readinessProbe"]["httpGet"]["path"]) in routes
    assert "/mattermost/command" in text and ("POST", "/mattermost/command") in routes
    hook = one(objects, "AlertmanagerConfig")["spec"]["receivers"][0]["webhookConfigs"][0]
    path = "/" + hook["url"].split("/", 3)[3]
    assert ("POST", path) in routes, f"Alertmanager would POST to {path}, not served"
