"""A real Prometheus (the Debian package ``prometheus``) scraping sandbox exporters.

One process per Python process, started on first use and stopped at exit: a start costs 1–2 s,
so sandboxes come and go (one per test) and only register their exporter with it. Prometheus
scrapes one static target, a small HTTP server in this process serving the registered sandbox's
metrics (a new service-discovery target would wait up to 5 s for Prometheus's discovery
batching; a static one is scraped within the 500 ms interval). When a sandbox registers, every
stored sample so far is deleted (admin API), so its queries — range queries too — never see an
earlier sandbox's series; series it does not serve get staleness markers at the next scrape.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import yaml

from sandbox.ports import free_port

if TYPE_CHECKING:
    from sandbox.exporter import Exporter

# The timeout as long as the interval allows: a scrape that times out (the proxy thread waiting
# for the GIL on a loaded machine) marks every series stale until the next one succeeds, and a
# SOP querying in between finds nothing (a fresh-clone run saw "no mysqld_exporter metrics").
SCRAPE_INTERVAL = "500ms"
SCRAPE_TIMEOUT = "490ms"
JOB = "sandbox-exporters"


class PrometheusUnavailable(RuntimeError):
    pass


def log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def run_prometheus(config: dict, workdir: Path, port: int, *flags: str) -> subprocess.Popen[bytes]:
    """The Debian package's prometheus on ``config``, storing and logging (prometheus.log) in
    ``workdir``, listening on ``port``, once ready (a bounded wait). Raises PrometheusUnavailable,
    having stopped a process that exited or did not become ready."""
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        raise PrometheusUnavailable("prometheus is missing: ./run-tests installs the Debian package "
                                    "`prometheus` with apt-get (or prints the command)")
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config))
    log_path = workdir / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", *flags],
            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30  # bounded wait for readiness
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise PrometheusUnavailable(f"prometheus exited at start:\n{log_tail(log_path)}")
            try:
                if http.get(f"http://127.0.0.1:{port}/-/ready").status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    stop_process(proc)
    raise PrometheusUnavailable(f"prometheus did not become ready:\n{log_tail(log_path)}")


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class SharedPrometheus:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sopbot-prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "prometheus.log"
        self.exporters: list[Exporter] = []  # registered sandboxes; the last one is served
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None
        self._server = self._serve()

    def _serve(self) -> ThreadingHTTPServer:
        shared = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                with shared._lock:
                    current = shared.exporters[-1] if shared.exporters else None
                body = (current.text() if current is not None else "").encode()
                try:
                    self.send_response(200 if self.path == "/metrics" else 404)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # Prometheus gave up on a slow scrape (a loaded machine): the next one counts

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="sandbox-exporter-proxy", daemon=True).start()
        return server

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_TIMEOUT},
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [self.target]}],
                # Series with a `member` label are etcd members' own metrics (sandbox/etcd_metrics.py):
                # they get the job and instance a scrape of each member on :2381 would give.
                "metric_relabel_configs": [
                    {"source_labels": ["member"], "regex": "(.+)", "target_label": "instance", "replacement": "$1"},
                    {"source_labels": ["member"], "regex": ".+", "target_label": "job", "replacement": "etcd"},
                    {"regex": "member", "action": "labeldrop"}]}],
        }
        self.proc = run_prometheus(config, self.workdir, self.port, "--log.level=warn", "--web.enable-admin-api")

    def log_tail(self) -> str:
        return log_tail(self.log)

    def forget(self, selector: str) -> None:
        """Delete the stored samples of the series ``selector`` matches (tombstones: queries
        stop seeing them at once). Up to now only: a tombstone without ``end`` reaches to the end
        of time and would hide every sample the series gets later too."""
        try:
            httpx.post(f"{self.url}/api/v1/admin/tsdb/delete_series", timeout=5,
                       params={"match[]": selector, "end": f"{time.time():.3f}"})
        except httpx.HTTPError:
            pass  # a test then sees an earlier sandbox's range data, never a wrong instant value

    def add(self, exporter: "Exporter") -> None:
        """Serve ``exporter`` from the next scrape on; with no other sandbox registered, forget
        everything stored so far (every job: the relabelled etcd series too)."""
        with self._lock:
            if not self.exporters:
                self.forget('{__name__=~".+"}')
            self.exporters.append(exporter)

    def remove(self, exporter: "Exporter") -> None:
        with self._lock:
            self.exporters = [e for e in self.exporters if e is not exporter]

    def stop(self) -> None:
        self._server.shutdown()
        stop_process(self.proc)
        shutil.rmtree(self.workdir, ignore_errors=True)


_shared: SharedPrometheus | None = None
_shared_lock = threading.Lock()


def shared_prometheus() -> SharedPrometheus:
    """The process-wide Prometheus, started on first call (raises PrometheusUnavailable)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            server = SharedPrometheus()
            try:
                server.start()
            except BaseException:
                server.stop()
                raise
            atexit.register(server.stop)
            _shared = server
        return _shared
