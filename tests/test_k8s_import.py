"""The light import of kubernetes-asyncio keeps the full client available to whoever asks."""

import subprocess
import sys

CODE = """
import resource, sys
from bot.clients import kube
light = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert "kubernetes_asyncio.client.models.v1_pod" not in sys.modules
from kubernetes_asyncio.client import CoreV1Api, V1Pod, ApiClient
from kubernetes_asyncio import watch
import kubernetes_asyncio.dynamic, kubernetes_asyncio.utils  # their import cycle stays resolved
assert ApiClient is kube.client.ApiClient
assert V1Pod(metadata={"name": "x"}).metadata == {"name": "x"}
print(light)
"""


def test_models_load_only_when_asked_for():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
