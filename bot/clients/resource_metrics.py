"""``metrics.k8s.io/v1beta1`` (metrics-server): the CPU and memory ``kubectl top`` shows, for
nodes and pods. Quantities are parsed as Kubernetes writes them ("250m", "1.5", "16Gi", "512974848")."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from bot.clients.errors import SourceError

if TYPE_CHECKING:
    from bot.clients.kube import KubeClient

GROUP_VERSION = "metrics.k8s.io/v1beta1"
_SUFFIX = {"": 1, "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
           "k": 10 ** 3, "M": 10 ** 6, "G": 10 ** 9, "T": 10 ** 12, "P": 10 ** 15, "E": 10 ** 18,
           "Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def quantity(text: Any) -> float:
    """A resource.Quantity as a number of base units (cores, bytes)."""
    m = _QUANTITY.match(str(text).strip())
    if m is None:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    try:
        return float(Decimal(m.group(1)) * Decimal(_SUFFIX[m.group(2) or ""]))
    except InvalidOperation:
        raise ValueError(f"not a Kubernetes quantity: {text!r}") from None


class Usage(BaseModel):
    name: str
    namespace: str = ""
    cpu_cores: float
    memory_bytes: float
    window: str = ""
    containers: dict[str, tuple[float, float]] = {}  # name -> (cores, bytes), pods only


def _usage(u: dict[str, Any]) -> tuple[float, float]:
    return quantity(u.get("cpu", "0")), quantity(u.get("memory", "0"))


async def _list(kube: "KubeClient", plural: str, namespace: str | None, label_selector: str | None) -> list[dict]:
    try:
        return await kube.list(GROUP_VERSION, plural, namespace, label_selector=label_selector)
    except SourceError as exc:
        if exc.status in (404, 503):  # the APIService is absent or metrics-server is down
            raise SourceError(exc.source, f"resource metrics unavailable (metrics-server): {exc.reason}",
                              exc.status) from None
        raise


async def node_usage(kube: "KubeClient") -> list[Usage]:
    out = []
    for item in await _list(kube, "nodes", None, None):
        cpu, mem = _usage(item.get("usage") or {})
        out.append(Usage(name=item["metadata"]["name"], cpu_cores=cpu, memory_bytes=mem,
                         window=str(item.get("window") or "")))
    return out


async def pod_usage(kube: "KubeClient", namespace: str | None = None, *,
                    label_selector: str | None = None) -> list[Usage]:
    out = []
    for item in await _list(kube, "pods", namespace, label_selector):
        containers = {c["name"]: _usage(c.get("usage") or {}) for c in item.get("containers") or []}
        out.append(Usage(name=item["metadata"]["name"], namespace=item["metadata"].get("namespace", ""),
                         cpu_cores=sum(c for c, _ in containers.values()),
                         memory_bytes=sum(m for _, m in containers.values()),
                         window=str(item.get("window") or ""), containers=containers))
    return out
