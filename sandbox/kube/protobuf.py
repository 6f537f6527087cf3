"""Decode the Kubernetes protobuf request bodies kubectl sends for a few built-in kinds.

``kubectl create namespace|configmap|secret|deployment|token`` and ``kubectl expose`` use typed
clients that send ``application/vnd.kubernetes.protobuf``: a ``k8s\\0`` magic, then a
runtime.Unknown wrapping the object. This decodes the fields those commands set, with the field
numbers of the upstream generated.proto files; anything else is skipped. Kinds without a schema
here are refused with 415, so a client sees a clear error rather than a half-read object.
"""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# A schema maps field number -> (json name, kind, sub-schema). Kinds: str, bytes (base64 in
# JSON), int, bool, msg, map_str (map<string,string>), map_bytes, rep_str, rep_msg, intstr.
Schema = dict[int, tuple[str, str, Any]]

_OWNER_REF: Schema = {1: ("kind", "str", None), 3: ("name", "str", None), 4: ("uid", "str", None),
                      5: ("apiVersion", "str", None), 6: ("controller", "bool", None),
                      7: ("blockOwnerDeletion", "bool", None)}
OBJECT_META: Schema = {
    1: ("name", "str", None), 2: ("generateName", "str", None), 3: ("namespace", "str", None),
    5: ("uid", "str", None), 6: ("resourceVersion", "str", None), 7: ("generation", "int", None),
    11: ("labels", "map_str", None), 12: ("annotations", "map_str", None),
    13: ("ownerReferences", "rep_msg", _OWNER_REF), 14: ("finalizers", "rep_str", None),
}
_LABEL_SELECTOR: Schema = {1: ("matchLabels", "map_str", None)}
_INT_OR_STRING: Schema = {}  # handled by the "intstr" kind
_CONTAINER_PORT: Schema = {1: ("name", "str", None), 2: ("hostPort", "int", None),
                           3: ("containerPort", "int", None), 4: ("protocol", "str", None)}
_ENV: Schema = {1: ("name", "str", None), 2: ("value", "str", None)}
_RESOURCES: Schema = {}
_CONTAINER: Schema = {1: ("name", "str", None), 2: ("image", "str", None),
                      3: ("command", "rep_str", None), 4: ("args", "rep_str", None),
                      6: ("ports", "rep_msg", _CONTAINER_PORT), 7: ("env", "rep_msg", _ENV),
                      8: ("resources", "msg", _RESOURCES), 14: ("imagePullPolicy", "str", None)}
_POD_SPEC: Schema = {2: ("containers", "rep_msg", _CONTAINER), 3: ("restartPolicy", "str", None),
                     7: ("nodeSelector", "map_str", None),
                     8: ("serviceAccountName", "str", None), 10: ("nodeName", "str", None)}
_POD_TEMPLATE: Schema = {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", _POD_SPEC)}
_DEPLOYMENT_SPEC: Schema = {1: ("replicas", "int", None), 2: ("selector", "msg", _LABEL_SELECTOR),
                            3: ("template", "msg", _POD_TEMPLATE), 4: ("strategy", "msg", {}),
                            7: ("paused", "bool", None)}
_SERVICE_PORT: Schema = {1: ("name", "str", None), 2: ("protocol", "str", None),
                         3: ("port", "int", None), 4: ("targetPort", "intstr", None),
                         5: ("nodePort", "int", None)}
_SERVICE_SPEC: Schema = {1: ("ports", "rep_msg", _SERVICE_PORT), 2: ("selector", "map_str", None),
                         3: ("clusterIP", "str", None), 4: ("type", "str", None)}
_TOKEN_SPEC: Schema = {1: ("audiences", "rep_str", None), 4: ("expirationSeconds", "int", None)}

_RESOURCE_ATTRIBUTES: Schema = {1: ("namespace", "str", None), 2: ("verb", "str", None),
                                3: ("group", "str", None), 4: ("version", "str", None),
                                5: ("resource", "str", None), 6: ("subresource", "str", None),
                                7: ("name", "str", None)}
_NON_RESOURCE_ATTRIBUTES: Schema = {1: ("path", "str", None), 2: ("verb", "str", None)}

KINDS: dict[str, Schema] = {
    "SelfSubjectAccessReview": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", {
        1: ("resourceAttributes", "msg", _RESOURCE_ATTRIBUTES),
        2: ("nonResourceAttributes", "msg", _NON_RESOURCE_ATTRIBUTES)})},
    "SelfSubjectRulesReview": {1: ("metadata", "msg", OBJECT_META),
                               2: ("spec", "msg", {1: ("namespace", "str", None)})},
    "SelfSubjectReview": {1: ("metadata", "msg", OBJECT_META)},
    "Namespace": {1: ("metadata", "msg", OBJECT_META),
                  2: ("spec", "msg", {1: ("finalizers", "rep_str", None)})},
    "ConfigMap": {1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_str", None),
                  3: ("binaryData", "map_bytes", None), 4: ("immutable", "bool", None)},
    "Secret": {1: ("metadata", "msg", OBJECT_META), 2: ("data", "map_bytes", None),
               3: ("type", "str", None), 4: ("stringData", "map_str", None),
               5: ("immutable", "bool", None)},
    "ServiceAccount": {1: ("metadata", "msg", OBJECT_META)},
    "TokenRequest": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", _TOKEN_SPEC)},
    "Deployment": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", _DEPLOYMENT_SPEC)},
    "Service": {1: ("metadata", "msg", OBJECT_META), 2: ("spec", "msg", _SERVICE_SPEC)},
}


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): ints for varints, bytes for length-delimited."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((num, wire, value))
    return out


def _map_entry(raw: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for num, _, v in fields(raw):
        if num == 1:
            key = v.decode()
        elif num == 2:
            value = v
    return key, value


# Go pointer fields: present only when set, so a zero is meaningful (scale to zero).
_KEEP_ZERO = frozenset({"replicas", "expirationSeconds"})


def decode_message(buf: bytes, schema: Schema) -> Obj:
    """Plain Go fields are always encoded, empty or not; like Go's JSON omitempty, empty strings,
    zeros and false are left out (except pointer fields in _KEEP_ZERO)."""
    import base64
    obj: Obj = {}
    for num, _, value in fields(buf):
        spec = schema.get(num)
        if spec is None:
            continue
        name, kind, sub = spec
        if kind == "str":
            if value:
                obj[name] = value.decode()
        elif kind == "bytes":
            obj[name] = base64.b64encode(value).decode()
        elif kind == "int":
            n = value - (1 << 64) if value >= 1 << 63 else value
            if n or name in _KEEP_ZERO:
                obj[name] = n
        elif kind == "bool":
            if value:
                obj[name] = True
        elif kind == "msg":
            obj[name] = decode_message(value, sub)
        elif kind == "map_str":
            k, v = _map_entry(value)
            obj.setdefault(name, {})[k] = v.decode()
        elif kind == "map_bytes":
            k, v = _map_entry(value)
            obj.setdefault(name, {})[k] = base64.b64encode(v).decode()
        elif kind == "rep_str":
            obj.setdefault(name, []).append(value.decode())
        elif kind == "rep_msg":
            obj.setdefault(name, []).append(decode_message(value, sub))
        elif kind == "intstr":
            parts = {n: v for n, _, v in fields(value)}
            obj[name] = parts[3].decode() if parts.get(1) == 1 else int(parts.get(2, 0))
    return obj


def decode(body: bytes) -> Obj:
    """A protobuf request body to its JSON form; ProtobufError for unknown kinds."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    api_version = kind = ""
    raw = b""
    for num, _, value in fields(body[len(MAGIC):]):
        if num == 1:
            for n, _, v in fields(value):
                if n == 1:
                    api_version = v.decode()
                elif n == 2:
                    kind = v.decode()
        elif num == 2:
            raw = value
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(f"protobuf bodies of kind {kind or '<unknown>'} are not supported by the "
                            f"sandbox; send JSON")
    return {"apiVersion": api_version, "kind": kind, **decode_message(raw, schema)}
