"""A real Prometheus (the Debian package ``prometheus``) scraping sandbox exporters.

One process per Python process, started on first use and stopped at exit: a start costs 1–2 s,
so sandboxes come and go (one per test) and only register their exporter's address in the
file-based service discovery file, which Prometheus watches. A target leaving the file gets
staleness markers, and its samples are deleted (admin API), so a later sandbox's queries — range
queries too — never see an earlier one's series.
"""

from __future__ import annotations

import atexit
import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

SCRAPE_INTERVAL = "250ms"
JOB = "sandbox-exporters"


class PrometheusUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SharedPrometheus:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="sopbot-prometheus-"))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sd_file = self.workdir / "targets.json"
        self.log = self.workdir / "prometheus.log"
        self.targets: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise PrometheusUnavailable("prometheus is missing: ./run-tests installs the Debian package "
                                        "`prometheus` with apt-get (or prints the command)")
        self._write_targets()
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "200ms"},
            "scrape_configs": [{"job_name": JOB, "file_sd_configs": [
                {"files": [str(self.sd_file)], "refresh_interval": "1s"}],
                # Series with a `member` label are etcd members' own metrics (sandbox/etcd_metrics.py):
                # they get the job and instance a scrape of each member on :2381 would give.
                "metric_relabel_configs": [
                    {"source_labels": ["member"], "regex": "(.+)", "target_label": "instance", "replacement": "$1"},
                    {"source_labels": ["member"], "regex": ".+", "target_label": "job", "replacement": "etcd"},
                    {"regex": "member", "action": "labeldrop"}]}],
        }
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={cfg}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", "--web.enable-admin-api"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30  # bounded wait for readiness
        with httpx.Client(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise PrometheusUnavailable(f"prometheus exited at start:\n{self.log_tail()}")
                try:
                    if http.get(f"{self.url}/-/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise PrometheusUnavailable(f"prometheus did not become ready:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def _write_targets(self) -> None:
        groups = [{"targets": [addr], "labels": labels} for addr, labels in sorted(self.targets.items())]
        tmp = self.sd_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.sd_file)  # atomic: Prometheus never reads half a file

    def forget(self, selector: str) -> None:
        """Delete the stored samples of the series ``selector`` matches (tombstones: queries
        stop seeing them at once). Up to now only: a tombstone without ``end`` reaches to the end
        of time and would hide every sample the series gets later too."""
        try:
            httpx.post(f"{self.url}/api/v1/admin/tsdb/delete_series", timeout=5,
                       params={"match[]": selector, "end": f"{time.time():.3f}"})
        except httpx.HTTPError:
            pass  # a test then sees an earlier sandbox's range data, never a wrong instant value

    def add(self, address: str, labels: dict[str, str] | None = None) -> None:
        with self._lock:
            # Whatever an earlier sandbox left (a scrape racing its removal, the same port reused),
            # before this target's first scrape.
            keep = "|".join(a.replace(".", "\\.") for a in self.targets if a != address)
            self.forget(f'{{job="{JOB}",instance!~"{keep}"}}' if keep else f'{{job="{JOB}"}}')
            self.targets[address] = labels or {}
            self._write_targets()

    def remove(self, address: str) -> None:
        with self._lock:
            if self.targets.pop(address, None) is not None:
                self._write_targets()
            self.forget(f'{{job="{JOB}",instance="{address}"}}')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
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
