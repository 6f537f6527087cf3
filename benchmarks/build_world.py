"""How long the sandbox world takes to build at benchmark scale, and what it holds.

    python benchmarks/build_world.py [--nodes 1000 --pods 30000 --certificates 3000 --pvcs 500]
"""

from __future__ import annotations

import argparse
import time

from sandbox.world import build_platform

KINDS = (("v1", "Node"), ("v1", "Pod"), ("cert-manager.io/v1", "Certificate"), ("v1", "Secret"),
         ("v1", "PersistentVolumeClaim"), ("v1", "PersistentVolume"), ("apps/v1", "Deployment"),
         ("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=30000)
    parser.add_argument("--certificates", type=int, default=3000)
    parser.add_argument("--pvcs", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    platform = build_platform(nodes=args.nodes, pods=args.pods, certificates=args.certificates, pvcs=args.pvcs)
    elapsed = time.perf_counter() - start
    print(f"built in {elapsed:.2f}s")
    for api_version, kind in KINDS:
        print(f"  {kind:<22} {platform.kube.count(api_version, kind):>7}")
    total = sum(len(objs) for objs in platform.kube._types.values())
    print(f"  {'all objects':<22} {total:>7}")


if __name__ == "__main__":
    main()
