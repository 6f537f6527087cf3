"""``GET /api/v1/namespaces/{ns}/pods/{name}/log`` as the kubelet answers it: the container is
chosen by ``container`` (required when the pod has several), ``previous`` reads the last
terminated instance, ``sinceSeconds``/``tailLines``/``limitBytes`` bound the answer and
``timestamps`` prefixes each line with its RFC 3339 time."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from aiohttp import web

from sandbox.kube.errors import bad_request
from sandbox.kube.store import Obj, ObjectStore


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.lstrip("-").isdigit():
        raise bad_request(f'invalid value for {name}: "{raw}"')
    return int(raw)


def _container(pod: Obj, wanted: str | None) -> str:
    names = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    inits = [c["name"] for c in (pod.get("spec") or {}).get("initContainers") or []]
    pod_name = pod["metadata"]["name"]
    if wanted is None:
        if len(names) == 1:
            return names[0]
        raise bad_request(f"a container name must be specified for pod {pod_name}, "
                          f"choose one of: [{' '.join(names)}]"
                          + (f" or one of the init containers: [{' '.join(inits)}]" if inits else ""))
    if wanted not in names + inits:
        raise bad_request(f"container {wanted} is not valid for pod {pod_name}")
    return wanted


def serve_log(request: web.Request, store: ObjectStore, pod: Obj) -> web.Response:
    ns, name = pod["metadata"].get("namespace", ""), pod["metadata"]["name"]
    container = _container(pod, request.query.get("container"))
    previous = request.query.get("previous", "").lower() in ("true", "1")
    tail, since, limit = _int(request, "tailLines"), _int(request, "sinceSeconds"), _int(request, "limitBytes")
    for value, field in ((since, "sinceSeconds"), (limit, "limitBytes")):
        if value is not None and value < 1:
            raise bad_request(f"{field}: Invalid value: {value}: must be greater than 0")
    lines = store.container_logs.get((ns, name, container, previous))
    if lines is None:
        if previous:
            raise bad_request(f'previous terminated container "{container}" in pod "{name}" not found')
        # Untimed logs set with store.pod_logs (whole pod): every line counts as "now".
        stamp = datetime.now(timezone.utc)
        lines = [(stamp, line) for line in store.pod_logs.get((ns, name), "").splitlines()]
    if since is not None:
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=since)
        lines = [(t, line) for t, line in lines if t >= cutoff]
    if tail is not None and tail >= 0:
        lines = lines[len(lines) - tail:] if tail else []
    stamps = request.query.get("timestamps", "").lower() in ("true", "1")
    text = "".join((f"{t.strftime('%Y-%m-%dT%H:%M:%S.%f')}000Z " if stamps else "") + line + "\n"
                   for t, line in lines)
    body = text.encode()
    if limit is not None:
        body = body[:limit]
    return web.Response(body=body, content_type="text/plain", charset="utf-8")
