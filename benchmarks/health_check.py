"""The daily health check (runbook 11.1) on a large cluster, against its floor.

    python benchmarks/health_check.py [--nodes 1000 --pods 30000 --certificates 3000 --pvcs 500]

A child process serves the sandbox (Kubernetes API, Vault, and a real Alertmanager when the
binary is installed) so it does not share the measured process's memory or GIL. Then, each in a
fresh process, several times:

  floor   raw aiohttp GETs of every page of every list the report reads (same page size, same
          concurrency bound, same GC setting), JSON decoded and dropped: the least any client
          could do;
  health  the full health check as the bot runs it (KubeClient, per-run cache, every handler,
          the report rendered), wall time and the process's peak RSS.

Targets: health/floor <= 1.5, health < 10 s, peak RSS < 300 MB, on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LISTS = [  # what the daily report reads (bot.health.HealthReport.fetches shows the same paths)
    "/api/v1/nodes", "/api/v1/pods", "/api/v1/persistentvolumeclaims",
    "/apis/cert-manager.io/v1/certificates", "/apis/cert-manager.io/v1/clusterissuers",
    "/apis/postgresql.cnpg.io/v1/namespaces/database/clusters",
    "/apis/gateway.networking.k8s.io/v1/gateways", "/apis/gateway.networking.k8s.io/v1/httproutes",
    "/apis/traefik.io/v1alpha1/ingressroutes",
]
GETS = ["/api/v1/namespaces/kube-system/services/rke2-traefik"]
PAGE = 500
CONCURRENCY = 4


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- child: the sandbox server -----------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    from sandbox.runner import Sandbox
    from sandbox.world import build_platform

    started = time.perf_counter()
    platform = build_platform(nodes=args.nodes, pods=args.pods, certificates=args.certificates, pvcs=args.pvcs)
    built = time.perf_counter() - started
    am = None
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    workdir = Path(args.workdir)
    async with Sandbox(workdir=workdir / "sandbox", platform=platform) as sb:
        config = sb.bot_config()
        if binary:
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            cfg = workdir / "alertmanager.yml"
            cfg.write_text('route: {receiver: "null"}\nreceivers: [{name: "null"}]\n')
            am = subprocess.Popen([binary, f"--config.file={cfg}", f"--storage.path={workdir / 'am'}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            config["alertmanager"] = {"url": f"http://127.0.0.1:{port}"}
            import httpx
            async with httpx.AsyncClient() as http:
                for _ in range(200):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/-/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.05)
        config["store"] = {"path": str(workdir / "sopbot.db")}
        (workdir / "bot.json").write_text(json.dumps(config))
        print(json.dumps({"ready": True, "built_s": built}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes it
    if am is not None:
        am.terminate()
        am.wait()


# -- child: one measurement ------------------------------------------------------------------------
async def floor(config: dict) -> dict:
    import aiohttp
    import yaml

    kubeconfig = yaml.safe_load(Path(config["kubernetes"]["kubeconfig"]).read_text())
    cluster = kubeconfig["clusters"][0]["cluster"]
    server = cluster["server"]
    token = kubeconfig["users"][0]["user"]["token"]
    ssl_ctx = None
    if cluster.get("certificate-authority-data"):  # the sandbox serves TLS like a real API server
        import base64
        import ssl
        ssl_ctx = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    sem = asyncio.Semaphore(CONCURRENCY)
    counts: dict[str, int] = {}
    # The same GC setting the health check runs with (bot.health._fewer_gc_passes): the floor
    # must not be slowed by collections the measured side avoids.
    import gc
    gc.set_threshold(max(gc.get_threshold()[0], 50_000), *gc.get_threshold()[1:])
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                                     connector=aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx else True)) as http:
        async def get(path: str, params: dict | None = None) -> dict:
            async with sem, http.get(server + path, params=params) as resp:
                return json.loads(await resp.read())

        async def whole(path: str) -> None:
            cont = None
            n = 0
            while True:
                params = {"limit": str(PAGE), **({"continue": cont} if cont else {})}
                data = await get(path, params)
                n += len(data.get("items") or [])
                cont = (data.get("metadata") or {}).get("continue")
                if not cont:
                    break
            counts[path] = n

        await asyncio.gather(*(whole(p) for p in LISTS), *(get(p) for p in GETS))
    return {"wall_s": time.perf_counter() - started, "rss_mb": peak_rss_mb(), "items": counts}


async def health(config: dict) -> dict:
    from bot.clients.alertmanager import AlertmanagerClient
    from bot.config import Settings
    from bot.health import COMPOSITIONS, health_markdown, run_health
    from bot.registry import load_handlers
    from bot.runtime import build_context

    settings = Settings.model_validate(config)
    registry = load_handlers()
    ctx = await build_context(settings)
    if settings.alertmanager.url:
        ctx.alertmanager = AlertmanagerClient(settings.alertmanager.url)
    try:
        started = time.perf_counter()
        report = await run_health("daily", COMPOSITIONS["daily"], registry, ctx,
                                  concurrency=settings.health.concurrency)
        health_markdown(report)
        wall = time.perf_counter() - started
    finally:
        if ctx.alertmanager is not None:
            await ctx.alertmanager.close()
        await ctx.close()
    return {"wall_s": wall, "rss_mb": peak_rss_mb(), "status": report.status.value,
            "areas": {a.area: a.status.value for a in report.areas}, "fetches": report.fetches}


def measure(kind: str, workdir: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--workdir", str(workdir)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=30000)
    parser.add_argument("--certificates", type=int, default=3000)
    parser.add_argument("--pvcs", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", choices=["serve", "floor", "health"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "serve":
        asyncio.run(serve(args))
        return
    if args.child in ("floor", "health"):
        config = json.loads((Path(args.workdir) / "bot.json").read_text())
        result = asyncio.run(floor(config) if args.child == "floor" else health(config))
        print(json.dumps(result))
        return

    workdir = Path(tempfile.mkdtemp(prefix="sopbot-bench-"))
    print(f"building the sandbox: {args.nodes} nodes, {args.pods} pods, {args.certificates} certificates, "
          f"{args.pvcs} PVCs (cpus: {os.cpu_count()})", flush=True)
    server = subprocess.Popen([sys.executable, __file__, "--child", "serve", "--workdir", str(workdir),
                               "--nodes", str(args.nodes), "--pods", str(args.pods),
                               "--certificates", str(args.certificates), "--pvcs", str(args.pvcs)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(server.stdout.readline())  # type: ignore[union-attr]
        print(f"sandbox built in {ready['built_s']:.1f}s and serving", flush=True)
        floors, healths = [], []
        for i in range(args.runs):
            floors.append(measure("floor", workdir))
            healths.append(measure("health", workdir))
            print(f"  run {i + 1}: floor {floors[-1]['wall_s']:.2f}s  health {healths[-1]['wall_s']:.2f}s  "
                  f"health peak RSS {healths[-1]['rss_mb']:.0f} MB", flush=True)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait()
    f = statistics.median(r["wall_s"] for r in floors)
    h = statistics.median(r["wall_s"] for r in healths)
    rss = max(r["rss_mb"] for r in healths)
    last = healths[-1]
    print()
    print(f"lists read: {', '.join(f'{p.rsplit(chr(47), 1)[-1]} {n}' for p, n in floors[-1]['items'].items())}")
    print(f"report: {last['status']}; areas {last['areas']}")
    dup = {p: n for p, n in last["fetches"].items() if n != 1}
    print(f"fetches per list in one run: {'all 1' if not dup else dup}")
    print()
    print(f"{'':<28}{'median':>10}{'target':>12}")
    print(f"{'floor (raw GET + decode)':<28}{f:>9.2f}s{'':>12}")
    print(f"{'full health check':<28}{h:>9.2f}s{'< 10 s':>12}")
    print(f"{'ratio health/floor':<28}{h / f:>10.2f}{'<= 1.5':>12}")
    print(f"{'peak RSS (health process)':<28}{rss:>8.0f}MB{'< 300 MB':>12}")
    print(f"{'peak RSS (floor process)':<28}{max(r['rss_mb'] for r in floors):>8.0f}MB")


if __name__ == "__main__":
    main()
