"""Agents and a Redis as local processes, for the agent runtime's tests and benchmark.

`RedisServer` is one real redis-server on a loopback port (with a password, as the
RedisCluster operator sets one); a Redis Cluster comes from `testbed.localredis`.
`AgentProcess` runs `python -m swarmops agent ...` exactly as the process node runs an
agent pod: its own process group, POD_IP and POD_NAME set, output to a log file, and
signals delivered as the kubelet would (SIGTERM on delete, SIGKILL for a crash).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from swarmops.agent import contract
from swarmops.testbed.processes import death_signal_launcher, free_port, wait_until

REDIS_SERVER = "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """A redis-server bound to 127.0.0.1 on a free port; no persistence."""

    workdir: Path
    password: str | None = field(default_factory=lambda: secrets.token_hex(12))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def env(self) -> dict[str, str]:
        """The agent's Redis contract for this server."""
        env = {contract.ENV_REDIS_URL: self.url}
        if self.password:
            env[contract.ENV_REDIS_PASSWORD] = self.password
        return env

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        argv = [
            REDIS_SERVER,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [*death_signal_launcher(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(self._answers, timeout=20, what=f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        try:
            client = redis.Redis(port=self.port, password=self.password, socket_timeout=1)
            with client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def redis_server(workdir: Path, password: str | None = "agent-secret") -> Iterator[RedisServer]:
    server = RedisServer(workdir, password=password).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class AgentProcess:
    """One `swarmops agent` process, as the process node would run it."""

    name: str
    workdir: Path
    handler: str = "swarmops.agent.examples:echo"
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    ip: str = "127.0.0.1"
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def url(self, path: str) -> str:
        return f"http://{self.ip}:{self.port}{path}"

    def start(self) -> AgentProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWARMOPS_")},
            contract.ENV_POD_NAME: self.name,
            contract.ENV_POD_IP: self.ip,
            "SWARMOPS_AGENT_PORT": str(self.port),
            **self.env,
        }
        argv = [sys.executable, "-m", "swarmops", "agent", "--handler", self.handler, *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*death_signal_launcher(), *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        return self

    def wait_ready(self, timeout: float = 60) -> AgentProcess:
        wait_until(
            lambda: self.http_status(contract.READY_PATH) == 200 or not self.running(),
            timeout=timeout,
            what=f"agent {self.name} to be ready",
            interval=0.02,
        )
        if not self.running():
            raise RuntimeError(f"agent {self.name} exited:\n{self.log_tail()}")
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def http_status(self, path: str) -> int | None:
        try:
            with urllib.request.urlopen(self.url(path), timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return None

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url(contract.STATUS_PATH), timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
            return body

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url(contract.METRICS_PATH), timeout=5) as response:
            return str(response.read().decode())

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    def wait(self, timeout: float = 60) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
