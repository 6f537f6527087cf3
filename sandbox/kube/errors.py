"""metav1.Status error bodies, worded as the real API server words them.

Handlers raise ``ApiError``; the server turns it into the JSON Status with the matching HTTP code,
which kubectl prints as ``Error from server (NotFound): pods "x" not found``.
"""

from __future__ import annotations

from typing import Any

from sandbox.kube.resources import ResourceType

Obj = dict[str, Any]

# The generic messages apimachinery uses when it has nothing more specific to say.
_GENERIC = {
    400: "the server rejected our request for an unknown reason",
    401: "Unauthorized",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    406: "the server was unable to respond with a content type that the client supports",
    410: "the server has asked for the client to provide a newer resource version",
    415: "the server does not support the media type sent by the client",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None,
                 metadata: Obj | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.metadata = metadata or {}

    def status(self) -> Obj:
        body: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": self.metadata, "status": "Failure",
                     "message": self.message, "reason": self.reason}
        if self.details:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType | None, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name} if name else {}
    if rt is not None:
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
    details.update(extra)
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, "NotFound", f'namespaces "{namespace}" not found',
                    {"name": namespace, "kind": "namespaces"})


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", _GENERIC[404])


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists',
                    _details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {rt.group_resource} "{name}": the object has '
                    "been modified; please apply your changes to the latest version and try again",
                    _details(rt, name))


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
    """causes: (field, message after "field: "), e.g. ("metadata.name", 'Invalid value: ...')."""
    text = ", ".join(f"{f}: {m}" for f, m in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details = {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.kind,
               "causes": [{"reason": "FieldValueInvalid", "message": m, "field": f}
                          for f, m in causes]}
    return ApiError(422, "Invalid", f'{rt.kind} "{name}" is invalid: {text}', details)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, "Invalid", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", _GENERIC[401])


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", _GENERIC[405])


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown "
                    f"format - accepted media types include: application/json-patch+json, "
                    f"application/merge-patch+json, application/apply-patch+yaml, "
                    f"application/strategic-merge-patch+json (got {content_type!r})")


def continue_expired(fresh_token: str | None) -> ApiError:
    """A continue token older than the server keeps list snapshots; the Status carries a token
    for an inconsistent continuation, as the real server does."""
    return ApiError(410, "Expired",
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter, or use the continue "
                    "token in this response to retrieve the remainder of the results. Continuing with "
                    "the provided token results in an inconsistent list - objects that were created, "
                    "modified, or deleted between the time the first chunk was returned and now may "
                    "show up in the list.", metadata={"continue": fresh_token} if fresh_token else {})


def pdb_blocks(pdb_name: str, desired: int, current: int) -> ApiError:
    return ApiError(429, "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    {"causes": [{"reason": "DisruptionBudget",
                                 "message": f"The disruption budget {pdb_name} needs {desired} "
                                            f"healthy pods and has {current} currently"}]})


def internal(message: str) -> ApiError:
    return ApiError(500, "InternalError", f"Internal error occurred: {message}")
