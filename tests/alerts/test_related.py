"""Threads that know their cause: a certificate alert while a Vault-sealed thread is open links
to it, the Vault thread lists what it explains, and its resolution makes the certificate thread
re-check. The graph comes from the runbook's TLS flowchart and the SOPs' ``explained_by``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.alerts.models import WebhookPayload
from bot.alerts.related import Dependencies
from bot.alerts.repo import GroupRepo
from bot.alerts.router import Router
from bot.alerts.threads import ThreadManager
from bot.engine import run_sop
from bot.context import HandlerContext
from bot.flowchart import flowcharts
from bot.models import Finding, Report, Severity, Status
from bot.registry import SOP, NoParams, Registry, SOPParams, load_handlers, sop
from bot.runbook import Runbook
from bot.store import Store
from tests.alerts.support import Clock, RecordingChat, alert, payload

RUNBOOK_PATH = Path(__file__).parents[2] / "sandbox" / "runbook.md"
RUNBOOK = Runbook.load(RUNBOOK_PATH, url="https://runbook.example")


class World:
    """Three SOPs shaped like the real ones (sections decide the graph); findings set per test."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.findings: dict[str, list[Finding]] = {}
        self.runs: list[str] = []

        @sop("vault-seal", title="Vault seal", section="5.1", severity=Severity.P1,
             alerts=("VaultSealed",), registry=self.registry)
        async def vault(ctx: Any, params: NoParams) -> list[Finding]:
            return self._result("vault-seal")

        @sop("certs", title="Certificates", section="4.1", severity=Severity.P2,
             alerts=("CertNotReady",), registry=self.registry)
        async def certs(ctx: Any, params: NoParams) -> list[Finding]:
            return self._result("certs")

        @sop("app-pods", title="App pods", section="7.1", severity=Severity.P3,
             alerts=("AppCrashLooping",), explained_by=("db",), registry=self.registry)
        async def pods(ctx: Any, params: NoParams) -> list[Finding]:
            return self._result("app-pods")

        @sop("db", title="Database", section="6.1", severity=Severity.P1,
             alerts=("DatabaseDown",), registry=self.registry)
        async def db(ctx: Any, params: NoParams) -> list[Finding]:
            return self._result("db")

    def _result(self, sop_id: str) -> list[Finding]:
        self.runs.append(sop_id)
        return self.findings.get(sop_id, [Finding(status=Status.crit, target=sop_id, summary="broken")])

    async def run(self, s: SOP, params: SOPParams) -> Report:
        return await run_sop(s, HandlerContext(), params)


@pytest.fixture
async def setup():
    store = await Store.open(":memory:")
    repo = GroupRepo(store)
    await repo.migrate()
    world, chat = World(), RecordingChat()
    router = Router(world.registry, [], channel="sop-alerts", runbook=RUNBOOK)
    tm = ThreadManager(repo=repo, chat=chat, router=router, run=world.run, channel_id=chat.channel_id,
                       runbook=RUNBOOK, clock=Clock(), permalink=lambda pid: f"http://mm/pl/{pid}")
    yield tm, chat, world
    await tm.stop()
    await store.close()


def P(group: str, name: str, status: str = "firing") -> WebhookPayload:
    return WebhookPayload.model_validate(payload(group, [alert(name, status=status, fp=group)]))


def root_of(chat: RecordingChat, name: str):
    [root] = [m for m in chat.roots if f"`{name}`" in m.text.splitlines()[0]]
    return root


async def test_a_certificate_alert_during_an_open_vault_thread_links_both_ways(setup) -> None:
    tm, chat, _ = setup
    await tm.process(P("vault", "VaultSealed"), 1)
    await tm.process(P("cert", "CertNotReady"), 2)
    vault, cert = root_of(chat, "VaultSealed"), root_of(chat, "CertNotReady")
    assert f"**Likely caused by** [`VaultSealed`](http://mm/pl/{vault.id}) (open)" in cert.text
    assert f"**Explains 1 other thread**: [`CertNotReady`](http://mm/pl/{cert.id}) (open)" in vault.text
    assert vault.edits, "the cause's root is edited in place, not replied to"
    assert not [m for m in chat.replies(vault.id) if "CertNotReady" in m.text]


async def test_the_cause_arriving_second_links_too(setup) -> None:
    tm, chat, _ = setup
    await tm.process(P("cert", "CertNotReady"), 1)
    await tm.process(P("vault", "VaultSealed"), 2)
    vault, cert = root_of(chat, "VaultSealed"), root_of(chat, "CertNotReady")
    assert "**Likely caused by** [`VaultSealed`]" in cert.text
    assert "**Explains 1 other thread**: [`CertNotReady`]" in vault.text


async def test_resolving_the_cause_makes_the_dependent_thread_recheck_and_say_so(setup) -> None:
    tm, chat, world = setup
    await tm.process(P("vault", "VaultSealed"), 1)
    await tm.process(P("cert", "CertNotReady"), 2)
    runs_before = world.runs.count("certs")
    world.findings["certs"] = [Finding(status=Status.ok, target="certs", summary="all Ready")]
    world.findings["vault-seal"] = [Finding(status=Status.ok, target="vault", summary="unsealed")]
    await tm.process(P("vault", "VaultSealed", status="resolved"), 3)
    await tm.drain()
    cert = root_of(chat, "CertNotReady")
    assert world.runs.count("certs") == runs_before + 1, "re-checked at once, not after the rediagnose delay"
    assert "Its likely cause resolved: [`VaultSealed`]" in cert.text and "(resolved)" in cert.text
    [note] = [m for m in chat.replies(cert.id) if "likely cause" in m.text]
    assert "Re-checked: its SOPs now find nothing wrong" in note.text
    # A repeat of the resolution neither re-checks nor tells again.
    await tm.process(P("vault", "VaultSealed", status="resolved"), 4)
    await tm.drain()
    assert len([m for m in chat.replies(cert.id) if "likely cause" in m.text]) == 1


async def test_a_recheck_that_still_fails_says_so(setup) -> None:
    tm, chat, world = setup
    await tm.process(P("vault", "VaultSealed"), 1)
    await tm.process(P("cert", "CertNotReady"), 2)
    await tm.process(P("vault", "VaultSealed", status="resolved"), 3)
    await tm.drain()
    cert = root_of(chat, "CertNotReady")
    [note] = [m for m in chat.replies(cert.id) if "likely cause" in m.text]
    assert "Re-checked: still 1 problem" in note.text


async def test_declared_explained_by_links_and_unrelated_threads_do_not(setup) -> None:
    tm, chat, _ = setup
    await tm.process(P("db", "DatabaseDown"), 1)
    await tm.process(P("app", "AppCrashLooping"), 2)
    await tm.process(P("cert", "CertNotReady"), 3)
    app, cert = root_of(chat, "AppCrashLooping"), root_of(chat, "CertNotReady")
    assert "**Likely caused by** [`DatabaseDown`]" in app.text
    assert "Likely caused by" not in cert.text and "Explains" not in cert.text
    assert "**Explains 1 other thread**: [`AppCrashLooping`]" in root_of(chat, "DatabaseDown").text


def test_the_graph_follows_the_team_runbook_flowchart() -> None:
    real = load_handlers()
    deps = Dependencies.build(real, flowcharts(RUNBOOK))
    assert "vault-status" in deps.causes["cert-health"]
    # The team edits its TLS chart: the Vault branch goes; so does the link.
    text = RUNBOOK_PATH.read_text(encoding="utf-8").replace(
        'VAULT_SEALED -->|"Yes"| UNSEAL["Unseal Vault - Section 5.1"]',
        'VAULT_SEALED -->|"Yes"| UNSEAL["Ask the Vault team"]')
    edited = Runbook.parse(text, source="edited")
    assert "vault-status" not in Dependencies.build(real, flowcharts(edited)).causes.get("cert-health", set())
