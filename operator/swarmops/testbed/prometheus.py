"""A real Prometheus (Debian's /usr/bin/prometheus) for analysis tests, scraping a metrics
source the test controls.

`MetricsSource` is a small HTTP server that serves whatever the test set, in the Prometheus
text format (`agent_task_errors_ratio{revision="abc"} 0.2`). `Prometheus` runs
Prometheus on a free loopback port with a throw-away data directory, scraping the source every
second, so the operator's analysis runs real PromQL over real scraped series. Stopping and
starting it again (same port, same data) is the "Prometheus unreachable" fault.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import threading
import urllib.parse
import urllib.request
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from swarmops.analysis.prometheus import value_of
from swarmops.testbed.processes import ManagedProcess, free_port, wait_until

PROMETHEUS: Final = "/usr/bin/prometheus"
SCRAPE_INTERVAL_SECONDS: Final = 1
JOB: Final = "swarmops-testbed"

SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def selector(name: str, labels: Mapping[str, str] | None = None) -> str:
    """`name{k="v",...}`: the series in the exposition format and as a PromQL selector."""
    if not labels:
        return name
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(labels.items()))
    return f"{name}{{{inner}}}"


class MetricsSource:
    """Serves, at /metrics, the series the test set; nothing else."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._series: dict[SeriesKey, float] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    @property
    def address(self) -> str:
        if self._server is None:
            raise RuntimeError("the metrics source is not started")
        return f"{self.host}:{self._server.server_address[1]}"

    def set(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._series[(name, tuple(sorted((labels or {}).items())))] = value

    def remove(self, name: str, labels: Mapping[str, str] | None = None) -> None:
        with self._lock:
            self._series.pop((name, tuple(sorted((labels or {}).items()))), None)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()

    def exposition(self) -> str:
        with self._lock:
            series = sorted(self._series.items())
        return "".join(
            f"{selector(name, dict(labels))} {_number(value)}\n" for (name, labels), value in series
        )

    def start(self) -> None:
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                body = source.exposition().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # a scrape a second would drown the test output

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-source", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _number(value: float) -> str:
    # The exposition format spells the special values this way; repr covers the rest exactly.
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class PrometheusNotInstalled(RuntimeError):
    pass


class Prometheus:
    """Prometheus on loopback, scraping its own `source` every second."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.source = MetricsSource()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: ManagedProcess | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def start(self, timeout: float = 60.0) -> None:
        """Start Prometheus (again, on the same port and data) and wait until it is ready."""
        if not self.source.started:
            self.source.start()
        if self.running:
            return
        binary = shutil.which(PROMETHEUS)
        if binary is None:
            raise PrometheusNotInstalled(
                f"{PROMETHEUS} not found: the analysis tests need Debian's prometheus package "
                "(hack/setup.sh installs it)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        # JSON is YAML, and needs no YAML writer.
        config.write_text(
            json.dumps(
                {
                    "global": {
                        "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                        "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                        "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                    },
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [self.source.address]}]}
                    ],
                }
            )
        )
        self._process = ManagedProcess(
            "prometheus",
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                "--storage.tsdb.retention.time=2h",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            self.workdir,
        )
        self._process.start()
        wait_until(
            lambda: self._get("/-/ready", timeout=1.0).startswith("Prometheus"),
            timeout=timeout,
            what="Prometheus to be ready",
            interval=0.2,
            watched=[self._process],
        )

    def stop(self) -> None:
        """Stop Prometheus; the source keeps serving. The "Prometheus unreachable" fault."""
        if self._process is not None:
            self._process.stop()
            self._process = None

    def close(self) -> None:
        self.stop()
        self.source.stop()

    def reset(self) -> None:
        """Between tests: nothing set on the source, Prometheus running."""
        self.source.clear()
        self.start()

    def _get(self, path: str, *, timeout: float) -> str:
        with urllib.request.urlopen(self.url + path, timeout=timeout) as reply:
            return str(reply.read().decode())

    def query(self, promql: str) -> float | None:
        """An instant query's single number (None: no data), read as the provider reads it."""
        text = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": promql}), timeout=5)
        return value_of(json.loads(text))

    def wait_for(
        self,
        name: str,
        value: float | None,
        labels: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        """Wait until Prometheus answers `value` for the series (None: until it has no data,
        e.g. after `source.remove`)."""
        promql = selector(name, labels)
        wait_until(
            lambda: self.query(promql) == value,
            timeout=timeout,
            what=f"Prometheus to see {promql} = {value}",
            interval=0.2,
            watched=[self._process] if self._process else [],
        )

    async def scraped(
        self,
        name: str,
        value: float | None,
        labels: Mapping[str, str] | None = None,
        *,
        within: float = 60.0,
    ) -> None:
        """`wait_for` without blocking the event loop."""
        await asyncio.to_thread(self.wait_for, name, value, labels, timeout=within)

    def set_and_wait(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        *,
        timeout: float = 60.0,
    ) -> None:
        """Set a series on the source and wait until Prometheus has scraped it."""
        self.source.set(name, value, labels)
        self.wait_for(name, value, labels, timeout=timeout)
