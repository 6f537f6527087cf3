"""Real X.509 material for the sandbox Vault: an offline root CA, the `pki_int` intermediate it
signed (runbook 4.3: 10-year intermediate, root key kept offline) and the cluster CA that Vault's
Kubernetes auth trusts. EC keys keep generation in the milliseconds."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class CertPair:
    pem: str
    not_before: datetime
    not_after: datetime
    serial_hex: str


def _name(cn: str, org: str = "Example Org") -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca_cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             signer: ec.EllipticCurvePrivateKey, not_before: datetime, not_after: datetime,
             path_len: int | None) -> tuple[x509.Certificate, CertPair]:
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_len), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(signer, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    serial = format(cert.serial_number, "x")
    serial = serial.zfill(len(serial) + len(serial) % 2)
    return cert, CertPair(pem, not_before, not_after, ":".join(serial[i:i + 2] for i in range(0, len(serial), 2)))


@dataclass(frozen=True)
class PkiMaterial:
    root: CertPair
    intermediate: CertPair
    kube_ca: CertPair
    intermediate_key: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)
    # The offline root's key (the sandbox keeps it, so an intermediate can be re-signed by the same root).
    root_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False, compare=False)

    def issue_leaf(self, dns_names: list[str], not_before: datetime, not_after: datetime) -> tuple[str, str]:
        """A server certificate signed by the intermediate, as pki_int/sign/<role> returns it:
        (certificate PEM, private key PEM)."""
        key = ec.generate_private_key(ec.SECP256R1())
        int_cert = x509.load_pem_x509_certificate(self.intermediate.pem.encode())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(int_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.intermediate_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def make_pki(now: datetime | None = None, intermediate_days: int = 3650,
             keep: "PkiMaterial | None" = None) -> PkiMaterial:
    """Root (15 y) → intermediate (``intermediate_days``, negative = already expired); plus the
    Kubernetes cluster CA. ``keep``: re-sign a new intermediate with that material's root (and
    keep its cluster CA), as a rotation or a rebuilt Vault does."""
    now = now or datetime.now(timezone.utc)
    root_name = _name("Example Org Root CA")
    if keep is not None and keep.root_key is not None:
        root_key, root = keep.root_key, keep.root
    else:
        root_key = ec.generate_private_key(ec.SECP256R1())
        _, root = _ca_cert(root_name, root_name, root_key, root_key,
                           now - timedelta(days=400), now + timedelta(days=15 * 365), None)
    int_key = ec.generate_private_key(ec.SECP256R1())
    start = now - timedelta(days=365) if intermediate_days > 0 else now + timedelta(days=intermediate_days - 3650)
    end = now + timedelta(days=intermediate_days)
    _, inter = _ca_cert(_name("Example Org Intermediate CA"), root_name, int_key, root_key,
                        start, end, 0)
    if keep is not None:
        kube = keep.kube_ca
    else:
        kube_key = ec.generate_private_key(ec.SECP256R1())
        kube_name = _name("rke2-server-ca@1700000000", org="rke2")
        _, kube = _ca_cert(kube_name, kube_name, kube_key, kube_key,
                           now - timedelta(days=400), now + timedelta(days=3650), None)
    return PkiMaterial(root=root, intermediate=inter, kube_ca=kube, intermediate_key=int_key, root_key=root_key)
