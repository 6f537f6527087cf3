"""ServiceAccount tokens the sandbox API server issues (``serviceaccounts/<sa>/token``): real
ES256-signed JWTs with the claims kube-apiserver puts in them, remembered so a TokenReview (as
Vault's Kubernetes auth makes one) can answer whether a token is one this cluster issued."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://kubernetes.default.svc.cluster.local"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass
class TokenIssuer:
    issuer: str = ISSUER
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()), repr=False)
    kid: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    issued: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def issue(self, namespace: str, sa_name: str, sa_uid: str, seconds: int,
              audiences: list[str] | None = None) -> tuple[str, int]:
        """A bound token for the ServiceAccount; (JWT, exp)."""
        now = int(time.time())
        claims = {"aud": audiences or [self.issuer], "exp": now + seconds, "iat": now, "nbf": now,
                  "iss": self.issuer, "jti": str(uuid.uuid4()),
                  "kubernetes.io": {"namespace": namespace,
                                    "serviceaccount": {"name": sa_name, "uid": sa_uid}},
                  "sub": f"system:serviceaccount:{namespace}:{sa_name}"}
        header = {"alg": "ES256", "kid": self.kid}
        signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing.encode(), ec.ECDSA(hashes.SHA256())))
        token = f"{signing}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        self.issued[token] = claims
        return token, claims["exp"]

    def jwk(self) -> dict[str, str]:
        numbers = self.key.public_key().public_numbers()
        return {"use": "sig", "kty": "EC", "kid": self.kid, "crv": "P-256", "alg": "ES256",
                "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}

    def review(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this server issued and that has not expired, else None."""
        claims = self.issued.get(token)
        if claims is None or claims["exp"] < time.time():
            return None
        return claims
