"""The Redis plan and its execution against real redis-server processes, without Kubernetes.

Each test lays out a RedisCluster's pods as local processes on loopback addresses
(`swarmops.testbed.localredis`), runs the operator's Redis loop (observe, plan,
execute) in-process, injects a fault, and checks the cluster heals without losing a
key: seeded keys (replicated before the fault) and a continuous writer's acknowledged
keys. Kubernetes is out of the picture here; the end-to-end suite runs the same faults
through the operator on the test bed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from swarmops.core.rediscluster.plan import CloseSlot, ClusterPlan, MoveSlots
from swarmops.core.rediscluster.slots import SLOT_COUNT
from swarmops.redisnodes.execute import Executor
from swarmops.testbed.localredis import LocalCluster, Loop, local_cluster_body
from swarmops.testbed.redisload import KeyWriter, LoadReport

SEED_KEYS = 2000


def ready(plan: ClusterPlan) -> bool:
    return plan.step == "ready"


@pytest.fixture
def make_local(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    made: list[LocalCluster] = []

    def make(**spec: object) -> LocalCluster:
        local = LocalCluster(tmp_path / f"c{len(made)}", local_cluster_body(**spec))  # type: ignore[arg-type]
        made.append(local)
        local.start_all()
        return local

    yield make
    for local in made:
        local.close()


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout=240))  # type: ignore[arg-type]


def writer_for(local: LocalCluster) -> KeyWriter:
    return KeyWriter(
        lambda: [pod.ip for pod in local.pods.values() if pod.ip], local.password, rate=300
    )


async def formed(local: LocalCluster) -> tuple[Loop, KeyWriter]:
    loop = Loop(local)
    await loop.until(ready, within=60)
    writer = writer_for(local)
    await writer.seed(SEED_KEYS)
    writer.start()
    await asyncio.sleep(0.5)
    return loop, writer


async def finish(loop: Loop, writer: KeyWriter) -> LoadReport:
    await writer.stop()
    report = await writer.verify()
    await writer.close()
    await loop.close()
    return report


def node_ids(plan: ClusterPlan) -> dict[str, str | None]:
    return {node.pod_name: node.node_id for node in plan.status.nodes}


def cluster_nodes(local: LocalCluster) -> str:
    pod = next(p for p in local.pods.values() if p.ip)
    client = redis.Redis(host=pod.ip, password=local.password, socket_timeout=5)
    try:
        return str(client.execute_command("CLUSTER", "NODES").decode())
    finally:
        client.close()


def test_bootstrap_forms_an_even_cluster_with_replicas(
    make_local: Callable[..., LocalCluster],
) -> None:
    local = make_local(shards=3, replicas=1, persistence=False)

    async def scenario() -> None:
        loop = Loop(local)
        plan = await loop.until(ready, within=60)
        status = plan.status
        assert status.slots_assigned == status.slots_ok == SLOT_COUNT
        assert (status.shards, status.ready_shards, status.cluster_state) == (3, 3, "ok")
        assert status.bootstrapped_at is not None
        masters = sorted(n.slots for n in status.nodes if n.role == "Master")
        assert masters == [5461, 5461, 5462]
        for node in status.nodes:
            if node.role == "Replica":
                master = next(n for n in status.nodes if n.node_id == node.master_node_id)
                assert master.shard == node.shard
        # A restarted operator (status kept) plans nothing on a formed cluster.
        again = await loop.step()
        assert again.actions == () and again.step == "ready"
        await loop.close()

    run(scenario())


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "in-memory"])
def test_deleted_master_is_replaced_by_its_replica_and_returns_as_a_replica(
    make_local: Callable[..., LocalCluster], persistence: bool
) -> None:
    local = make_local(persistence=persistence)

    async def scenario() -> None:
        loop, writer = await formed(local)
        assert loop.last is not None
        before = node_ids(loop.last)
        master = next(n for n in loop.last.status.nodes if n.role == "Master" and n.shard == 1)
        replica = next(n for n in loop.last.status.nodes if n.role == "Replica" and n.shard == 1)
        local.stop(master.pod_name)  # the pod is deleted ...
        plan = await loop.step()
        assert plan.step == "failover"
        await asyncio.sleep(0.5)
        await loop.step()
        local.start(1, 0)  # ... and the StatefulSet brings it back at a new address
        plan = await loop.until(ready, within=60)
        by_pod = {n.pod_name: n for n in plan.status.nodes}
        assert by_pod[replica.pod_name].role == "Master"
        assert by_pod[master.pod_name].role == "Replica"
        assert by_pod[master.pod_name].master_node_id == replica.node_id
        assert sum(1 for n in plan.status.nodes if n.role == "Master") == 3
        if persistence:
            assert by_pod[master.pod_name].node_id == before[master.pod_name]
        else:
            assert by_pod[master.pod_name].node_id != before[master.pod_name]
            assert before[master.pod_name] not in cluster_nodes(local)  # forgotten
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


def test_every_pod_restarting_at_new_addresses_reforms_with_the_same_ids(
    make_local: Callable[..., LocalCluster],
) -> None:
    local = make_local(persistence=True)

    async def scenario() -> None:
        loop, writer = await formed(local)
        assert loop.last is not None
        before = node_ids(loop.last)
        await writer.stop()
        for name in list(local.pods):
            local.stop(name)
        for pod in list(local.pods.values()):
            local.start(pod.shard, pod.ordinal)
        writer.start()
        started = time.monotonic()
        plan = await loop.until(ready, within=90)
        assert node_ids(plan) == before
        assert any(step == "membership" for step in loop.steps)
        print(f"re-formed in {time.monotonic() - started:.1f}s")
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


def test_a_node_that_lost_nodes_conf_rejoins_as_a_replica_without_a_flush(
    make_local: Callable[..., LocalCluster],
) -> None:
    local = make_local(persistence=True)

    async def scenario() -> None:
        loop, writer = await formed(local)
        assert loop.last is not None
        victim = next(n for n in loop.last.status.nodes if n.role == "Replica" and n.shard == 2)
        local.stop(victim.pod_name)
        (local.data_dir(victim.pod_name) / "nodes.conf").unlink()
        # The container's start-up script sets the old data aside (it never deletes it).
        data = local.data_dir(victim.pod_name)
        aside = data / "lost-identity-test"
        aside.mkdir()
        for name in ("dump.rdb", "appendonlydir"):
            if (data / name).exists():
                (data / name).rename(aside / name)
        pod = local.pods[victim.pod_name]
        local.start(pod.shard, pod.ordinal)
        plan = await loop.until(ready, within=60)
        node = next(n for n in plan.status.nodes if n.pod_name == victim.pod_name)
        assert node.node_id != victim.node_id and node.role == "Replica"
        assert victim.node_id not in cluster_nodes(local)
        assert any(aside.iterdir())
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


def test_scale_out_and_in_moves_slots_with_their_keys(
    make_local: Callable[..., LocalCluster],
) -> None:
    local = make_local(persistence=False)

    async def scenario() -> None:
        loop, writer = await formed(local)
        local.cluster = local.cluster.model_copy(
            update={"spec": local.cluster.spec.model_copy(update={"shards": 4})}
        )
        plan = await loop.until(ready, within=120)
        masters = sorted(n.slots for n in plan.status.nodes if n.role == "Master")
        assert masters == [4096] * 4
        moved = sum(r.keys_moved for r in loop.reports)
        assert moved > 0
        local.cluster = local.cluster.model_copy(
            update={"spec": local.cluster.spec.model_copy(update={"shards": 3})}
        )
        plan = await loop.until(ready, within=120)
        assert sorted(n.slots for n in plan.status.nodes if n.role == "Master") == [
            5461,
            5461,
            5462,
        ]
        assert {n.shard for n in plan.status.nodes} == {0, 1, 2}
        assert "lc-s3" not in cluster_nodes(local)
        text = cluster_nodes(local)
        assert len(text.strip().splitlines()) == 6, text  # the removed nodes are forgotten
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


async def _interrupted_move(loop: Loop) -> None:
    """Run reconciles until a migration is under way, then cut one short halfway."""
    for _ in range(200):
        plan = await loop.step()
        if any(isinstance(a, MoveSlots) for a in plan.actions):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no migration started")


def test_an_operator_killed_mid_migration_finishes_the_open_slots(
    make_local: Callable[..., LocalCluster], monkeypatch: pytest.MonkeyPatch
) -> None:
    local = make_local(persistence=False)

    async def dies(*_: object, **__: object) -> None:
        # The operator dies after IMPORTING/MIGRATING and the keys moved, before
        # SETSLOT NODE: the worst moment (keys on the destination, slots still open).
        raise asyncio.CancelledError

    async def scenario() -> None:
        loop, writer = await formed(local)
        local.cluster = local.cluster.model_copy(
            update={"spec": local.cluster.spec.model_copy(update={"shards": 4})}
        )
        with monkeypatch.context() as patched:
            patched.setattr(Executor, "_finish", dies)
            with pytest.raises(asyncio.CancelledError):
                await loop.until(lambda plan: False, within=60)
        plan = await loop.step()
        opened = [a for a in plan.actions if isinstance(a, CloseSlot)]
        assert opened, plan.step
        assert all(a.target_id for a in opened)  # finished forward, not abandoned
        plan = await loop.until(ready, within=120)
        assert sorted(n.slots for n in plan.status.nodes if n.role == "Master") == [4096] * 4
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


@pytest.mark.parametrize("which", ["source", "target"])
def test_a_master_killed_during_a_reshard_leaves_no_slot_open(
    make_local: Callable[..., LocalCluster], which: str
) -> None:
    local = make_local(persistence=True)

    async def scenario() -> None:
        loop, writer = await formed(local)
        local.cluster = local.cluster.model_copy(
            update={"spec": local.cluster.spec.model_copy(update={"shards": 4})}
        )
        await _interrupted_move(loop)
        assert loop.last is not None
        move = next(a for a in loop.last.actions if isinstance(a, MoveSlots))
        victim = move.source_pod if which == "source" else move.target_pod
        # Stop the executor mid-batch by killing the node under it.
        local.stop(victim, kill=True)
        await loop.step()
        await asyncio.sleep(0.3)
        await loop.step()
        pod = local.pods[victim]
        local.start(pod.shard, pod.ordinal)
        plan = await loop.until(ready, within=120)
        assert plan.status.slots_assigned == SLOT_COUNT
        assert sorted(n.slots for n in plan.status.nodes if n.role == "Master") == [4096] * 4
        report = await finish(loop, writer)
        assert not report.lost_seeded, report.summary()
        print(report.summary())

    run(scenario())


def test_rolling_update_restarts_replicas_first_and_fails_masters_over(
    make_local: Callable[..., LocalCluster],
) -> None:
    local = make_local(persistence=False)

    async def scenario() -> None:
        loop, writer = await formed(local)
        local.revisions = {shard: "rev-2" for shard in range(3)}
        deleted: list[str] = []
        failovers = 0
        deadline = time.monotonic() + 120
        while (
            any(p.revision != "rev-2" for p in local.pods.values())
            or loop.last is None
            or not ready(loop.last)
        ):
            assert time.monotonic() < deadline, "the rollout did not finish"
            plan = await loop.step()
            for action in plan.actions:
                if type(action).__name__ == "DeletePod":
                    pod = local.pods[action.pod]  # type: ignore[union-attr]
                    role = next(n.role for n in plan.status.nodes if n.pod_name == pod.name)
                    assert role == "Replica", f"{pod.name} restarted while a master"
                    deleted.append(pod.name)
                    local.restart(pod.name)
                elif type(action).__name__ == "Failover":
                    failovers += 1
            await asyncio.sleep(0.2)
        assert sorted(deleted) == sorted(local.pods)
        assert failovers >= 3
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    run(scenario())


def test_tls_on_the_client_port_the_bus_and_migrations(tmp_path: Path) -> None:
    from swarmops.testbed.pki import CertificateAuthority  # noqa: PLC0415 (dev dependency)

    authority = CertificateAuthority(tmp_path / "pki")
    pair = authority.issue("redis", "lc", server_names=("lc",))
    tls = tmp_path / "tls"
    tls.mkdir()
    (tls / "tls.crt").write_bytes(pair.cert.read_bytes())
    (tls / "tls.key").write_bytes(pair.key.read_bytes())
    (tls / "ca.crt").write_bytes(authority.pair.cert.read_bytes())
    body = local_cluster_body(persistence=False, tls={"enabled": True, "secretName": "lc-tls"})
    local = LocalCluster(tmp_path / "nodes", body, tls_dir=tls)
    local.start_all()
    ca = (tls / "ca.crt").read_text()

    async def scenario() -> None:
        loop = Loop(local)
        await loop.until(ready, within=60)
        writer = KeyWriter(
            lambda: [pod.ip for pod in local.pods.values() if pod.ip],
            local.password,
            rate=300,
            tls_ca=ca,
        )
        await writer.seed(SEED_KEYS)
        writer.start()
        local.cluster = local.cluster.model_copy(
            update={"spec": local.cluster.spec.model_copy(update={"shards": 4})}
        )
        plan = await loop.until(ready, within=120)
        assert sorted(n.slots for n in plan.status.nodes if n.role == "Master") == [4096] * 4
        assert sum(r.keys_moved for r in loop.reports) > 0  # MIGRATE went over TLS
        report = await finish(loop, writer)
        assert report.keys_lost == 0, report.summary()

    try:
        run(scenario())
        pod = next(iter(local.pods.values()))
        plain = redis.Redis(host=pod.ip, password=local.password, socket_timeout=2)
        with pytest.raises(redis.ConnectionError):
            plain.ping()  # no plaintext port
    finally:
        local.close()
