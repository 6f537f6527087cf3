"""Object name validation with the real API server's wording (apimachinery validation)."""

from __future__ import annotations

import re

from sandbox.kube.errors import ApiError, invalid
from sandbox.kube.resources import ResourceType

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_LABEL_RE = re.compile(rf"^{_LABEL}$")

_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                  "characters, '-' or '.', and must start and end with an alphanumeric character "
                  "(e.g. 'example.com', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
              "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
              "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")

# Kinds whose names must be DNS labels (they become DNS names or hostnames themselves).
_LABEL_KINDS = frozenset({("", "Namespace"), ("", "Service")})


def name_problem(rt: ResourceType, name: str) -> str | None:
    """The message after ``metadata.name: `` when the name is invalid, else None."""
    if (rt.group, rt.kind) in _LABEL_KINDS:
        if len(name) > 63:
            return f'Invalid value: "{name}": must be no more than 63 characters'
        if not _LABEL_RE.match(name):
            return f'Invalid value: "{name}": {_LABEL_MSG}'
        return None
    if len(name) > 253:
        return f'Invalid value: "{name}": must be no more than 253 characters'
    if not _SUBDOMAIN_RE.match(name):
        return f'Invalid value: "{name}": {_SUBDOMAIN_MSG}'
    return None


def validate_name(rt: ResourceType, name: str) -> None:
    if not name:
        raise ApiError(422, "Invalid",
                       f"{rt.kind} \"\" is invalid: metadata.name: Required value: name or "
                       "generateName is required",
                       {"kind": rt.kind, "causes": [{"reason": "FieldValueRequired",
                                                     "message": "Required value: name or generateName is required",
                                                     "field": "metadata.name"}]})
    problem = name_problem(rt, name)
    if problem:
        raise invalid(rt, name, [("metadata.name", problem)])
