"""Vault unseal (runbook 5.1/5.2) with both key sources, end to end, and the key-share scan:
no share appears in any post, dialog, log record or store row."""

from __future__ import annotations

import base64
import json
import sqlite3

import httpx
import pytest

from tests.approvals.conftest import add_user, kubectl_json, wait_for
from tests.approvals.support import bot_posts, post, propose, replies, wait_reply, wait_state

HOLDERS = {"approvers": ["alice", "bob"]}


@pytest.fixture
def vault_init_secret(sandbox, request):
    """terraform-state/vault-init holding the sandbox Vault's real init JSON (runbook 5.1 option B),
    written whatever the scenario; ``field`` picks unseal_keys_hex or keys."""
    field = getattr(request, "param", "unseal_keys_hex")
    vault = sandbox.platform.vault
    init = {"unseal_shares": vault.shares, "unseal_threshold": vault.threshold,
            field: list(vault.unseal_keys_hex)}
    data = {"vault-init.json": base64.b64encode(json.dumps(init).encode()).decode()}
    kube = sandbox.platform.kube
    if kube.get("v1", "Secret", "vault-init", "terraform-state") is None:
        kube.add({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "vault-init", "namespace": "terraform-state"}, "data": data})
    else:
        kube.update("v1", "Secret", "vault-init", "terraform-state", lambda s: s.update(data=data))
    return field


def key_forms(sandbox) -> list[str]:
    vault = sandbox.platform.vault
    forms = [*vault.unseal_keys_hex, *(k.upper() for k in vault.unseal_keys_hex), *vault.unseal_keys_b64]
    secret = sandbox.platform.kube.get("v1", "Secret", "vault-init", "terraform-state")
    if secret is not None:  # the Secret's encoded JSON holds every share too
        forms.append(secret["data"]["vault-init.json"][:64])
    return forms


def assert_no_key_share(sandbox, caplog) -> None:
    """Every post (and ephemeral), every dialog definition, every log record, every store row."""
    keys = key_forms(sandbox)
    texts = [p.message + json.dumps(p.props) for p in sandbox.mattermost.posts.values()]
    texts += [e.post.message for e in sandbox.mattermost.ephemerals]
    texts += [json.dumps(d.dialog) for d in sandbox.mattermost.dialogs.values()]
    assert caplog.records, "logs were captured"
    for r in caplog.records:
        texts.append(r.getMessage())
        texts.append(repr(r.args))
        texts.append(repr(getattr(r, "audit", "")))
        if r.exc_info and r.exc_info[1] is not None:
            texts.append(repr(r.exc_info[1]))
        if r.exc_text:
            texts.append(r.exc_text)
    db = sqlite3.connect(sandbox.workdir / "sopbot.db")
    try:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        assert "approval_audit" in tables
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                texts.append(repr(row))
    finally:
        db.close()
    blob = "\n".join(texts)
    assert len(blob) > 1000
    for key in keys:
        assert key not in blob


async def share(sandbox, user: str, pid: int, value: str) -> dict:
    before = {d.id for d in sandbox.mattermost.dialogs_for(user)}
    reply = await sandbox.mattermost.run_command(user, "sop-alerts", f"/sop share {pid}")
    assert "private dialog" in reply["text"], reply
    [dialog] = [d for d in sandbox.mattermost.dialogs_for(user) if d.id not in before]
    assert dialog.warnings == []
    element = dialog.dialog["elements"][0]
    assert element["type"] == "text" and element["subtype"] == "password"
    return await sandbox.mattermost.submit_dialog(user, dialog.id, {"share": value})


def sealed(sandbox) -> list[str]:
    return [r.name for r in sandbox.platform.vault.replicas if r.sealed]


async def test_unseal_with_shares_handed_in_by_key_holders(sandbox, bots, caplog):
    rt = await bots.start(**HOLDERS)
    add_user(sandbox, "carol")
    await sandbox.apply("vault-sealed")
    keys = sandbox.platform.vault.unseal_keys_hex
    p = await propose(sandbox, "alice", "vault-unseal")
    assert "`vault-unseal source=holders`" in p.message and "risk **low**" in p.message
    assert "PUT /v1/sys/unseal on vault-0, vault-1, vault-2" in p.message
    assert "| vault-1 | sealed | 0/3 |" in p.message
    assert "vault operator unseal <KEY_1>" in p.message
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    msg = await wait_reply(sandbox, p.root_id, "Key holders (@alice, @bob): run `/sop share 1`")
    assert "never posted, logged or stored" in msg

    # Refusals: someone who holds no share, a value that is no share, a forged dialog.
    text = (await sandbox.mattermost.run_command("carol", "sop-alerts", "/sop share 1"))["text"]
    assert "@carol is not a key holder for proposal #1" in text
    answer = await share(sandbox, "alice", 1, "hunter2; rm -rf /")
    assert answer["errors"]["share"] == "That is not a hex or base64 unseal key share."
    async with httpx.AsyncClient() as http:
        forged = await http.post(f"{rt.url}/mattermost/dialog", json={
            "type": "dialog_submission", "callback_id": "share:1", "state": "1:x:deadbeef",
            "user_id": "x", "submission": {"share": keys[4]}})
    assert "not valid" in forged.json()["error"]
    assert sealed(sandbox) == ["vault-0", "vault-1", "vault-2"]
    assert all(r.parts == [] for r in sandbox.platform.vault.replicas)  # nothing reached Vault

    assert await share(sandbox, "alice", 1, keys[0]) == {}
    await wait_reply(sandbox, p.root_id, "@alice handed a share: vault-0 progress 1/3; vault-1 progress 1/3")
    assert await share(sandbox, "bob", 1, keys[3]) == {}
    await wait_reply(sandbox, p.root_id, "@bob handed a share: vault-0 progress 2/3")
    assert sealed(sandbox) == ["vault-0", "vault-1", "vault-2"]
    assert await share(sandbox, "alice", 1, keys[1]) == {}
    final = await wait_state(sandbox, p.id, "succeeded")
    assert "unsealed vault-0, vault-1, vault-2 (verified: sealed=false)" in final
    assert sealed(sandbox) == []
    pods = await kubectl_json(sandbox, "-n", "vault", "get", "pods", "-l", "app.kubernetes.io/name=vault")
    assert {p["metadata"]["labels"]["vault-sealed"] for p in pods["items"]} == {"false"}
    text = (await sandbox.mattermost.run_command("bob", "sop-alerts", "/sop share 1"))["text"]
    assert "is succeeded and is not waiting for shares" in text
    await rt.bot.drain()
    assert_no_key_share(sandbox, caplog)


@pytest.mark.parametrize("vault_init_secret", ["unseal_keys_hex", "keys"], indirect=True)
async def test_vault_status_proposes_unseal_from_the_vault_init_secret(sandbox, bots, caplog, vault_init_secret):
    rt = await bots.start(**HOLDERS, unseal_from_secret={"enabled": True})
    await sandbox.apply("vault-partially-sealed")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-status")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    root = sandbox.mattermost.thread(p.root_id)[0]
    assert "@alice ran `/sop vault-status`" in root.message  # in the report's thread
    assert "`vault-unseal source=secret`" in p.message and "risk **high**" in p.message
    assert "(from `vault-status`)" in p.message and "Needs 2 distinct approvals" in p.message
    assert "GET v1 secrets terraform-state/vault-init" in p.message
    assert "PUT /v1/sys/unseal on vault-1, vault-2" in p.message
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    sandbox.mattermost.react("alice", p.id, "white_check_mark")
    await wait_for(lambda: "(1/2: @alice)" in post(sandbox, p.id).message)
    assert sealed(sandbox) == ["vault-1", "vault-2"]
    sandbox.mattermost.react("bob", p.id, "white_check_mark")
    await wait_state(sandbox, p.id, "succeeded")
    assert sealed(sandbox) == []
    pods = await kubectl_json(sandbox, "-n", "vault", "get", "pods", "-l", "app.kubernetes.io/name=vault")
    assert {p["metadata"]["labels"]["vault-sealed"] for p in pods["items"]} == {"false"}
    await rt.bot.drain()
    assert_no_key_share(sandbox, caplog)


async def test_the_secret_key_source_is_off_unless_configured(sandbox, bots, vault_init_secret):
    rt = await bots.start(**HOLDERS)
    await sandbox.apply("vault-sealed")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix vault-unseal source=secret")
    await rt.bot.drain()
    refusal = next(p.message for p in bot_posts(sandbox) if "Not proposing" in p.message)
    assert "the vault-init Secret key source is off" in refusal
    assert sealed(sandbox) == ["vault-0", "vault-1", "vault-2"]


async def test_read_only_vault_status_still_shows_the_unseal_plan(sandbox, bots):
    rt = await bots.start(enabled=False)
    await sandbox.apply("vault-sealed")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop vault-status")
    msg = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "read-only" in x.message), None),
                         what="the read-only proposal")
    assert msg.root_id and "`vault-unseal source=holders`" in msg.message
    assert "kubectl exec -n vault vault-0 -- vault operator unseal <KEY_1>" in msg.message
    await rt.bot.drain()
    assert sandbox.mattermost.reactions_on(msg.id) == []
    assert sealed(sandbox) == ["vault-0", "vault-1", "vault-2"]
