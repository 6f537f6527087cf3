"""Registering SOPs and validating their arguments: no free text reaches an API path."""

import pytest
from pydantic import Field

from bot.models import Finding, Severity, Status
from bot.registry import (BadArguments, HostPort, K8sName, K8sNamespace, Registry, SOPParams,
                          UnknownSOP,
                          load_handlers, sop)


class PodParams(SOPParams):
    namespace: K8sNamespace = Field("default", description="namespace")
    pod: K8sName = Field(description="pod name")


def make_registry() -> Registry:
    reg = Registry()

    @sop("pod-check", title="Pod", section="7.1", severity=Severity.P3, alerts=("PodDown",),
         registry=reg)
    async def pod_check(ctx, params: PodParams) -> list[Finding]:
        return [Finding(status=Status.ok, summary=params.pod)]

    @sop("vault-status", title="Vault", section="5.1", severity=Severity.P1, registry=reg)
    async def vault(ctx, params) -> list[Finding]:
        return []

    return reg


def test_arguments_are_validated_by_the_sops_model():
    item = make_registry().get("pod-check")
    assert item.parse_args({"pod": "web-1"}).namespace == "default"
    for hostile in ["../../etc", "a b", "UPPER", "x;rm -rf /", "web/1", "-lead", "a" * 300]:
        with pytest.raises(BadArguments) as exc:
            item.parse_args({"pod": hostile})
        assert exc.value.problems[0].startswith("pod: ")
    with pytest.raises(BadArguments) as exc:
        item.parse_args({"pod": "ok", "verbose": "1"})
    assert exc.value.problems == ["verbose: is not a parameter of this SOP"]
    with pytest.raises(BadArguments) as exc:
        item.parse_args({})
    assert exc.value.problems == ["pod: Field required"]
    assert item.usage() == "[namespace=<namespace>, default default] pod=<pod name>"


def test_unknown_id_suggests_the_closest():
    reg = make_registry()
    with pytest.raises(UnknownSOP) as exc:
        reg.get("vault-stats")
    assert exc.value.suggestions[0] == "vault-status"
    assert reg.closest("vault") == ["vault-status"]


def test_lookup_by_alert_and_section_and_order():
    reg = make_registry()
    assert [s.id for s in reg.for_alert("PodDown")] == ["pod-check"]
    assert [s.id for s in reg.for_section("5")] == ["vault-status"]
    assert [s.id for s in reg] == ["vault-status", "pod-check"]  # runbook order


def test_declaration_mistakes_fail_at_import():
    reg = Registry()
    with pytest.raises(TypeError):
        @sop("sync-one", title="x", section="1", severity=Severity.P4, registry=reg)
        def not_async(ctx, params):  # type: ignore[no-untyped-def]
            return []
    with pytest.raises(ValueError):
        sop("Bad Id", title="x", section="1", severity=Severity.P4, registry=reg)


def test_every_shipped_handler_declares_a_runbook_section_and_model():
    registry = load_handlers()
    assert "vault-status" in registry.sops
    for item in registry:
        assert item.section and item.chapter and item.title


def test_each_pattern_says_what_it_wants():
    class Mixed(SOPParams):
        namespace: K8sNamespace = "default"
        instance: HostPort | None = None

    reg = Registry()

    @sop("mixed", title="x", section="1", severity=Severity.P4, registry=reg)
    async def mixed(ctx, params: Mixed) -> list[Finding]:
        return []

    with pytest.raises(BadArguments) as exc:
        reg.get("mixed").parse_args({"namespace": "Kube.System", "instance": "10.0.0.1:2379;x"})
    assert exc.value.problems == [
        "namespace: must be a Kubernetes namespace (lowercase letters, digits, '-')",
        "instance: must be host or host:port",
    ]
