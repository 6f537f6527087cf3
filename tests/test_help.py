"""`/sop help <section>`: the section's own text once, each sub-problem with its own parts, and
every SOP that declares the section (any of its declared sections, not only the main one)."""

from pathlib import Path

from bot.commands import help_text
from bot.models import Finding, Severity
from bot.registry import Registry, sop
from bot.runbook import Runbook

BOOK = Runbook.load(Path(__file__).parent / "fixtures" / "runbook.md", url="https://git.example/rb.md")


def registry() -> Registry:
    reg = Registry()

    @sop("vault-status", title="Vault", sections=("5.1", "5.3"), severity=Severity.P1,
         causes=("replica sealed after a restart",), registry=reg)
    async def vault(ctx, params) -> list[Finding]:
        return []

    @sop("keycloak-oidc", title="Keycloak OIDC", sections=("7.2/oidc",), severity=Severity.P2, registry=reg)
    async def oidc(ctx, params) -> list[Finding]:
        return []

    @sop("keycloak-cache", title="Keycloak cache", section="7.2/infinispan", severity=Severity.P3, registry=reg)
    async def cache(ctx, params) -> list[Finding]:
        return []

    return reg


def help_(topic: str) -> str:
    return help_text(registry(), BOOK, topic, "sop", {})


def test_the_heading_appears_once():
    text = help_("4.1")
    assert text.count("Certificate Not Issued") == 1
    assert text.splitlines()[0] == ("**[runbook 4.1](https://git.example/rb.md#41-certificate-not-issued)"
                                    " — Certificate Not Issued**")
    assert "**Symptom**: A Certificate stays `READY False`" in text


def test_a_section_lists_every_sub_problem_with_its_own_symptom():
    text = help_("7.2")
    assert "- `7.2/oidc` OIDC Authentication Failures: Single sign-on redirects loop" in text
    assert "- `7.2/infinispan` Infinispan Cache Issues: A session known to one replica" in text
    assert "Automated by: `/sop keycloak-cache`, `/sop keycloak-oidc`" in text


def test_a_sub_problem_shows_its_parts_and_only_its_sops():
    text = help_("7.2/oidc")
    assert "**Root cause**: the client secret differs" in text and "copy the client secret" in text
    assert "do not discover" not in text
    assert text.endswith("Automated by: `/sop keycloak-oidc`")


def test_a_section_without_labels_shows_its_text():
    assert "Drain the node, delete it and its machine" in help_("10.2")
    assert "kubectl drain <node>" in help_("10.2")
    text = help_("11.3")
    assert "#### Cordon" in text and "Evict what runs there" in text


def test_every_declared_section_names_the_sop():
    assert "Automated by: `/sop vault-status`" in help_("5.3")  # not its main section
    assert "Automated by: `/sop vault-status`" in help_("5")
    assert "Automated by" not in help_("5.2")
    text = help_("vault-status")
    assert "Covers runbook 5.1, 5.3" in text and "Root causes it can name: replica sealed after a restart" in text
