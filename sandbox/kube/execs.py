"""pods/exec over WebSocket (``v5.channel.k8s.io`` as kubectl >= 1.30 speaks it, and
``v4.channel.k8s.io`` as kubernetes-asyncio's stream client does).

Nothing runs: a scenario registers what a pod answers in ``store.pod_exec[(ns, pod)]``, a
function ``(container, command) -> (stdout, stderr, exit_code)``. Frames are binary, the first
byte the channel (1 stdout, 2 stderr, 3 the final Status), as the kubelet sends them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sandbox.kube import jsonio
from sandbox.kube.errors import ApiError, bad_request

ExecHandler = Callable[[str, list[str]], tuple[str, str, int]]
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR = 1, 2, 3


def _status(command: list[str], code: int) -> bytes:
    if code == 0:
        return jsonio.dumps({"metadata": {}, "status": "Success"})
    return jsonio.dumps({
        "metadata": {}, "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command "
                   f"[{' '.join(command)}], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}})


def no_handler(namespace: str, pod: str) -> ExecHandler:
    def answer(container: str, command: list[str]) -> tuple[str, str, int]:
        return "", (f"sandbox: pod {namespace}/{pod} has no exec handler for "
                    f"{shlex.join(command)}\n"), 126
    return answer


def check_target(pod: dict[str, Any], container: str | None) -> str:
    """The container to run in, or the real server's 400 for a pod that cannot exec."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise bad_request(f"cannot exec into a container in a completed pod; current phase is {phase}")
    names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
    if container is None:
        if not names:
            raise bad_request("pod has no containers")
        return names[0]
    if container not in names:
        raise bad_request(f"container {container} is not valid for pod {pod['metadata']['name']}")
    return container


async def serve(request: web.Request, handler: ExecHandler, container: str,
                command: list[str]) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() != "websocket":
        raise ApiError(400, "BadRequest", "Upgrade request required")
    if not command:
        raise bad_request("you must specify at least 1 command")
    ws = web.WebSocketResponse(protocols=PROTOCOLS)
    await ws.prepare(request)
    try:
        stdout, stderr, code = handler(container, command)
    except Exception as exc:  # a broken scenario handler shows up as the command's failure
        stdout, stderr, code = "", f"sandbox exec handler failed: {exc}\n", 1
    if stdout:
        await ws.send_bytes(bytes([STDOUT]) + stdout.encode())
    if stderr:
        await ws.send_bytes(bytes([STDERR]) + stderr.encode())
    await ws.send_bytes(bytes([ERROR]) + _status(command, code))
    await ws.close()
    return ws
