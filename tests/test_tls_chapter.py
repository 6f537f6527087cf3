"""Runbook chapter 4 beyond the scenario table: the TLSStore action from the config (dry-run
preview, then the real write), what the 4.5 handshake SOP shows a user, and /sop triage tls."""

from __future__ import annotations

from bot.approvals.actions import ACTIONS, ActionEnv
from bot.config import RemediationConfig
from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers
from bot.runtime import build_context
from sandbox.platform import TRAEFIK

REGISTRY = {s.id: s for s in load_handlers()}


async def test_tlsstore_missing_is_proposed_and_applied_from_the_config(sandbox) -> None:
    await sandbox.apply("tls-tlsstore-missing")
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["tls-handshake"], ctx)
        store = next(f for f in report.findings if f.target == "tlsstore/kube-system/default")
        assert store.status is Status.warn and [a.action for a in store.actions] == ["apply-tlsstore"]
        action = ACTIONS["apply-tlsstore"]
        env = ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True, approvers=["alice"]))
        params = action.params()
        plan = await action.plan(env, params)
        assert plan.dry_run and plan.operations == [f"CREATE {TRAEFIK} tlsstores kube-system/default"]
        assert "secretName: wildcard-example-com-tls" in plan.preview and "kind: TLSStore" in plan.preview
        assert sandbox.platform.kube.get(TRAEFIK, "TLSStore", "default", "kube-system") is None  # dry run only
        outcome = await action.run(env, params)
        assert outcome.ok, outcome.summary
        created = sandbox.platform.kube.get(TRAEFIK, "TLSStore", "default", "kube-system")
        assert created["spec"] == {"defaultCertificate": {"secretName": "wildcard-example-com-tls"}}
        assert (await action.plan(env, params)).nothing_to_do
        after = await run_sop(REGISTRY["tls-handshake"], ctx)
        assert after.status is Status.ok, [f.summary for f in after.findings]
    finally:
        await ctx.close()


async def test_the_tlsstore_secret_is_never_invented(sandbox) -> None:
    await sandbox.apply("tls-tlsstore-missing")
    ctx = await build_context(sandbox.settings(checks={}))
    try:
        report = await run_sop(REGISTRY["tls-handshake"], ctx)
        store = next(f for f in report.findings if f.target == "tlsstore/kube-system/default")
        assert store.status is Status.warn and store.actions == []
        plan = await ACTIONS["apply-tlsstore"].plan(
            ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True)), ACTIONS["apply-tlsstore"].params())
        assert plan.blocked and "tlsstore.secret is not set" in plan.blocked
    finally:
        await ctx.close()


async def test_expired_served_certificate_proposes_the_reissue_of_its_certificate(sandbox) -> None:
    await sandbox.apply("tls-served-cert-expired")
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["tls-handshake"], ctx)
    finally:
        await ctx.close()
    bad = [f for f in report.findings if f.status is not Status.ok]
    assert [f.target for f in bad] == ["https://grafana.example.com"]
    assert "expired 3 days ago" in bad[0].summary and "issuer CN=Example Org Intermediate CA" in bad[0].summary
    assert [(a.action, a.params) for a in bad[0].actions] == [
        ("reissue-certificate", {"namespace": "monitoring", "certificate": "grafana-example-com-tls"})]


async def test_without_probes_the_handshake_is_unknown_not_ok(sandbox) -> None:
    ctx = await build_context(sandbox.settings(probe={}))
    try:
        report = await run_sop(REGISTRY["tls-handshake"], ctx)
    finally:
        await ctx.close()
    assert report.status is Status.unknown
    assert any("no probes configured" in f.summary for f in report.findings if f.status is Status.unknown)


async def test_an_invalidated_issuer_token_is_recreated_for_the_serviceaccount_as_it_is_now(sandbox) -> None:
    import base64

    await sandbox.apply("tls-cert-sa-token-invalid")
    store = sandbox.platform.kube
    old = store.get("v1", "Secret", "vault-issuer-token", "cert-manager")
    old_uid, old_token = old["metadata"]["uid"], old["data"]["token"]
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["cert-issuer"], ctx)
        token = next(f for f in report.findings if f.target == "secret/cert-manager/vault-issuer-token")
        assert token.status is Status.crit and "TokenReview refuses" in token.summary
        assert [(a.action, a.params) for a in token.actions] == [("recreate-issuer-token", {"issuer": "vault-issuer"})]
        action = ACTIONS["recreate-issuer-token"]
        env = ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True, approvers=["alice"]))
        params = action.params(issuer="vault-issuer")
        plan = await action.plan(env, params)
        assert plan.dry_run and plan.operations == ["DELETE v1 secrets cert-manager/vault-issuer-token",
                                                    "CREATE v1 secrets cert-manager/vault-issuer-token"]
        assert "kubernetes.io/service-account.name: vault-issuer" in plan.preview
        assert old_token not in plan.preview and "token:" not in plan.preview  # never the Secret's data
        assert store.get("v1", "Secret", "vault-issuer-token", "cert-manager")["metadata"]["uid"] == old_uid
        outcome = await action.run(env, params)
        assert outcome.ok and old_token not in outcome.summary
    finally:
        await ctx.close()
    new = store.get("v1", "Secret", "vault-issuer-token", "cert-manager")
    assert new["metadata"]["uid"] != old_uid and new["type"] == "kubernetes.io/service-account-token"
    claims = store.tokens.review(base64.b64decode(new["data"]["token"]).decode())
    sa = store.get("v1", "ServiceAccount", "vault-issuer", "cert-manager")
    assert claims is not None and claims["kubernetes.io"]["serviceaccount"]["uid"] == sa["metadata"]["uid"]


async def test_an_issuer_with_serviceaccountref_has_no_token_secret_to_recreate(sandbox) -> None:
    ctx = await build_context(sandbox.settings())
    try:
        plan = await ACTIONS["recreate-issuer-token"].plan(
            ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True)), ACTIONS["recreate-issuer-token"].params())
    finally:
        await ctx.close()
    assert plan.nothing_to_do and "serviceAccountRef" in plan.nothing_to_do


async def _cert_finding(sandbox, target: str):
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["cert-health"], ctx)
    finally:
        await ctx.close()
    return next(f for f in report.findings if f.target == target)


async def test_the_role_cause_is_shown_with_vaults_role_and_the_reissue_follows_its_fix(sandbox) -> None:
    await sandbox.apply("tls-cert-role-denied")
    target = "certificate/harbor/harbor-example-com-tls"
    denied = await _cert_finding(sandbox, target)
    assert "common name harbor.example.com not allowed by this role" in denied.summary
    assert ("now: Vault role pki_int/roles/example-dot-com allowed_domains ['internal.example.com'] "
            "(allow_subdomains true, allow_bare_domains false) does not cover harbor.example.com") in denied.summary
    assert denied.actions == [] and denied.next_step.startswith("4.1 step 3")
    sandbox.platform.vault.pki_roles["example-dot-com"]["allowed_domains"] = ["example.com"]  # the fix, by hand
    fixed = await _cert_finding(sandbox, target)
    assert "covers harbor.example.com" in fixed.summary and fixed.next_step.startswith("4.1 step 5")
    assert [(a.action, a.params) for a in fixed.actions] == [
        ("reissue-certificate", {"namespace": "harbor", "certificate": "harbor-example-com-tls"})]


async def test_a_sealed_vault_is_counted_and_the_reissue_follows_the_unseal(sandbox) -> None:
    await sandbox.apply("tls-cert-vault-sealed")
    target = "certificate/mattermost/mattermost-example-com-tls"
    sealed = await _cert_finding(sandbox, target)
    assert sealed.summary.startswith("Vault is sealed: certificaterequest/") and "now: 3 of 3 Vault replicas sealed" in sealed.summary
    assert sealed.actions == []
    sandbox.platform.vault.unseal_all()
    after = await _cert_finding(sandbox, target)
    assert "now: 0 of 3 Vault replicas sealed" in after.summary
    assert [a.action for a in after.actions] == ["reissue-certificate"]


def test_probing_sops_take_no_target_from_chat() -> None:
    # Probe targets come from cluster objects and the config: these SOPs accept no argument at all.
    for sop_id in ("tls-handshake", "cert-issuer"):
        params = REGISTRY[sop_id].params
        assert params.model_fields == {}, sop_id
        try:
            params.model_validate({"host": "169.254.169.254"})
        except ValueError as exc:
            assert "host" in str(exc)
        else:
            raise AssertionError(f"{sop_id} accepted a host argument")


async def test_the_issuer_checks_fall_back_to_the_replicas_when_not_probed(sandbox) -> None:
    await sandbox.apply("tls-issuer-vault-sealed")
    ctx = await build_context(sandbox.settings(probe={}, checks={}))
    try:
        report = await run_sop(REGISTRY["cert-issuer"], ctx)
    finally:
        await ctx.close()
    summaries = [f"{f.status.value} {f.summary}" for f in report.findings]
    assert "unknown probe: no probes configured (probe.allowed_cidrs)" in summaries
    assert "crit Vault is sealed: every replica reports Sealed=true" in summaries
    healthy = await build_context(sandbox.settings(probe={}, checks={}))
    try:
        sandbox.platform.vault.unseal_all()
        again = await run_sop(REGISTRY["cert-issuer"], healthy)
    finally:
        await healthy.close()
    assert any(f.summary == "login not tested (checks.cert-issuer.login_test is off)" for f in again.findings)
    # Unsealed now, but the issuer has not recovered yet; with the probe not run, the bot does not
    # claim that every check passed (it would send the user to the escalation).
    [issuer] = [f for f in again.findings if f.target == "clusterissuer/vault-issuer"]
    assert issuer.status.value == "crit" and issuer.summary.endswith("* Vault is sealed")
    assert "every check below passed" not in issuer.summary
    assert [f.status.value for f in again.findings if f is not issuer] == ["unknown", "ok"]  # not probed; login off


async def test_an_issuer_not_ready_with_every_check_passing_is_the_runbooks_escalation(sandbox) -> None:
    from sandbox.platform import set_issuer_ready

    set_issuer_ready(sandbox.platform, "vault-issuer", False, "VaultError", "Failed to initialize Vault client: EOF")
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(REGISTRY["cert-issuer"], ctx)
    finally:
        await ctx.close()
    [issuer] = [f for f in report.findings if f.status.value != "ok"]
    assert issuer.target == "clusterissuer/vault-issuer"
    assert issuer.summary == ("Ready=False (VaultError): Failed to initialize Vault client: EOF; every check below "
                              "passed: escalate with cert-manager's logs")
    assert issuer.next_step.startswith("4.2 escalation")
    assert any(f.summary.startswith("login as cert-manager/vault-issuer with role cert-manager-issuer succeeded")
               for f in report.findings)


async def test_one_probe_failure_for_every_host_is_one_line(sandbox) -> None:
    ctx = await build_context(sandbox.settings(probe={"allowed_cidrs": ["198.51.100.0/24"]}))
    try:
        report = await run_sop(REGISTRY["tls-handshake"], ctx)
    finally:
        await ctx.close()
    unknown = [f for f in report.findings if f.status is Status.unknown]
    assert [(f.target, f.summary) for f in unknown] == [(
        "203.0.113.202:443", "probe: 203.0.113.202:443 is 203.0.113.202, outside probe.allowed_cidrs: not probed "
                             "(all 10 hosts)")]
