"""Build a 1,000-node / 30,000-pod sandbox and list every pod through kubernetes-asyncio with
limit=500, the way the bot pages through large lists.

The API server runs in its own process (as a real one would); this process is the client. Prints
the world's build time, then for each client: pages, pods, wall time and pods/s.

    python benchmarks/list_pods.py [--nodes 1000 --pods 30000 --limit 500]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def serve(workdir: str, nodes: int, pods: int, ready: "multiprocessing.synchronize.Event") -> None:
    from sandbox.kube.serve import serve_kube
    from sandbox.world import build_platform

    async def main() -> None:
        t0 = time.perf_counter()
        platform = build_platform(nodes=nodes, pods=pods, certificates=10, pvcs=10)
        print(f"world built in {time.perf_counter() - t0:.2f}s "
              f"({platform.kube.count('v1', 'Node')} nodes, {platform.kube.count('v1', 'Pod')} pods)",
              flush=True)
        async with serve_kube(platform.kube, Path(workdir)):
            ready.set()
            await asyncio.Event().wait()

    asyncio.run(main())


async def typed_client(kubeconfig: Path, limit: int) -> tuple[int, int]:
    from kubernetes_asyncio import client, config

    api_client = await config.new_client_from_config(config_file=str(kubeconfig))
    async with api_client:
        core = client.CoreV1Api(api_client)
        pages = count = 0
        cont = None
        while True:
            resp = await core.list_pod_for_all_namespaces(limit=limit, _continue=cont)
            pages += 1
            count += len(resp.items)
            cont = resp.metadata._continue
            if not cont:
                return pages, count


async def raw_client(kubeconfig: Path, limit: int) -> tuple[int, int]:
    from bot.clients.kube import KubeClient

    kube = await KubeClient.connect(kubeconfig, timeout_s=60)
    try:
        pages = count = 0
        async for page in kube.pages("v1", "pods", limit=limit):
            pages += 1
            count += len(page)
        return pages, count
    finally:
        await kube.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=30000)
    parser.add_argument("--limit", type=int, default=500)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="sopbot-listpods-")
    ready = multiprocessing.Event()
    server = multiprocessing.Process(target=serve, args=(workdir, args.nodes, args.pods, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(120):
            raise SystemExit("the sandbox API server did not start")
        kubeconfig = Path(workdir) / "kubeconfig"
        for name, fn in (("kubernetes-asyncio CoreV1Api (typed models)", typed_client),
                         ("kubernetes-asyncio ApiClient, raw JSON (bot's KubeClient)", raw_client)):
            t0 = time.perf_counter()
            pages, count = asyncio.run(fn(kubeconfig, args.limit))
            wall = time.perf_counter() - t0
            print(f"{name}: {count} pods in {pages} pages of {args.limit}: "
                  f"{wall:.2f}s ({count / wall:,.0f} pods/s)")
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
