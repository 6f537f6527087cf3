"""api-server (2.4): the bot's own connection failing is the evidence, said as such (not
"unknown" everywhere); with it working, each control-plane node's /healthz and /readyz answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers
from bot.runtime import build_context

pytestmark = pytest.mark.asyncio
API = next(s for s in load_handlers() if s.id == "api-server")


def dead_kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        "clusters: [{name: dead, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: dead, user: {token: x}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: dead}}]\n", encoding="utf-8")
    return path


async def test_the_bot_that_cannot_reach_the_api_server_says_so(sandbox, tmp_path: Path) -> None:
    ctx = await build_context(sandbox.settings(kubernetes={"kubeconfig": str(dead_kubeconfig(tmp_path))}))
    try:
        report = await run_sop(API, ctx)
    finally:
        await ctx.close()
    [finding] = report.findings
    assert finding.status is Status.crit
    assert finding.summary.startswith("the bot cannot reach the API server: ")
    assert "direct probes are not checkable" in finding.details
    assert "systemctl status rke2-server" in finding.next_step


async def test_every_control_plane_node_answers_its_health_checks(sandbox) -> None:
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(API, ctx)
    finally:
        await ctx.close()
    assert report.status is Status.ok, report.findings
    shown = {f.target: f.summary for f in report.findings}
    assert shown["node/rke2-cp-1 :6443"] == "10.0.1.10:6443 /healthz ok, /readyz ok"
    assert len([t for t in shown if t.startswith("node/rke2-cp-")]) == 3


async def test_one_control_plane_api_server_failing_readyz_is_named(sandbox) -> None:
    await sandbox.apply("apiserver-cp-down")
    ctx = await build_context(sandbox.settings())
    try:
        report = await run_sop(API, ctx)
    finally:
        await ctx.close()
    shown = {f.target: f for f in report.findings}
    assert shown["node/rke2-cp-2 :6443"].summary == ("10.0.1.11:6443 /healthz 500 ([-]etcd failed: reason withheld), "
                                                     "/readyz 500 ([-]etcd failed: reason withheld)")
    assert shown["control plane"].status is Status.warn
    assert shown["node/rke2-cp-1 :6443"].status is Status.ok
