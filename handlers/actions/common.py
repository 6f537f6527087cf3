"""Small helpers the concrete actions share."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from bot.sdk import ActionEnv, KubeClient, SourceError, cell


class Unavailable(SourceError):
    """A client the action needs is not configured; the message is safe to post."""

    def __init__(self, reason: str):
        super().__init__("sop-bot", reason)


def kube(env: ActionEnv) -> "KubeClient":
    if env.ctx.kube is None:
        raise Unavailable("no Kubernetes access configured (kubernetes.kubeconfig or in-cluster)")
    return env.ctx.kube


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def owner_kinds(pod: dict[str, Any]) -> list[str]:
    return [r.get("kind", "") for r in meta(pod).get("ownerReferences") or []]


def is_mirror(pod: dict[str, Any]) -> bool:
    return "kubernetes.io/config.mirror" in (meta(pod).get("annotations") or {})


def labels_match(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """matchLabels and matchExpressions (In/NotIn/Exists/DoesNotExist) of a LabelSelector."""
    if not selector:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(":--" for _ in header) + "|"]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]  # cluster data: inert
    return "\n".join(out)
