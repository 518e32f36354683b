"""Redis nodes as local processes, laid out as a RedisCluster's pods, without Kubernetes.

For fast tests of the Redis logic (plan and execution) against real redis-server
processes: each "pod" is a redis-server bound to its own loopback address, started with
the same redis.conf the operator writes; "deleting" a pod stops the process and the
next start gets a new address, as a recreated pod would. Data directories survive that
only with persistence, exactly as a PVC would. `converge` runs the operator's Redis loop
(observe, plan, execute) in-process until a condition holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarmops.api.rediscluster import RedisCluster
from swarmops.core.rediscluster import names
from swarmops.core.rediscluster.objects import redis_conf
from swarmops.core.rediscluster.observed import Observation, RedisPod, ShardSet
from swarmops.core.rediscluster.plan import ClusterPlan, plan_cluster
from swarmops.redisnodes.connections import NodeAuth, NodeConnections
from swarmops.redisnodes.execute import Executor, Report
from swarmops.redisnodes.observe import observe_nodes
from swarmops.testbed.processes import death_signal_launcher

REDIS_SERVER = "/usr/bin/redis-server"


def _address_free(ip: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


@dataclass
class LocalPod:
    name: str
    shard: int
    ordinal: int
    uid: str
    ip: str | None = None
    process: subprocess.Popen[bytes] | None = None
    revision: str = "rev-1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """A RedisCluster's pods as local redis-server processes."""

    workdir: Path
    cluster: RedisCluster
    password: str | None = "local-secret"
    tls_dir: Path | None = None  # tls.crt, tls.key, ca.crt, when the cluster has TLS on
    pods: dict[str, LocalPod] = field(default_factory=dict)
    revisions: dict[int, str] = field(default_factory=dict)
    _prefix: str = ""
    _next_host: int = 2

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._prefix = f"127.88.{secrets.randbelow(250) + 1}."

    @property
    def name(self) -> str:
        return self.cluster.metadata.name

    @property
    def persistent(self) -> bool:
        return self.cluster.spec.persistence is not None

    # --- addresses and processes ------------------------------------------------------------

    def _new_ip(self) -> str:
        for _ in range(250):
            host = self._next_host
            self._next_host = self._next_host + 1 if self._next_host < 250 else 2
            ip = f"{self._prefix}{host}"
            if _address_free(ip, names.CLIENT_PORT) and not any(
                p.ip == ip for p in self.pods.values()
            ):
                return ip
        raise RuntimeError("no free loopback address")

    def data_dir(self, pod: str) -> Path:
        return self.workdir / pod

    def start(self, shard: int, ordinal: int) -> LocalPod:
        name = names.pod_name(self.name, shard, ordinal)
        pod = self.pods.get(name) or LocalPod(name, shard, ordinal, uid=secrets.token_hex(4))
        self.pods[name] = pod
        pod.ip = self._new_ip()
        pod.revision = self.revisions.get(shard, "rev-1")
        data = self.data_dir(name)
        if not self.persistent and data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True, exist_ok=True)
        conf = redis_conf(self.cluster.spec, self.name)
        if self.tls_dir is not None:
            conf = conf.replace("/etc/redis/tls", str(self.tls_dir))
        conf = conf.replace("/data", str(data))
        (data / "redis.conf").write_text(conf)
        argv = [REDIS_SERVER, str(data / "redis.conf"), "--cluster-announce-ip", pod.ip]
        if self.password:
            argv += ["--requirepass", self.password, "--masterauth", self.password]
        argv += ["--bind", pod.ip, "--daemonize", "no", "--logfile", str(data / "redis.log")]
        pod.process = subprocess.Popen(
            [*death_signal_launcher(), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return pod

    def start_all(self) -> None:
        for shard in range(self.cluster.spec.shards):
            for ordinal in range(1 + self.cluster.spec.replicas_per_shard):
                self.start(shard, ordinal)

    def stop(self, name: str, *, kill: bool = False, remove: bool = False) -> None:
        """Stop a pod's process (SIGTERM, as a pod deletion; SIGKILL with `kill`)."""
        pod = self.pods[name]
        if pod.process is not None and pod.process.poll() is None:
            pod.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                pod.process.wait(10)
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()
        pod.process = None
        pod.ip = None
        if remove:
            del self.pods[name]

    def restart(self, name: str, *, kill: bool = False) -> LocalPod:
        """Delete and recreate a pod: a new process at a new address (a new uid too)."""
        pod = self.pods[name]
        self.stop(name, kill=kill)
        pod.uid = secrets.token_hex(4)
        return self.start(pod.shard, pod.ordinal)

    def close(self) -> None:
        for name in list(self.pods):
            with contextlib.suppress(OSError):
                self.stop(name, kill=True)

    # --- what the operator would see --------------------------------------------------------

    def redis_pods(self) -> list[RedisPod]:
        return [
            RedisPod(
                name=pod.name,
                uid=pod.uid,
                shard=pod.shard,
                ordinal=pod.ordinal,
                ip=pod.ip if pod.running else None,
                running=pod.running,
                ready=pod.running,
                terminating=False,
                revision=pod.revision,
            )
            for pod in sorted(self.pods.values(), key=lambda p: p.name)
        ]

    def statefulsets(self, sizes: dict[int, int]) -> dict[int, ShardSet]:
        return {
            shard: ShardSet(shard, size, self.revisions.get(shard, "rev-1"))
            for shard, size in sizes.items()
        }


@dataclass
class Loop:
    """The operator's Redis loop without Kubernetes: observe, plan, execute, remember."""

    local: LocalCluster
    connections: NodeConnections = field(init=False)
    sizes: dict[int, int] = field(default_factory=dict)
    in_flight: dict[str, float] = field(default_factory=dict)
    last: ClusterPlan | None = None
    reports: list[Report] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        tls_ca = None
        if self.local.tls_dir is not None:
            tls_ca = (self.local.tls_dir / "ca.crt").read_text()
        self.connections = NodeConnections(NodeAuth(self.local.password, tls_ca))
        spec = self.local.cluster.spec
        self.sizes = {s: 1 + spec.replicas_per_shard for s in range(spec.shards)}

    async def step(self) -> ClusterPlan:
        local = self.local
        pods = local.redis_pods()
        views, unreachable = await observe_nodes(self.connections, pods)
        status = local.cluster.status
        recorded = {n.node_id: n.pod_name for n in status.nodes if n.node_id}
        observation = Observation(
            cluster=local.name,
            pods=pods,
            views=views,
            unreachable=unreachable,
            statefulsets=local.statefulsets(self.sizes),
            recorded=recorded,
        )
        now = time.monotonic()
        self.in_flight = {k: t for k, t in self.in_flight.items() if t > now}
        plan = plan_cluster(
            local.cluster,
            observation,
            now=datetime.datetime.now(datetime.UTC),
            in_flight=frozenset(self.in_flight),
        )
        ips = {pod.name: pod.ip for pod in pods if pod.ip}
        masters = [
            name for name, view in views.items() if view.myself.is_master and view.myself.slots
        ]
        report = await Executor(self.connections, ips, masters).run(plan.actions)
        for action in report.done:
            self.in_flight[action.key] = now + 3.0
        self.reports.append(report)
        self.steps.append(plan.step)
        # Status carries over, as the controller writes it.
        local.cluster = local.cluster.model_copy(update={"status": plan.status})
        self._apply_shape(plan.shard_sizes)
        self.last = plan
        return plan

    def _apply_shape(self, sizes: dict[int, int]) -> None:
        local = self.local
        for shard, size in sizes.items():
            for ordinal in range(size):
                name = names.pod_name(local.name, shard, ordinal)
                if name not in local.pods:
                    local.start(shard, ordinal)
        for name, pod in list(local.pods.items()):
            if pod.shard not in sizes or pod.ordinal >= sizes[pod.shard]:
                local.stop(name, remove=True)
        self.sizes = dict(sizes)

    async def until(
        self, done: Callable[[ClusterPlan], bool], *, within: float = 30.0, pause: float = 0.2
    ) -> ClusterPlan:
        deadline = time.monotonic() + within
        while True:
            plan = await self.step()
            if done(plan):
                return plan
            if time.monotonic() > deadline:
                progressing = plan.status.condition("Progressing")
                raise TimeoutError(
                    f"not converged in {within:.0f}s; last step {plan.step} "
                    f"({progressing.message if progressing else ''}), "
                    f"problems {plan.problems}, status {plan.status.phase}"
                )
            await asyncio.sleep(pause if not plan.actions else min(pause, plan.requeue_after))

    async def close(self) -> None:
        await self.connections.close()


def local_cluster_body(
    name: str = "lc", shards: int = 3, replicas: int = 1, persistence: bool = True, **spec: Any
) -> RedisCluster:
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "RedisCluster",
        "metadata": {"name": name, "namespace": "local", "uid": "uid-local", "generation": 1},
        "spec": {"shards": shards, "replicasPerShard": replicas, **spec},
    }
    if persistence:
        body["spec"]["persistence"] = {"size": "1Gi"}
    return RedisCluster.from_body(body)


@contextlib.contextmanager
def local_cluster(workdir: Path, cluster: RedisCluster) -> Iterator[LocalCluster]:
    local = LocalCluster(workdir, cluster)
    try:
        yield local
    finally:
        local.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
