"""Scenarios for runbook chapter 5 and 10.4: Vault seal, unseal, Raft, PKI, Kubernetes auth, DR.
(The first Vault scenarios — sealed, partially sealed, no leader, replica down, replica not
joined, PKI missing, intermediate expired — are in ``sandbox.scenarios``.)"""

from __future__ import annotations

from datetime import timedelta

from sandbox.kube.store import Obj
from sandbox.platform import CORE, Platform, add_log, iso, now, set_issuer_ready, sync_vault_pods
from sandbox.scenario_model import Scenario, _vault_api_error
from sandbox.vault.pki import make_pki

NS = "vault"
VAULT_LABELS = {"app.kubernetes.io/name": "vault", "app.kubernetes.io/instance": "vault", "component": "server"}


def restart_vault_pod(p: Platform, name: str, ago: timedelta = timedelta(minutes=2)) -> None:
    """The vault container restarted ``ago`` (a node reboot, an OOM kill): Vault starts sealed."""
    started, ended = iso(now() - ago), iso(now() - ago - timedelta(seconds=5))

    def restarted(o: Obj) -> None:
        for cs in o["status"].get("containerStatuses") or []:
            before = ((cs.get("state") or {}).get("running") or {}).get("startedAt", started)
            cs["lastState"] = {"terminated": {"exitCode": 137, "reason": "Error", "startedAt": before,
                                              "finishedAt": ended, "containerID": cs.get("containerID", "")}}
            cs["state"] = {"running": {"startedAt": started}}
            cs["restartCount"] = int(cs.get("restartCount") or 0) + 1
    p.kube.update(CORE, "Pod", name, NS, restarted)


def _no_leader(p: Platform, lines: list[str]) -> None:
    p.vault.set_no_leader(True)
    sync_vault_pods(p)
    for pod in p.vault_names():
        add_log(p, NS, pod, lines)


def _timeouts(p: Platform, i: int) -> list[str]:
    peer = f"vault-{(i + 1) % 3}"
    return ['[WARN]  storage.raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=',
            f'[ERROR] storage.raft: failed to make requestVote RPC: target="{{Voter {peer} {peer}.vault-internal:8201}}" '
            f'term={57 + i} error="dial tcp 10.42.{i + 1}.15:8201: i/o timeout"']


# -- 5.3: network partition by a NetworkPolicy --------------------------------------------------
def _raft_netpol(p: Platform) -> None:
    """Someone tightened the vault namespace: only the API port 8200 is allowed in."""
    p.kube.add({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "vault-allow-api", "namespace": NS},
                "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "vault"}},
                         "policyTypes": ["Ingress"],
                         "ingress": [{"ports": [{"protocol": "TCP", "port": 8200}]}]}})
    p.vault.set_no_leader(True)
    sync_vault_pods(p)
    for i, pod in enumerate(p.vault_names()):
        add_log(p, NS, pod, _timeouts(p, i))


def _raft_cilium_policy(p: Platform) -> None:
    """A CiliumNetworkPolicy lets the Vault pods be reached from Traefik only."""
    p.kube.add({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
                "metadata": {"name": "vault-from-traefik", "namespace": NS},
                "spec": {"endpointSelector": {"matchLabels": {"app.kubernetes.io/name": "vault"}},
                         "ingress": [{"fromEndpoints": [{"matchLabels": {
                             "k8s:io.kubernetes.pod.namespace": "kube-system", "app.kubernetes.io/name": "rke2-traefik"}}],
                             "toPorts": [{"ports": [{"port": "8200", "protocol": "TCP"}]}]}]}})
    p.vault.set_no_leader(True)
    sync_vault_pods(p)
    for i, pod in enumerate(p.vault_names()):
        add_log(p, NS, pod, _timeouts(p, i))


# -- 5.3: the headless Service lost a peer ------------------------------------------------------
def _headless_missing_peer(p: Platform) -> None:
    """vault-2 lost the labels the headless Service selects: vault-2.vault-internal is NXDOMAIN."""
    def drop(ep: Obj) -> None:
        for sub in ep.get("subsets") or []:
            sub["addresses"] = [a for a in sub.get("addresses") or [] if a.get("hostname") != "vault-2"]
    p.kube.update(CORE, "Endpoints", "vault-internal", NS, drop)
    p.vault.set_no_leader(True)
    sync_vault_pods(p)
    for pod in p.vault_names():
        add_log(p, NS, pod, [
            '[WARN]  storage.raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=',
            '[ERROR] storage.raft: failed to make requestVote RPC: target="{Voter vault-2 vault-2.vault-internal:8201}" '
            'error="dial tcp: lookup vault-2.vault-internal on 10.43.0.10:53: no such host"'])


# -- 5.3: all pods restarted at the same time ---------------------------------------------------
def _restarted_together(p: Platform) -> None:
    """A node drain took all three down at once (the runbook's prevention warns of it): they
    came back seconds apart a minute ago and Raft has not elected yet."""
    t = now()
    for i, pod in enumerate(p.vault_names()):
        started = iso(t - timedelta(seconds=70 - 4 * i))

        def restarted(o: Obj, started: str = started) -> None:
            o["status"]["startTime"] = started
            for cs in o["status"].get("containerStatuses") or []:
                cs["state"] = {"running": {"startedAt": started}}
                cs["restartCount"] = int(cs.get("restartCount") or 0) + 1
        p.kube.update(CORE, "Pod", pod, NS, restarted)
    _no_leader(p, ['[INFO]  storage.raft: initial configuration: index=4231 servers="[vault-0 vault-1 vault-2]"',
                   '[INFO]  storage.raft: entering follower state: follower="Node at vault-internal:8201 [Follower]"'])


# -- 5.3 step 6: a stuck leader ----------------------------------------------------------------
def _stuck_leader(p: Platform) -> None:
    """vault-0 still holds the active lock but its heartbeats stopped reaching the standbys."""
    p.vault.lost_followers = {1, 2}
    for pod in ("vault-1", "vault-2"):
        add_log(p, NS, pod, [
            '[WARN]  storage.raft: heartbeat timeout reached, not part of a stable configuration or a non-voter, '
            'not triggering a leader election',
            "[ERROR] core: error performing key upgrades: error=\"error checking for key upgrades: "
            "node not active but active cluster node not found\""])


# -- 5.5 Kubernetes auth -------------------------------------------------------------------------
def _issuer_failing(p: Platform, error: str, code: int = 403) -> None:
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     "Failed to initialize Vault client: while requesting a Vault token using the Kubernetes auth: "
                     + _vault_api_error("auth/kubernetes/login", "PUT", code, error))


def _auth_stale_host(p: Platform) -> None:
    """The API server's Service IP changed with a cluster rebuild; Vault still dials the old one."""
    p.vault.k8s_auth_config["kubernetes_host"] = "https://10.43.0.2:443"
    _issuer_failing(p, 'Post "https://10.43.0.2:443/apis/authentication.k8s.io/v1/tokenreviews": '
                       "dial tcp 10.43.0.2:443: i/o timeout", 500)


def _auth_stale_ca(p: Platform) -> None:
    """The cluster CA was rotated (RKE2 cert rotation); Vault still trusts the old one."""
    p.vault.k8s_auth_config["kubernetes_ca_cert"] = make_pki().kube_ca.pem
    _issuer_failing(p, 'Post "https://10.43.0.1:443/apis/authentication.k8s.io/v1/tokenreviews": tls: failed to '
                       "verify certificate: x509: certificate signed by unknown authority", 500)


def _auth_role_mismatch(p: Platform) -> None:
    """The role was rewritten for another namespace."""
    role = p.vault.k8s_roles.setdefault("cert-manager-issuer", {"bound_service_account_names": ["vault-issuer"],
                                                                  "policies": ["cert-manager"]})
    role["bound_service_account_namespaces"] = ["cert-manager-old"]
    _issuer_failing(p, "namespace not authorized")


def _auth_issuer_mismatch(p: Platform) -> None:
    """Issuer validation switched on with an issuer the cluster does not put in its tokens."""
    p.vault.k8s_auth_config.update(disable_iss_validation=False, issuer="https://rke2.example.com")
    _issuer_failing(p, "invalid issuer (iss) claim")


def _auth_reviewer_expired(p: Platform) -> None:
    """The 1-year token_reviewer_jwt from the deployment expired (the runbook's prevention)."""
    p.vault.reviewer_expired = True
    _issuer_failing(p, "permission denied")


# -- 5.4 PKI engine ------------------------------------------------------------------------------
def _pki_role_missing(p: Platform) -> None:
    """The signing role was deleted (vault delete pki_int/roles/example-dot-com)."""
    p.vault.pki_roles.pop(p.domain.replace(".", "-dot-"), None)
    p.vault.pki_roles["legacy-dot-internal"] = {"allowed_domains": ["legacy.internal"], "allow_subdomains": True}


def _pki_role_wrong_domain(p: Platform) -> None:
    """The role was rewritten for a test domain: every platform name is refused."""
    # setdefault: composes after a scenario that deleted the role (it comes back wrong).
    role = p.vault.pki_roles.setdefault(p.domain.replace(".", "-dot-"), {"allow_subdomains": True})
    role.update(allowed_domains=["example.org"], allow_subdomains=False)


def _pki_not_imported(p: Platform) -> None:
    """pki_int was lost and re-enabled empty (5.4 step 1 done, steps 2–3 not)."""
    p.vault.enable_empty_pki("pki_int")


# -- 10.4 / 11.5: Raft snapshots ----------------------------------------------------------------
def _snapshot_stale(p: Platform) -> None:
    """The snapshot CronJob has not succeeded for 19 days (the weekly schedule missed twice)."""
    stamp = iso(now() - timedelta(days=19))
    p.kube.update("batch/v1", "CronJob", "vault-raft-snapshot", NS,
                  lambda c: c["status"].update(lastSuccessfulTime=stamp, lastScheduleTime=stamp))


def _snapshot_failing(p: Platform) -> None:
    """Last night's snapshot Job failed: the token it uses was revoked."""
    cron = p.kube.get("batch/v1", "CronJob", "vault-raft-snapshot", NS)
    assert cron is not None
    t = now()
    p.kube.add({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": "vault-raft-snapshot-29410380", "namespace": NS,
                             "creationTimestamp": iso(t - timedelta(hours=3)),
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "vault-raft-snapshot",
                                                  "uid": cron["metadata"]["uid"], "controller": True}]},
                "spec": {"backoffLimit": 6, "template": cron["spec"]["jobTemplate"]["spec"]["template"]},
                "status": {"failed": 7, "startTime": iso(t - timedelta(hours=3)), "conditions": [
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                     "message": "Job has reached the specified backoff limit",
                     "lastProbeTime": iso(t - timedelta(hours=2)), "lastTransitionTime": iso(t - timedelta(hours=2))}]}})


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("vault-snapshot-stale", "the Vault Raft snapshot CronJob last succeeded 19 days ago (11.5)",
             _snapshot_stale, section="11.5", status="warn",
             cause="no recent Raft snapshot: the last successful one is 19 days old"),
    Scenario("vault-snapshot-failing", "the newest Vault snapshot Job failed, BackoffLimitExceeded (10.4)",
             _snapshot_failing, section="10.4", status="warn",
             cause="the snapshot job failed: Job vault-raft-snapshot-29410380: BackoffLimitExceeded"),
    Scenario("vault-pki-role-missing", "pki_int's signing role example-dot-com was deleted (5.4)", _pki_role_missing,
             section="5.4", status="crit", cause="no signing role example-dot-com in pki_int"),
    Scenario("vault-pki-role-wrong-domain", "pki_int's signing role allows example.org only, no subdomains (5.4)",
             _pki_role_wrong_domain, section="5.4", status="crit",
             cause="signing role example-dot-com does not allow the configured domain: allowed_domains ['example.org'] "
                   "lacks example.com; allow_subdomains=false"),
    Scenario("vault-pki-not-imported", "pki_int re-enabled empty: no intermediate CA, no role (5.4)", _pki_not_imported,
             section="5.4", status="crit",
             cause="intermediate CA not imported in pki_int: reading its CA answers InvalidRequest: "
                   "no default issuer currently configured"),
    Scenario("vault-auth-stale-host", "Vault's Kubernetes auth dials an old API server IP (5.5)", _auth_stale_host,
             section="5.5", status="crit",
             cause="stale API server URL: kubernetes_host https://10.43.0.2:443 is not the cluster's API"),
    Scenario("vault-auth-stale-ca", "Vault's Kubernetes auth trusts a CA the cluster no longer uses (5.5)",
             _auth_stale_ca, section="5.5", status="crit", cause="stale CA certificate: kubernetes_ca_cert is"),
    Scenario("vault-auth-role-mismatch", "cert-manager's Vault role binds another namespace (5.5)", _auth_role_mismatch,
             section="5.5", status="crit", cause="role binding mismatch: binds ['vault-issuer'] in ['cert-manager-old']"),
    Scenario("vault-auth-issuer-mismatch", "issuer validation on with an issuer the cluster does not use (5.5)",
             _auth_issuer_mismatch, section="5.5", status="crit",
             cause="issuer mismatch: the config expects https://rke2.example.com"),
    Scenario("vault-auth-reviewer-expired", "the auth config's token reviewer JWT expired: every login denied (5.5)",
             _auth_reviewer_expired, section="5.5", status="crit",
             cause="so the token reviewer is refusing it"),
    Scenario("vault-stuck-leader", "vault-0 is active but the standbys report no leader (5.3 step 6)",
             _stuck_leader, section="5.3", status="crit",
             cause="stuck leader: vault-0 is active but vault-1, vault-2 follow(s) no leader"),
    Scenario("vault-raft-netpol", "a NetworkPolicy in vault admits only port 8200: Raft cannot elect (5.3)",
             _raft_netpol, section="5.3", status="crit",
             cause="NetworkPolicy vault/vault-allow-api (ingress) blocks Raft port 8201"),
    Scenario("vault-raft-cilium-policy", "a CiliumNetworkPolicy admits Traefik on 8200 only: Raft cannot elect (5.3)",
             _raft_cilium_policy, section="5.3", status="crit",
             cause="CiliumNetworkPolicy vault/vault-from-traefik (ingress) blocks Raft port 8201"),
    Scenario("vault-headless-missing-peer", "vault-internal's Endpoints lack vault-2: its name does not resolve (5.3)",
             _headless_missing_peer, section="5.3", status="crit",
             cause="headless Service vault-internal lacks vault-2"),
    Scenario("vault-restarted-together", "all Vault pods restarted a minute ago, Raft still electing (5.3)",
             _restarted_together, section="5.3", status="crit",
             cause="all replicas restarted simultaneously"),
)
