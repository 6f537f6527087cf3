"""The daily health check (runbook 11.1) against the sandbox: each broken thing shows up in its
area with the right status and a runbook step; everything else stays ok."""

from __future__ import annotations

import re

import pytest

from bot.health import HealthReport, health_markdown, health_text
from bot.models import Finding, Severity, Status
from bot.registry import NoParams, Registry, sop
from tests.health.conftest import bad_token_kubeconfig

AREAS = ["Nodes", "Node labels", "Pods", "Vault", "Certificates", "CNPG", "Gateways", "HTTPRoutes", "IngressRoutes",
         "PVCs", "Traefik", "Alerts"]
SECTION = re.compile(r"^\d+(\.\d+)*\b")


def area(report: HealthReport, name: str):
    return next(a for a in report.areas if a.area == name)


def not_ok(report: HealthReport) -> dict[str, Status]:
    return {a.area: a.status for a in report.areas if a.status is not Status.ok}


def problem_text(report: HealthReport, name: str) -> str:
    return "\n".join(f"{f.target} | {f.summary}" for f in area(report, name).report.findings
                     if f.status is not Status.ok)


async def test_healthy_platform_is_all_good_and_fetches_each_list_once(run_daily):
    report = await run_daily()
    assert [a.area for a in report.areas] == AREAS
    assert not_ok(report) == {}, health_text(report)
    assert report.headline == "all good"
    assert "6/6 nodes Ready (expected 6)" in area(report, "Nodes").headline
    assert "external IP 203.0.113.202" in area(report, "Traefik").headline
    assert area(report, "Alerts").headline == "no alerts firing"
    root, replies = health_markdown(report)
    assert "**all good**" in root and replies == []
    # The composed handlers share one per-run cache: no list or object is fetched twice.
    assert report.fetches and set(report.fetches.values()) == {1}, report.fetches


# scenario → {area: status} of every area that is not ok, and what the worst area must name
SCENARIOS = {
    "vault-sealed": ({"Vault": Status.crit, "Certificates": Status.crit},
                     ("Vault", "sealed, unseal progress 0/3")),
    "node-disk-pressure": ({"Nodes": Status.crit}, ("Nodes", "node/rke2-general-1 | NotReady")),
    "cert-expiring": ({"Certificates": Status.warn},
                      ("Certificates", "certificate/keycloak/keycloak-example-com-tls | expires in 10 days")),
    "pvc-pending": ({"PVCs": Status.warn, "Pods": Status.warn},
                    ("PVCs", "pvc/uptime-kuma/uptime-kuma | Pending")),
    "pod-crashloop": ({"Pods": Status.warn}, ("Pods", "harbor CrashLoopBackOff | 1 pod(s) CrashLoopBackOff "
                                                      "(last exit 1 Error), 14 restarts: harbor-registry-")),
    "lb-ip-pending": ({"Traefik": Status.crit}, ("Traefik", "EXTERNAL-IP <pending>")),
    "cnpg-failover": ({"CNPG": Status.warn}, ("CNPG", "cluster/database/keycloak-pg | Ready=False, 2/3 instances")),
    "gateway-not-accepted": ({"Gateways": Status.crit, "HTTPRoutes": Status.warn},
                             ("Gateways", "gateway/keycloak/keycloak-gateway | Accepted=False (ListenersNotValid")),
    "unlabeled-nodes": ({"Node labels": Status.warn, "Pods": Status.warn},
                        ("Node labels", "2 worker(s) without workload-type: rke2-compute-1, rke2-general-1")),
    "cordoned-node": ({"Nodes": Status.warn}, ("Nodes", "node/rke2-database-1 cordoned")),
    "kubelet-skew": ({"Nodes": Status.warn}, ("Nodes", "2 on v1.33.4+rke2r1: rke2-cp-3, rke2-database-1")),
    "pod-pending": ({"Pods": Status.warn}, ("Pods", "mattermost Pending | 1 pod(s) Pending (Insufficient memory)")),
    "image-pull-backoff": ({"Pods": Status.warn}, ("Pods", "kasm ImagePullBackOff")),
    "coredns-down": ({"Pods": Status.crit}, ("Pods", "kube-system CrashLoopBackOff | 2 pod(s)")),
    "cert-not-ready": ({"Certificates": Status.warn},
                       ("Certificates", "certificates not Ready | 1 of 13: harbor/harbor-example-com-tls")),
    "issuer-not-ready": ({"Certificates": Status.crit}, ("Certificates", "clusterissuer/vault-issuer | Ready=False")),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_each_scenario_shows_in_its_area_with_a_runbook_step(sandbox, run_daily, scenario):
    await sandbox.apply(scenario)
    report = await run_daily()
    expected, (name, text) = SCENARIOS[scenario]
    assert not_ok(report) == expected, health_text(report)
    assert text in problem_text(report, name)
    worst = max(expected.values(), key=lambda s: s.rank)
    assert report.status is worst
    for a in report.areas:
        for f in a.report.findings:
            if f.status is not Status.ok:
                assert SECTION.match(f.next_step), (a.area, f)  # every problem cites the runbook


async def test_pending_pods_name_their_cause(sandbox, run_daily):
    await sandbox.apply("pvc-pending")
    report = await run_daily()
    pods = area(report, "Pods").report
    group = next(f for f in pods.findings if f.target == "uptime-kuma Pending")
    assert "pod has unbound immediate PersistentVolumeClaims" in group.summary
    assert group.next_step.startswith("8.1")


async def test_completed_job_pods_are_fine(sandbox, run_daily):
    pod = sandbox.platform.pods("harbor", {"component": "core"})[0]
    done = {**pod, "metadata": {**pod["metadata"], "name": "backup-29150400-abcde", "uid": "u-job",
                                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                     "name": "backup-29150400", "uid": "j1", "controller": True}]},
            "status": {**pod["status"], "phase": "Succeeded",
                       "containerStatuses": [{**c, "ready": False, "started": False,
                                              "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                                             for c in pod["status"]["containerStatuses"]]}}
    done["metadata"].pop("resourceVersion", None)
    sandbox.platform.kube.add(done)
    report = await run_daily()
    assert area(report, "Pods").status is Status.ok, health_text(report)


async def test_firing_alerts_are_counted_by_severity(alertmanager, run_daily):
    await alertmanager.fire("KubePodCrashLooping", severity="warning", namespace="harbor")
    await alertmanager.fire("KubePodCrashLooping", severity="warning", namespace="kasm")
    await alertmanager.fire("VaultSealed", severity="critical")
    await alertmanager.fire("Watchdog", severity="none")  # always firing by design: ignored
    report = await run_daily()
    alerts = area(report, "Alerts").report
    assert alerts.status is Status.crit
    by_target = {f.target: f for f in alerts.findings}
    assert by_target["alerts"].summary == "3 firing (2 warning, 1 critical)"
    assert by_target["severity critical"].status is Status.crit
    assert by_target["severity critical"].summary == "1 firing: VaultSealed"
    assert by_target["severity warning"].status is Status.warn
    assert by_target["severity warning"].summary == "2 firing: KubePodCrashLooping×2"


async def test_a_failed_source_is_unknown_and_the_rest_still_report(sandbox, alertmanager, settings, run_daily):
    await sandbox.apply("vault-sealed")
    alertmanager.stop()  # Alertmanager down
    bad = bad_token_kubeconfig(sandbox)  # Kubernetes answers 401
    broken = settings.model_copy(update={"kubernetes": settings.kubernetes.model_copy(update={"kubeconfig": bad})})
    report = await run_daily(broken)
    statuses = {a.area: a.status for a in report.areas}
    assert statuses["Vault"] is Status.crit  # Vault answers on its own API: still reported
    for name in AREAS:
        if name != "Vault":
            assert statuses[name] is Status.unknown, (name, area(report, name).report.findings)
    assert "alertmanager" in problem_text(report, "Alerts")
    assert "Unauthorized" in area(report, "Nodes").headline, area(report, "Nodes").headline
    assert report.headline == "1 critical, 11 unknown"


async def test_root_post_has_a_line_per_area_and_replies_for_problem_areas(sandbox, run_daily):
    await sandbox.apply("pod-crashloop", "lb-ip-pending")
    report = await run_daily()
    root, replies = health_markdown(report)
    assert root.splitlines()[0].endswith("**1 critical, 1 warning**")
    for name in AREAS:
        assert f"**{name}** — " in root
    assert "- :red_circle: **Traefik** — svc/kube-system/rke2-traefik: EXTERNAL-IP <pending>" in root
    assert len(replies) == 2  # one per non-ok area, worst first
    assert replies[0].startswith("**Traefik** — runbook 3.3 · dig deeper with `/sop traefik-lb`")
    assert replies[1].startswith("**Pods** — runbook 11.1 · dig deeper with `/sop pod-health`")
    assert "harbor-registry-" in replies[1] and "14 restarts" in replies[1]


async def test_composed_handlers_share_one_fetch_of_a_list(sandbox, monkeypatch):
    """Two areas reading the same list at the same time cause one set of HTTP requests."""
    from collections import Counter

    from bot.clients.kube import KubeClient
    from bot.health import HealthCheck, run_health
    from bot.runtime import build_context

    sent: Counter[str] = Counter()
    real = KubeClient.request

    async def counting(self, method, path, **kw):
        sent[path] += 1
        return await real(self, method, path, **kw)

    monkeypatch.setattr(KubeClient, "request", counting)
    reg = Registry()

    @sop("count-nodes", title="count nodes", section="2.2", severity=Severity.P4, registry=reg)
    async def count_nodes(ctx, params: NoParams) -> list[Finding]:
        return [Finding(status=Status.ok, summary=f"{len(await ctx.kube.list('v1', 'nodes'))} nodes")]

    @sop("ready-nodes", title="ready nodes", section="2.2", severity=Severity.P4, registry=reg)
    async def ready_nodes(ctx, params: NoParams) -> list[Finding]:
        nodes = await ctx.kube.list("v1", "nodes", limit=2)  # pages of 2: three requests
        return [Finding(status=Status.ok, summary=f"{len(nodes)} listed")]

    ctx = await build_context(sandbox.settings())
    try:
        report = await run_health("t", [HealthCheck("A", "count-nodes"), HealthCheck("B", "ready-nodes")], reg, ctx)
        alone = await run_health("t", [HealthCheck("B", "ready-nodes")], reg, ctx)
    finally:
        await ctx.close()
    assert [a.headline for a in report.areas] == ["6 nodes", "6 listed"]
    assert alone.areas[0].headline == "6 listed"
    # Area A asked first (tasks start in order): one request with limit 500 served both areas;
    # B alone pages by 2 (three requests). Without the shared fetch it would be 1 + 3 + 3.
    assert report.fetches == {"/api/v1/nodes": 1}
    assert sent["/api/v1/nodes"] == 1 + 3


async def test_each_area_runs_alone_as_its_own_sop(sandbox, settings, run_daily):
    """`/sop <id>` runs one area's handler by itself, with the same outcome."""
    from bot.clients.alertmanager import AlertmanagerClient
    from bot.engine import run_sop
    from bot.registry import load_handlers
    from bot.runtime import build_context

    await sandbox.apply("pod-crashloop", "lb-ip-pending", "cert-expiring")
    report = await run_daily()
    registry = load_handlers()
    ctx = await build_context(settings)
    ctx.alertmanager = AlertmanagerClient(settings.alertmanager.url)
    try:
        for a in report.areas:
            alone = await run_sop(registry.get(a.report.sop_id), ctx)
            assert alone.status is a.status, a.area
            assert [f.target for f in alone.findings] == [f.target for f in a.report.findings], a.area
    finally:
        await ctx.alertmanager.close()
        await ctx.close()


async def test_oomkilled_and_failed_pods_are_grouped_by_reason(sandbox, run_daily):
    from sandbox.platform import CORE, set_pod_waiting

    p = sandbox.platform
    grafana = p.pods("monitoring", {"app": "grafana"})[0]["metadata"]["name"]
    set_pod_waiting(p, "monitoring", grafana, "CrashLoopBackOff", "back-off 5m0s restarting failed container",
                    restart_count=7, last_exit=(137, "OOMKilled"))
    kuma = p.pods("uptime-kuma", {"app": "uptime-kuma"})[0]["metadata"]["name"]

    def failed(pod):
        pod["status"]["phase"] = "Failed"
        for c in pod["status"]["containerStatuses"]:
            c["state"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    p.kube.update(CORE, "Pod", kuma, "uptime-kuma", failed)
    keycloak = p.pods("keycloak", {"app": "keycloak"})[0]["metadata"]["name"]

    def init_crashing(pod):
        pod["status"]["phase"] = "Pending"
        pod["status"]["initContainerStatuses"] = [{
            "name": "wait-for-db", "ready": False, "restartCount": 4, "image": "busybox", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]
        for c in pod["status"]["containerStatuses"]:
            c["state"] = {"waiting": {"reason": "PodInitializing"}}
    p.kube.update(CORE, "Pod", keycloak, "keycloak", init_crashing)
    report = await run_daily()
    pods = {f.target: f for f in area(report, "Pods").report.findings}
    assert "7 restarts" in pods["monitoring OOMKilled"].summary and grafana in pods["monitoring OOMKilled"].summary
    assert pods["monitoring OOMKilled"].next_step.startswith("1 (flowchart): the container exceeds its memory limit")
    assert "7.4 for monitoring" in pods["monitoring OOMKilled"].next_step
    assert kuma in pods["uptime-kuma Error"].summary
    assert pods["keycloak Init:CrashLoopBackOff"].summary.startswith(
        "1 pod(s) Init:CrashLoopBackOff (last exit 1 Error), 4 restarts")
    assert pods["keycloak Init:CrashLoopBackOff"].next_step.startswith("1 (flowchart): kubectl logs")
    assert pods["pods"].summary == "3 of 104 pods not Running/Succeeded in 3 namespace(s)"


def test_schedule_selection_by_ids_and_severity():
    from bot.health import COMPOSITIONS, select
    from bot.registry import load_handlers

    registry = load_handlers()
    daily = COMPOSITIONS["daily"]
    p1 = select(daily, registry, severities=[Severity.P1])
    assert [c.area for c in p1] == ["Vault", "Gateways"]  # the runbook's P1 checks
    picked = select(daily, registry, sop_ids=["traefik-lb", "vault-status", "no-such-check"])
    assert [(c.area, c.sop_id) for c in picked] == [("Vault", "vault-status"), ("Traefik", "traefik-lb"),
                                                    ("no-such-check", "no-such-check")]


async def test_an_unknown_sop_in_a_schedule_is_an_unknown_area(sandbox):
    from bot.health import HealthCheck, run_health
    from bot.registry import load_handlers
    from bot.runtime import build_context

    ctx = await build_context(sandbox.settings())
    try:
        report = await run_health("t", [HealthCheck("Typo", "node-helth"), HealthCheck("Nodes", "node-health")],
                                  load_handlers(), ctx)
    finally:
        await ctx.close()
    assert [a.status for a in report.areas] == [Status.unknown, Status.ok]
    assert report.areas[0].headline == "node-helth: no SOP 'node-helth' is registered"
