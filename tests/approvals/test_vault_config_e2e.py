"""Runbook 5.4 step 3 and 5.5 steps 1–2 as actions, end to end: the SOP names the cause and
proposes the rewrite, the preview shows each field now/after (the CA as subject and fingerprint,
never PEM), two approvals (high risk), the write, and the SOP is green again. The login test's
ServiceAccount token never appears in a post or a log record."""

from __future__ import annotations

import json

from tests.approvals.conftest import wait_for
from tests.approvals.support import bot_posts, propose, wait_reply, wait_state

TWO = {"approvers": ["alice", "bob"]}


def report(sb, sop: str, n: int = 1) -> str:
    posts = [p.message for p in bot_posts(sb) if f"`{sop}` — " in p.message and "Target" in p.message]
    return posts[n - 1] if len(posts) >= n else ""


async def approve_both(sb, p) -> None:
    await wait_for(lambda: len(sb.mattermost.reactions_on(p.id)) == 2, what="the bot's reactions")
    for user in ("alice", "bob"):
        sb.mattermost.react(user, p.id, "white_check_mark")


async def test_a_missing_signing_role_is_recreated_from_the_config(sandbox, bots):
    await bots.start(**TWO)
    await sandbox.apply("vault-pki-role-missing")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-pki")
    text = await wait_for(lambda: report(sandbox, "vault-pki"), what="the vault-pki report")
    assert "no signing role example-dot-com in pki_int (roles: legacy-dot-internal)" in text
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`vault-pki-role`" in p.message and "(from `vault-pki`)" in p.message and "risk **high**" in p.message
    assert "POST /v1/pki_int/roles/example-dot-com: allowed_domains=example.com, allow_subdomains=true, " \
           "max_ttl=720h, generate_lease=true, require_cn=false" in p.message
    assert "| allowed_domains | — | example.com |" in p.message
    assert "example-dot-com" not in sandbox.platform.vault.pki_roles
    await approve_both(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    await wait_reply(sandbox, p.root_id, "wrote pki_int/roles/example-dot-com (verified by reading it back)")
    role = sandbox.platform.vault.pki_roles["example-dot-com"]
    assert role["allowed_domains"] == ["example.com"] and role["allow_subdomains"] is True
    assert role["max_ttl"] == 720 * 3600
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-pki")
    again = await wait_for(lambda: report(sandbox, "vault-pki", 2), what="the second report")
    assert "**OK**" in again and "role(s): example-dot-com, legacy-dot-internal" in again


async def test_a_stale_api_server_url_is_refreshed_from_the_cluster_and_the_login_works_again(sandbox, bots, caplog):
    await bots.start(**TWO)
    await sandbox.apply("vault-auth-stale-host")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-k8s-auth")
    text = await wait_for(lambda: report(sandbox, "vault-k8s-auth"), what="the vault-k8s-auth report")
    assert "stale API server URL: kubernetes_host https://10.43.0.2:443 is not the cluster's API " \
           "(https://10.43.0.1:443, the kubernetes Service)" in text
    assert "login refused: role cert-manager-issuer as cert-manager/vault-issuer with a fresh token: " in text
    assert "dial tcp 10.43.0.2:443: i/o timeout" in text
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "`vault-k8s-auth-config`" in x.message
                                     and "**Proposal #" in x.message), None), what="the refresh proposal")
    assert "risk **high**" in p.message
    assert "| kubernetes_host | https://10.43.0.2:443 | https://10.43.0.1:443 |" in p.message
    # The CA as subject and fingerprint (the "@" quoted so it mentions nobody), never its PEM.
    assert "| kubernetes_ca_cert | rke2-server-ca`@1700000000` (sha256 " in p.message
    assert "**Preview** (from the cluster; " in p.message
    assert "BEGIN CERTIFICATE" not in p.message
    await approve_both(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    assert sandbox.platform.vault.k8s_auth_config["kubernetes_host"] == "https://10.43.0.1:443"
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-k8s-auth")
    again = await wait_for(lambda: report(sandbox, "vault-k8s-auth", 2), what="the second report")
    assert "login as cert-manager/vault-issuer (role cert-manager-issuer) with a fresh token succeeded" in again
    assert "**OK**" in again
    # The TokenRequest tokens the bot minted never left it.
    tokens = list(sandbox.platform.kube.tokens.issued)
    assert len(tokens) >= 2
    texts = [x.message + json.dumps(x.props) for x in sandbox.mattermost.posts.values()]
    texts += [r.getMessage() + repr(r.args) for r in caplog.records]
    blob = "\n".join(texts)
    assert all(t not in blob and t.split(".")[2] not in blob for t in tokens)


async def test_a_role_binding_mismatch_is_fixed_by_recreating_the_role(sandbox, bots):
    await bots.start(**TWO)
    await sandbox.apply("vault-auth-role-mismatch")
    p = await propose(sandbox, "alice", "vault-k8s-auth-role")
    assert "| bound_service_account_namespaces | cert-manager-old | cert-manager |" in p.message
    assert "| policies | cert-manager | cert-manager |" in p.message
    assert "POST /v1/auth/kubernetes/role/cert-manager-issuer: bound_service_account_names=vault-issuer" in p.message
    await approve_both(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    role = sandbox.platform.vault.k8s_roles["cert-manager-issuer"]
    assert role["bound_service_account_namespaces"] == ["cert-manager"] and role["token_ttl"] == 3600
