"""RedisCluster benchmark: bootstrap time, recovery after a master is deleted, keys lost,
and reshard throughput while a writer runs.

Brings up its own test bed (or reuses a running one: --kubeconfig; it needs the process
node), runs the real operator as a subprocess (`python -m swarmops run --namespace
<ns>`), and in one namespace of its own:

1. bootstrap: a RedisCluster of 3 shards x (1 master + 1 replica), no persistence, on
   the process node (real redis-server processes). `bootstrap_s` = the last of its six
   pods Ready -> every node reports cluster_state:ok with all 16384 slots assigned;
   `create_to_ready_s` = RedisCluster created -> its Ready condition.
2. master kill: `--keys` keys seeded (and replicated), a writer running at
   `--write-rate`; the master of shard 1 is deleted (`kubectl delete pod`).
   `master_kill_recovery_s` = deletion -> its slots owned by another node (its replica,
   promoted) as every live node sees it, with cluster_state:ok everywhere;
   `write_outage_s` = first to last failed write after the deletion (0: none failed).
3. reshard: shards 3 -> 4 with the writer still running. `reshard_s` = the patch -> the
   Ready condition back with 4 even shards; `reshard_keys_per_s` = keys the operator
   migrated (its swarmops_redis_keys_moved_total) / reshard_s.

`keys_lost` counts seeded and acknowledged keys missing at the end (must be 0).
Prints one JSON object. Run: python bench/redis.py
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named redis.py: `python bench/redis.py` puts bench/ first on sys.path, where
# this file would shadow the redis package every import below needs. Hence imports after
# code in this file only:
# ruff: noqa: E402
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import json
import os
import platform
import secrets
import subprocess
import tempfile
import time
import urllib.request
from typing import Any

import redis

from swarmops.testbed import redisbed
from swarmops.testbed.binaries import ensure_binaries, repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import free_port, wait_until
from swarmops.testbed.redisbed import BackgroundWriter, get_cluster, nodes_by_pod, wait_for

NAME = "bench"


class KubeconfigKubectl:
    """kubectl against a running test bed given by its kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        self.kubeconfig = kubeconfig

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ensure_binaries() / "kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            check=check,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def node_states(ips: list[str], secret: str) -> list[tuple[str, str]]:
    """(CLUSTER INFO, CLUSTER NODES) of every node that answers."""
    states = []
    for ip in ips:
        try:
            with redis.Redis(host=ip, password=secret, socket_timeout=1) as client:
                info = client.execute_command("CLUSTER", "INFO")
                nodes = client.execute_command("CLUSTER", "NODES")
        except (redis.RedisError, OSError):
            continue
        states.append((_text(info), _text(nodes)))
    return states


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def all_ok(ips: list[str], secret: str) -> bool:
    states = node_states(ips, secret)
    return (
        bool(states)
        and len(states) == len(ips)
        and all(
            "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info
            for info, _ in states
        )
    )


def slots_moved_off(ips: list[str], secret: str, dead: str) -> bool:
    """Every live node has the dead master owning nothing, and cluster_state:ok."""
    states = node_states(ips, secret)
    if not states:
        return False
    for info, nodes in states:
        if "cluster_state:ok" not in info:
            return False
        for line in nodes.splitlines():
            fields = line.split()
            if fields and fields[0] == dead and len(fields) > 8:
                return False  # still listed with slots
    return True


def pods_ready(bed: Any, namespace: str, count: int) -> bool:
    ready = 0
    for pod in redisbed.pods(bed, namespace, NAME):
        conditions = (pod.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready += 1
    return ready >= count


def keys_moved(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("swarmops_redis_keys_moved_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_operator(
    kubeconfig: Path, namespace: str, log_path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    metrics_port, health_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "swarmops",
        "run",
        "--namespace",
        namespace,
        "--kubeconfig",
        str(kubeconfig),
        "--metrics-port",
        str(metrics_port),
        "--health-port",
        str(health_port),
        "--log-format",
        "text",
    ]
    with log_path.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    ready = f"http://127.0.0.1:{metrics_port}/readyz"

    def up() -> bool:
        try:
            with urllib.request.urlopen(ready, timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_until(up, timeout=60, what="the operator to be ready")
    return process, f"http://127.0.0.1:{metrics_port}/metrics"


def run(bed: Any, kubeconfig: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    namespace = f"bench-redis-{secrets.token_hex(3)}"
    bed.kubectl("create", "namespace", namespace)
    log_path = work / "operator.log"
    process, metrics_url = start_operator(kubeconfig, namespace, log_path)
    writer: BackgroundWriter | None = None
    try:
        # 1. bootstrap
        created = time.monotonic()
        redisbed.apply_cluster(bed, redisbed.cluster_manifest(NAME, namespace))
        wait_for("6 pods Ready", lambda: pods_ready(bed, namespace, 6), timeout=120, interval=0.05)
        pods_ready_at = time.monotonic()
        secret = wait_for(
            "the generated password",
            lambda: redisbed.password(bed, namespace, f"{NAME}-auth"),
            timeout=30,
        )
        wait_for(
            "cluster_state:ok",
            lambda: all_ok(redisbed.pod_ips(bed, namespace, NAME), secret),
            timeout=120,
            interval=0.05,
        )
        formed_at = time.monotonic()
        redisbed.wait_ready(bed, namespace, NAME, timeout=120)
        ready_at = time.monotonic()

        # 2. master kill
        writer = BackgroundWriter(
            lambda: redisbed.pod_ips(bed, namespace, NAME), secret, rate=args.write_rate
        )
        writer.seed(args.keys)
        writer.start()
        time.sleep(1.0)
        body = get_cluster(bed, namespace, NAME)
        master = next(
            n for n in nodes_by_pod(body).values() if n["shard"] == 1 and n["role"] == "Master"
        )
        killed = time.monotonic()
        bed.kubectl("delete", "pod", master["podName"], "-n", namespace, "--wait=false")
        wait_for(
            "the dead master's slots served again",
            lambda: slots_moved_off(
                redisbed.pod_ips(bed, namespace, NAME), secret, master["nodeID"]
            ),
            timeout=60,
            interval=0.05,
        )
        recovered = time.monotonic()
        redisbed.wait_ready(bed, namespace, NAME, timeout=120)
        writer.refresh()
        errors_after = [t for t in writer.writer.error_times if t >= killed]
        outage = (max(errors_after) - min(errors_after)) if errors_after else 0.0

        # 3. reshard
        before = keys_moved(metrics_url)
        started = time.monotonic()
        redisbed.apply_cluster(bed, redisbed.cluster_manifest(NAME, namespace, shards=4))

        def four_even() -> bool:
            now = get_cluster(bed, namespace, NAME)
            writer.refresh()  # type: ignore[union-attr]
            masters = sorted(
                n["slots"] for n in nodes_by_pod(now).values() if n["role"] == "Master"
            )
            return redisbed.is_ready(now) and masters == [4096] * 4

        wait_for("4 even shards", four_even, timeout=600, interval=0.1)
        reshard_s = time.monotonic() - started
        moved = keys_moved(metrics_url) - before
        report = writer.stop_and_verify()
        return {
            "bootstrap_s": round(formed_at - pods_ready_at, 3),
            "create_to_ready_s": round(ready_at - created, 3),
            "master_kill_recovery_s": round(recovered - killed, 3),
            "write_outage_s": round(outage, 3),
            "keys_lost": report.keys_lost,
            "reshard_keys_per_s": round(moved / reshard_s, 1) if reshard_s else None,
            "reshard_s": round(reshard_s, 3),
            "keys_moved": int(moved),
            "seeded_keys": report.seeded,
            "written_keys": report.written,
            "write_errors": report.write_errors,
            "write_rate": args.write_rate,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "operator_log": str(log_path),
        }
    finally:
        if writer is not None:
            writer.close()
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        bed.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, help="reuse this running test bed")
    parser.add_argument("--state", type=Path, help="test bed folder (default: a temporary one)")
    parser.add_argument("--keys", type=int, default=50000, help="keys seeded before the faults")
    parser.add_argument("--write-rate", type=float, default=500.0, help="writer's writes a second")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    if args.kubeconfig is not None:
        result = run(KubeconfigKubectl(args.kubeconfig), args.kubeconfig, args, work)
    else:
        with TestBed(args.state or work / "testbed") as bed:
            crds = repository_root() / "crds"
            bed.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
            bed.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
            result = run(bed, bed.kubeconfig, args, work)
    print(json.dumps(result, indent=2))
    return 0 if result["keys_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
