"""Self-reviews, answered on create and never stored. The sandbox token is cluster-admin, so
access reviews say yes; a request impersonating someone else (``kubectl auth can-i --as``) is
answered "no" with an evaluation error, because the sandbox does not evaluate RBAC rules."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
USERNAME = "sandbox-admin"
GROUPS = ["system:masters", "system:authenticated"]


def answer(kind: str, body: Obj, impersonating: str | None) -> Obj | None:
    """The review with its status filled in, or None when ``kind`` is not a review."""
    if kind == "SelfSubjectAccessReview":
        status: Obj = ({"allowed": True, "reason": f"{USERNAME} is bound to cluster-admin"}
                       if impersonating is None else
                       {"allowed": False, "evaluationError": "the sandbox does not evaluate RBAC "
                        f"for impersonated users ({impersonating})"})
    elif kind == "SelfSubjectRulesReview":
        status = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                  "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                  "incomplete": impersonating is not None}
    elif kind == "SelfSubjectReview":
        user = impersonating or USERNAME
        status = {"userInfo": {"username": user,
                               "groups": GROUPS if impersonating is None else ["system:authenticated"]}}
    else:
        return None
    return {**body, "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None},
            "status": status}
