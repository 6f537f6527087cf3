"""An idle bot has not loaded the libraries only a running SOP needs (issue 13's idle RSS).

cryptography's x509 (~8 MB of RSS) is for TLS probes and CA chains, hvac/requests (~5 MB) for
Vault calls: importing the runtime and every handler must not load them, and the first use
still does.
"""

import subprocess
import sys

CODE = """
import sys
import bot.runtime, handlers  # what `sopbot run` imports before it serves
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"cryptography", "hvac", "requests"})
assert not heavy, f"loaded at import: {heavy}"

import asyncio
from bot.clients.vault import VaultPool
from bot.clients.errors import SourceError

pool = VaultPool(["http://127.0.0.1:9"], timeout_s=1)  # nothing listens on the discard port
assert "hvac" not in sys.modules  # the clients are made at the first call
try:
    asyncio.run(pool.seal_status(pool.addrs[0]))
except SourceError as exc:
    print("vault:", exc)
assert "hvac" in sys.modules and "requests" in sys.modules

from bot.clients.probe import describe
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
import datetime
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idle.example")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256()))
served = describe(cert)
print("probe:", served.subject_cn, served.self_signed)
"""


def test_sop_only_libraries_load_at_first_use():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "vault: " in done.stdout and "unreachable" in done.stdout, done.stdout
    assert "probe: idle.example True" in done.stdout, done.stdout
