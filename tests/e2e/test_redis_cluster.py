"""RedisCluster end to end: the operator forms, heals, scales and reshards a real Redis
Cluster (redis-server processes on the test bed's process node) without losing a key.

Every fault test seeds keys (replicated before the fault), keeps a writer running
through the fault, and reports keys lost (seeded and acknowledged) and the time back to
``cluster_state:ok``; the numbers are printed (``pytest -s``), zero loss is asserted.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from swarmops.runtime import OperatorThread
from swarmops.testbed import redisbed
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.pki import CertificateAuthority
from swarmops.testbed.redisbed import BackgroundWriter, get_cluster, nodes_by_pod, wait_for

SEED_KEYS = 1000


def events(testbed: TestBed, namespace: str) -> list[dict[str, Any]]:
    listing = json.loads(testbed.kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    items: list[dict[str, Any]] = listing["items"]
    return items


def reasons(testbed: TestBed, namespace: str) -> list[str]:
    return [event["reason"] for event in events(testbed, namespace)]


def node_client(ip: str, secret: str | None) -> redis.Redis:
    return redis.Redis(host=ip, port=6379, password=secret, socket_timeout=5)


def cluster_info(testbed: TestBed, namespace: str, name: str, secret: str) -> dict[str, Any]:
    ip = redisbed.pod_ips(testbed, namespace, name)[0]
    with node_client(ip, secret) as client:
        info: dict[str, Any] = client.execute_command("CLUSTER", "INFO")
        return info


def known_node_ids(testbed: TestBed, namespace: str, name: str, secret: str) -> set[str]:
    ids: set[str] = set()
    for ip in redisbed.pod_ips(testbed, namespace, name):
        with node_client(ip, secret) as client:
            text = client.execute_command("CLUSTER", "NODES")
            text = text.decode() if isinstance(text, bytes) else str(text)
            ids.update(line.split()[0] for line in text.splitlines() if line.strip())
    return ids


def cluster_ok(testbed: TestBed, namespace: str, name: str, secret: str) -> bool:
    for ip in redisbed.pod_ips(testbed, namespace, name):
        with node_client(ip, secret) as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            if "cluster_state:ok" not in text:
                return False
    return True


@pytest.fixture
def redis_cluster(
    testbed: TestBed, namespace: str, operator: OperatorThread
) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create a RedisCluster on the process node and wait until it is Ready."""

    def create(name: str = "cache", **spec: Any) -> dict[str, Any]:
        redisbed.apply_cluster(testbed, redisbed.cluster_manifest(name, namespace, **spec))
        return redisbed.wait_ready(testbed, namespace, name, timeout=120)

    yield create


@pytest.mark.e2e
def test_the_operator_forms_a_cluster_and_owns_every_object(
    testbed: TestBed,
    namespace: str,
    redis_cluster: Callable[..., dict[str, Any]],
    operator_log: Callable[[], str],
) -> None:
    started = time.monotonic()
    body = redis_cluster("cache")
    formed_in = time.monotonic() - started
    status = body["status"]
    assert (status["shards"], status["readyShards"], status["phase"]) == (3, 3, "Ready")
    assert status["slotsAssigned"] == status["slotsOk"] == 16384
    assert status["clusterState"] == "ok" and status["bootstrappedAt"]
    assert status["authSecretName"] == "cache-auth"
    assert status["endpoint"] == f"cache.{namespace}.svc:6379"
    for kind in ("Ready", "ClusterFormed", "SlotsAssigned"):
        assert redisbed.condition(body, kind)["status"] == "True", kind  # type: ignore[index]
    for kind in ("Degraded", "Resharding", "Progressing"):
        assert redisbed.condition(body, kind)["status"] == "False", kind  # type: ignore[index]
    nodes = nodes_by_pod(body)
    assert sorted(nodes) == [f"cache-s{s}-{o}" for s in range(3) for o in range(2)]
    for pod, node in nodes.items():
        shard = int(pod.split("-s")[1].split("-")[0])
        assert node["shard"] == shard
        if node["role"] == "Replica":
            assert nodes_by_pod(body)[f"cache-s{shard}-0"]["nodeID"] == node["masterNodeID"] or (
                nodes[f"cache-s{shard}-1"]["nodeID"] == node["masterNodeID"]
            )
    # Objects, owned by the cluster (garbage-collected with it).
    uid = body["metadata"]["uid"]
    for kind, name in [
        ("statefulset", "cache-s0"),
        ("statefulset", "cache-s2"),
        ("service", "cache"),
        ("service", "cache-nodes"),
        ("configmap", "cache-config"),
        ("secret", "cache-auth"),
        ("networkpolicy", "cache"),
    ]:
        obj = json.loads(testbed.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        owners = obj["metadata"]["ownerReferences"]
        assert owners[0]["uid"] == uid and owners[0]["controller"], (kind, name)
    budget = json.loads(
        testbed.kubectl("get", "pdb", "cache-s1", "-n", namespace, "-o", "json").stdout
    )
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    conf = json.loads(
        testbed.kubectl("get", "configmap", "cache-config", "-n", namespace, "-o", "json").stdout
    )["data"]["redis.conf"]
    assert "cluster-enabled yes" in conf and "cluster-config-file /data/nodes.conf" in conf
    assert "protected-mode yes" in conf
    headless = json.loads(
        testbed.kubectl("get", "service", "cache-nodes", "-n", namespace, "-o", "json").stdout
    )
    assert headless["spec"]["clusterIP"] == "None"
    roles = {
        pod["metadata"]["name"]: pod["metadata"]["labels"].get("swarmops.dev/redis-role")
        for pod in redisbed.pods(testbed, namespace, "cache")
    }
    wait_for(
        "role labels",
        lambda: all(
            pod["metadata"]["labels"].get("swarmops.dev/redis-role")
            == nodes[pod["metadata"]["name"]]["role"].lower()
            for pod in redisbed.pods(testbed, namespace, "cache")
        ),
        timeout=30,
    )
    assert roles
    # AUTH is on: the generated password works, no password is refused.
    secret = redisbed.password(testbed, namespace, "cache-auth")
    ip = redisbed.pod_ips(testbed, namespace, "cache")[0]
    with node_client(ip, None) as anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert cluster_ok(testbed, namespace, "cache", secret)
    # The password appears nowhere a person reads.
    assert secret not in json.dumps(get_cluster(testbed, namespace, "cache"))
    assert secret not in json.dumps(events(testbed, namespace))
    assert secret not in operator_log()
    seen = reasons(testbed, namespace)
    for reason in ("NodesMet", "SlotsAssigned", "ReplicasAttached", "ClusterFormed"):
        assert reason in seen, reason
    print(f"\nbootstrap: Ready {formed_in:.1f}s after the RedisCluster was created")


def shard_master(body: dict[str, Any], shard: int) -> dict[str, Any]:
    return next(
        node
        for node in nodes_by_pod(body).values()
        if node["shard"] == shard and node["role"] == "Master"
    )


def writer_for(testbed: TestBed, namespace: str, name: str, secret: str) -> BackgroundWriter:
    writer = BackgroundWriter(lambda: redisbed.pod_ips(testbed, namespace, name), secret, rate=100)
    writer.seed(SEED_KEYS)
    writer.start()
    return writer


def time_to_ok(testbed: TestBed, namespace: str, name: str, secret: str, since: float) -> float:
    wait_for(
        "cluster_state:ok on every node",
        lambda: cluster_ok(testbed, namespace, name, secret),
        timeout=60,
        interval=0.1,
    )
    return time.monotonic() - since


@pytest.mark.e2e
def test_a_deleted_master_is_replaced_and_a_rolling_update_loses_nothing(
    testbed: TestBed, namespace: str, redis_cluster: Callable[..., dict[str, Any]]
) -> None:
    """Faults 1 and 8 (no persistence: the returning pod is a new, empty node and must
    become a replica, never own slots or feed one) and 7 (a config change rolls one pod
    at a time, replicas first, failing each master over before it restarts)."""
    body = redis_cluster("cache")
    secret = redisbed.password(testbed, namespace, "cache-auth")
    writer = writer_for(testbed, namespace, "cache", secret)
    try:
        master = shard_master(body, 1)
        replica = next(
            n for n in nodes_by_pod(body).values() if n["shard"] == 1 and n["role"] == "Replica"
        )
        started = time.monotonic()
        testbed.kubectl("delete", "pod", master["podName"], "-n", namespace, "--wait=false")
        recovery = time_to_ok(testbed, namespace, "cache", secret, started)

        def healed() -> dict[str, Any] | None:
            now = get_cluster(testbed, namespace, "cache")
            nodes = nodes_by_pod(now)
            returned = nodes.get(master["podName"], {})
            return (
                now
                if redisbed.is_ready(now)
                and nodes[replica["podName"]]["role"] == "Master"
                and returned.get("role") == "Replica"
                and returned.get("masterNodeID") == replica["nodeID"]
                else None
            )

        after = wait_for("the old master back as a replica", healed, timeout=90)
        assert sum(1 for n in nodes_by_pod(after).values() if n["role"] == "Master") == 3
        assert nodes_by_pod(after)[master["podName"]]["slots"] == 0
        wait_for(
            "the old master's node ID to be forgotten everywhere",
            lambda: master["nodeID"] not in known_node_ids(testbed, namespace, "cache", secret),
            timeout=30,
        )
        writer.refresh()
        print(f"\nmaster deleted: cluster_state ok after {recovery:.1f}s")

        # A config change: every pod restarts, one at a time.
        before_restarts = reasons(testbed, namespace).count("PodRestarted")
        spec = {"config": {"maxmemory-policy": "allkeys-lru", "hz": "20"}}
        redisbed.apply_cluster(testbed, redisbed.cluster_manifest("cache", namespace, **spec))

        def rolled() -> bool:
            now = get_cluster(testbed, namespace, "cache")
            writer.refresh()
            restarted = reasons(testbed, namespace).count("PodRestarted") - before_restarts
            return redisbed.is_ready(now) and restarted >= 6

        wait_for("the rolling update to finish", rolled, timeout=240, interval=1)
        for ip in redisbed.pod_ips(testbed, namespace, "cache"):
            with node_client(ip, secret) as client:
                assert client.config_get("hz")["hz"] == "20"
        failovers = [
            e["message"] for e in events(testbed, namespace) if e["reason"] == "FailoverStarted"
        ]
        assert sum("restarts next" in message for message in failovers) >= 3
    finally:
        report = writer.stop_and_verify()
        writer.close()
    print(f"keys: {report.summary()}")
    assert report.keys_lost == 0, report.summary()


@pytest.mark.e2e
def test_with_persistence_a_full_restart_keeps_ids_and_a_lost_volume_rejoins(
    testbed: TestBed, namespace: str, redis_cluster: Callable[..., dict[str, Any]]
) -> None:
    """Faults 2 (every pod deleted at once: every address changes; the nodes come back
    with their node IDs and data, and are introduced again by ID) and 3 (a master loses
    its volume: its replica takes over, the empty newcomer joins as a replica, the old
    ID is forgotten, nothing is flushed)."""
    body = redis_cluster("store", persistence={"size": "64Mi"})
    secret = redisbed.password(testbed, namespace, "store-auth")
    ids = {pod: node["nodeID"] for pod, node in nodes_by_pod(body).items()}
    writer = writer_for(testbed, namespace, "store", secret)
    try:
        started = time.monotonic()
        testbed.kubectl(
            "delete",
            "pods",
            "-n",
            namespace,
            "-l",
            "swarmops.dev/redis-cluster=store",
            "--wait=false",
        )
        wait_for(
            "new pods at new addresses",
            lambda: (
                all(
                    not pod["metadata"].get("deletionTimestamp") and pod["metadata"]["name"] in ids
                    for pod in redisbed.pods(testbed, namespace, "store")
                )
                and len(redisbed.pod_ips(testbed, namespace, "store")) == 6
            ),
            timeout=60,
        )
        writer.refresh()
        recovery = time_to_ok(testbed, namespace, "store", secret, started)

        def same_ids() -> dict[str, Any] | None:
            now = get_cluster(testbed, namespace, "store")
            current = {pod: node.get("nodeID") for pod, node in nodes_by_pod(now).items()}
            return now if redisbed.is_ready(now) and current == ids else None

        wait_for("the cluster back with the same node IDs", same_ids, timeout=120)
        writer.refresh()
        print(f"\nall pods deleted: cluster_state ok after {recovery:.1f}s, same node IDs")

        # A master loses its volume.
        body = get_cluster(testbed, namespace, "store")
        master = shard_master(body, 2)
        claim = f"data-{master['podName']}"
        testbed.kubectl("delete", "pvc", claim, "-n", namespace, "--wait=false")
        started = time.monotonic()
        testbed.kubectl("delete", "pod", master["podName"], "-n", namespace, "--wait=false")
        recovery = time_to_ok(testbed, namespace, "store", secret, started)

        def rejoined() -> dict[str, Any] | None:
            now = get_cluster(testbed, namespace, "store")
            writer.refresh()
            node = nodes_by_pod(now).get(master["podName"], {})
            fresh = node.get("nodeID") not in (None, master["nodeID"])
            return (
                now if redisbed.is_ready(now) and fresh and node.get("role") == "Replica" else None
            )

        wait_for("the emptied pod back as a replica", rejoined, timeout=120)
        wait_for(
            "the lost node ID to be forgotten",
            lambda: master["nodeID"] not in known_node_ids(testbed, namespace, "store", secret),
            timeout=30,
        )
        print(f"master volume lost: cluster_state ok after {recovery:.1f}s")
    finally:
        report = writer.stop_and_verify()
        writer.close()
    print(f"keys: {report.summary()}")
    assert report.keys_lost == 0, report.summary()


def slots_by_master(body: dict[str, Any]) -> list[int]:
    return sorted(n["slots"] for n in nodes_by_pod(body).values() if n["role"] == "Master")


@pytest.mark.e2e
def test_scale_out_and_in_with_data_through_an_operator_kill_and_a_master_kill(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
) -> None:
    """Faults 6 (3 -> 4 -> 3 shards with data: keys kept, removed nodes forgotten),
    5 (the operator killed mid-reshard resumes from the slots' migrating/importing
    marks) and 4 (a donor master deleted during the reshard: no slot stays open)."""
    first = operator_factory(namespace)
    redisbed.apply_cluster(testbed, redisbed.cluster_manifest("cache", namespace))
    redisbed.wait_ready(testbed, namespace, "cache")
    secret = redisbed.password(testbed, namespace, "cache-auth")
    writer = BackgroundWriter(lambda: redisbed.pod_ips(testbed, namespace, "cache"), secret)
    writer.seed(20000)
    writer.start()
    try:
        redisbed.apply_cluster(testbed, redisbed.cluster_manifest("cache", namespace, shards=4))

        def moving() -> bool:
            status = get_cluster(testbed, namespace, "cache").get("status") or {}
            return 0 < status.get("slotsToMove", 0) < 4096

        wait_for("the reshard to be under way", moving, timeout=120, interval=0.05)
        first.stop()  # killed mid-reshard
        body = get_cluster(testbed, namespace, "cache")
        left = body["status"]["slotsToMove"]
        second = operator_factory(namespace)

        def moving_again() -> bool:
            status = get_cluster(testbed, namespace, "cache").get("status") or {}
            return 0 < status.get("slotsToMove", 0) < left

        wait_for("the new operator to carry on", moving_again, timeout=60, interval=0.05)
        donor = shard_master(get_cluster(testbed, namespace, "cache"), 0)
        testbed.kubectl("delete", "pod", donor["podName"], "-n", namespace, "--wait=false")
        started = time.monotonic()

        def four_even() -> dict[str, Any] | None:
            now = get_cluster(testbed, namespace, "cache")
            writer.refresh()
            return now if redisbed.is_ready(now) and slots_by_master(now) == [4096] * 4 else None

        body = wait_for("4 even shards", four_even, timeout=180, interval=0.5)
        took = time.monotonic() - started
        print(f"\nscale-out, operator and donor killed: Ready {took:.1f}s after the donor")
        assert body["status"]["shards"] == 4 and body["status"]["slotsToMove"] == 0
        assert "SlotsMigrated" in reasons(testbed, namespace)

        removed = {node["nodeID"] for node in nodes_by_pod(body).values() if node["shard"] == 3}
        redisbed.apply_cluster(testbed, redisbed.cluster_manifest("cache", namespace, shards=3))

        def three_even() -> dict[str, Any] | None:
            now = get_cluster(testbed, namespace, "cache")
            writer.refresh()
            gone = not any(n["shard"] == 3 for n in nodes_by_pod(now).values())
            ok = redisbed.is_ready(now) and gone
            return now if ok and slots_by_master(now) == [5461, 5461, 5462] else None

        wait_for("3 even shards again", three_even, timeout=180, interval=0.5)
        wait_for(
            "the removed shard's objects to be gone",
            lambda: (
                not testbed.kubectl(
                    "get",
                    "statefulset,pdb",
                    "cache-s3",
                    "-n",
                    namespace,
                    "--ignore-not-found",
                    "-o",
                    "name",
                ).stdout.strip()
            ),
            timeout=60,
        )
        wait_for(
            "the removed nodes to be forgotten",
            lambda: not (removed & known_node_ids(testbed, namespace, "cache", secret)),
            timeout=30,
        )
        assert "ShardsRemoved" in reasons(testbed, namespace)
        second.stop()
    finally:
        report = writer.stop_and_verify()
        writer.close()
    print(f"keys: {report.summary()}")
    assert report.keys_lost == 0, report.summary()


def my_ids(testbed: TestBed, namespace: str, name: str, secret: str) -> dict[str, str]:
    result = {}
    for pod in redisbed.pods(testbed, namespace, name):
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        with node_client(ip, secret) as client:
            result[pod["metadata"]["name"]] = client.execute_command("CLUSTER", "MYID").decode()
    return result


@pytest.mark.e2e
def test_an_operator_killed_mid_bootstrap_resumes_and_never_forms_again(
    testbed: TestBed,
    namespace: str,
    operator_factory: Callable[..., OperatorThread],
) -> None:
    """Fault 5 at bootstrap: the next operator carries on with the same nodes; once
    formed, a restarted operator finds nothing to do (no second create)."""
    first = operator_factory(namespace)
    redisbed.apply_cluster(testbed, redisbed.cluster_manifest("cache", namespace))

    def bootstrapping() -> bool:
        status = get_cluster(testbed, namespace, "cache").get("status") or {}
        return status.get("phase") == "Bootstrapping"

    wait_for("the bootstrap to start", bootstrapping, timeout=90, interval=0.05)
    first.stop()
    body = get_cluster(testbed, namespace, "cache")
    assert not body["status"].get("bootstrappedAt")
    secret = redisbed.password(testbed, namespace, "cache-auth")
    mid_way = my_ids(testbed, namespace, "cache", secret)
    assert len(mid_way) == 6

    second = operator_factory(namespace)
    body = redisbed.wait_ready(testbed, namespace, "cache")
    assert my_ids(testbed, namespace, "cache", secret) == mid_way
    formed_at = body["status"]["bootstrappedAt"]
    assigned = [e for e in events(testbed, namespace) if e["reason"] == "SlotsAssigned"]
    total = sum(int(e["message"].split()[1]) for e in assigned)
    assert total == 16384, [e["message"] for e in assigned]  # every slot assigned once

    # The operator restarts on the formed cluster: nothing to do.
    second.stop()
    before = {e["metadata"]["uid"] for e in events(testbed, namespace)}
    operator_factory(namespace)
    time.sleep(5)
    body = get_cluster(testbed, namespace, "cache")
    assert body["status"]["bootstrappedAt"] == formed_at
    assert redisbed.is_ready(body)
    later = [e["reason"] for e in events(testbed, namespace) if e["metadata"]["uid"] not in before]
    assert not {"SlotsAssigned", "NodesMet", "ReplicasAttached"} & set(later), later


@pytest.mark.e2e
def test_tls_clients_replication_and_the_bus(
    testbed: TestBed,
    namespace: str,
    redis_cluster: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """TLS on (Debian's redis-server is built with it): the client port, replication and
    the cluster bus all speak TLS; the operator verifies the nodes against the CA."""
    authority = CertificateAuthority(tmp_path / "pki")
    pair = authority.issue("redis", "tls", server_names=(f"*.tls-nodes.{namespace}.svc",))
    ca = authority.pair.cert.read_text()

    def encoded(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": "tls-certs", "namespace": namespace},
        "data": {
            "tls.crt": encoded(pair.cert),
            "tls.key": encoded(pair.key),
            "ca.crt": encoded(authority.pair.cert),
        },
    }
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(secret))
    body = redis_cluster("tls", tls={"enabled": True, "secretName": "tls-certs"})
    password = redisbed.password(testbed, namespace, "tls-auth")
    ip = redisbed.pod_ips(testbed, namespace, "tls")[0]
    with node_client(ip, password) as plain, pytest.raises(redis.ConnectionError):
        plain.ping()
    with redis.Redis(
        host=ip, password=password, ssl=True, ssl_ca_data=ca, ssl_check_hostname=False
    ) as secure:
        assert b"cluster_state:ok" in secure.execute_command("CLUSTER", "INFO")
        assert secure.info("replication")["role"] in ("master", "slave")
    writer = BackgroundWriter(
        lambda: redisbed.pod_ips(testbed, namespace, "tls"), password, rate=100, tls_ca=ca
    )
    writer.seed(SEED_KEYS)
    writer.start()
    try:
        master = shard_master(body, 0)
        testbed.kubectl("delete", "pod", master["podName"], "-n", namespace, "--wait=false")

        def back() -> bool:
            now = get_cluster(testbed, namespace, "tls")
            writer.refresh()
            node = nodes_by_pod(now).get(master["podName"], {})
            return redisbed.is_ready(now) and node.get("role") == "Replica"

        wait_for("the deleted master back as a replica, over TLS", back, timeout=120)
    finally:
        report = writer.stop_and_verify()
        writer.close()
    print(f"\nTLS keys: {report.summary()}")
    assert report.keys_lost == 0, report.summary()
