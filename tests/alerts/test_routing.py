"""Alertmanager-style matchers and the router's choice of SOP, channel, mentions, severity."""

from __future__ import annotations

import pytest

from bot.alerts.matchers import Matcher, parse_matchers
from bot.alerts.router import Router, diagnosis_for, split_camel
from bot.config import AlertRouteConfig
from bot.models import Severity
from tests.alerts.support import FakeHandlers


@pytest.mark.parametrize("text, labels, hit", [
    ('alertname="NodeDiskPressure"', {"alertname": "NodeDiskPressure"}, True),
    ('alertname="NodeDiskPressure"', {"alertname": "NodeDiskCritical"}, False),
    ('namespace!="vault"', {"namespace": "db"}, True),
    ('namespace!="vault"', {"namespace": "vault"}, False),
    ('pod=~"vault-.*"', {"pod": "vault-0"}, True),
    ('pod=~"vault-.*"', {"pod": "my-vault-0"}, False),  # anchored
    ('pod!~"vault-.*"', {"pod": "my-vault-0"}, True),
    ('team=""', {}, True),  # absent label is the empty string
    ('team!=""', {}, False),
    ('summary="a, b"', {"summary": "a, b"}, True),
])
def test_matchers(text, labels, hit):
    assert Matcher.parse(text).matches(labels) is hit


def test_selector_strings_split_on_commas_outside_quotes():
    ms = parse_matchers('{alertname="X", note="a,b", pod=~"p-.*"}')
    assert [str(m) for m in ms] == ['alertname="X"', 'note="a,b"', 'pod=~"p-.*"']


@pytest.mark.parametrize("bad", ['alertname', 'pod=~"("', '=x', 'a="b'])
def test_bad_matchers_are_refused(bad):
    with pytest.raises(ValueError):
        Matcher.parse(bad)


def test_route_config_names_the_bad_matcher():
    with pytest.raises(ValueError, match=r"pod=~\"\(\""):
        AlertRouteConfig(matchers=['pod=~"("'])


def test_declared_alerts_route_to_their_sop_with_its_runbook_severity():
    h = FakeHandlers()
    d = Router(h.registry, [], channel="sop-alerts").decide({"alertname": "NodeDiskCritical", "severity": "critical"})
    assert [s.id for s in d.sops] == ["node-disk"] and d.severity is Severity.P3 and d.channel == "sop-alerts"


def test_unmapped_alerts_take_severity_from_their_label():
    h = FakeHandlers()
    r = Router(h.registry, [], channel="c")
    assert r.decide({"alertname": "Foo", "severity": "critical"}).severity is Severity.P1
    assert r.decide({"alertname": "Foo", "severity": "warning"}).severity is Severity.P3
    assert r.decide({"alertname": "Foo"}).sops == []


def test_a_route_naming_a_missing_sop_says_so():
    h = FakeHandlers()
    r = Router(h.registry, [AlertRouteConfig(matchers=['alertname="X"'], sop="nope")], channel="c")
    assert "`nope`, which does not exist" in r.decide({"alertname": "X"}).problem


def test_only_the_parameter_model_s_fields_are_taken_from_labels():
    h = FakeHandlers()
    d = diagnosis_for(h.registry.get("node-disk"),
                      {"alertname": "NodeDiskPressure", "node": "worker-1", "instance": "10.0.0.1:9100"})
    assert d.params is not None and d.params.model_dump() == {"node": "worker-1"} and d.problems == []
    assert d.target == "node=worker-1"


def test_split_camel():
    assert split_camel("CoreDNSFailures") == "Core DNS Failures"
    assert split_camel("PostgreSQLDown") == "Postgre SQL Down"
