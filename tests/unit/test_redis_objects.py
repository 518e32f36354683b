"""The Kubernetes objects of a RedisCluster, built by pure functions."""

from __future__ import annotations

from typing import Any

import pytest

from swarmops.api.rediscluster import RedisCluster
from swarmops.core.rediscluster import names, objects
from swarmops.core.rediscluster.objects import AuthSource, desired_objects, redis_conf
from swarmops.handlers.objects import InvalidObject
from swarmops.handlers.redisclusters import (
    observe_redis_pod,
    observe_statefulset,
    parse_cluster,
)


def make(**spec: Any) -> RedisCluster:
    return RedisCluster.from_body(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "RedisCluster",
            "metadata": {"name": "cache", "namespace": "team", "uid": "uid-1", "labels": {}},
            "spec": spec,
        }
    )


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item for item in container["env"]}


def test_names_say_the_shard_and_parse_back() -> None:
    assert names.statefulset_name("cache", 2) == "cache-s2"
    assert names.pod_name("cache", 2, 1) == "cache-s2-1"
    assert names.parse_pod_name("cache", "cache-s12-3") == (12, 3)
    assert names.parse_pod_name("cache", "other-s1-0") is None
    assert names.parse_pod_name("cache", "cache-s1") is None


def test_a_default_cluster_has_every_object_owned_by_it() -> None:
    cluster = make()
    auth = objects.auth_source(cluster)
    assert auth == AuthSource("cache-auth", "password")
    desired = desired_objects(cluster, {0: 2, 1: 2, 2: 2}, auth)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in desired.objects]
    assert kinds == [
        ("ConfigMap", "cache-config"),
        ("Service", "cache-nodes"),
        ("Service", "cache"),
        ("NetworkPolicy", "cache"),
    ]
    assert sorted(desired.statefulsets) == [0, 1, 2]
    for body in [*desired.objects, *desired.statefulsets.values()]:
        owner = body["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("RedisCluster", "uid-1", True)
        assert body["metadata"]["labels"][names.CLUSTER_LABEL] == "cache"
    budget = desired.budget(cluster, 1, "uid-sts")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": {names.CLUSTER_LABEL: "cache", names.SHARD_LABEL: "1"}},
    }
    assert budget["metadata"]["ownerReferences"][0]["uid"] == "uid-sts"


def test_the_statefulset_of_a_shard() -> None:
    cluster = make(persistence={"size": "2Gi", "reclaimPolicy": "Delete"})
    body = objects.statefulset(cluster, 1, 3, objects.auth_source(cluster))
    spec = body["spec"]
    assert body["metadata"]["name"] == "cache-s1"
    assert spec["replicas"] == 3 and spec["serviceName"] == "cache-nodes"
    assert spec["updateStrategy"] == {"type": "OnDelete"}  # the operator rolls, masters last
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Delete",
        "whenScaled": "Delete",
    }
    claim = spec["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    template = spec["template"]
    assert template["metadata"]["labels"][names.SHARD_LABEL] == "1"
    pod = template["spec"]
    redis = pod["containers"][0]
    env = env_of(redis)
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "cache-auth",
        "key": "password",
    }
    script = redis["command"][2]
    assert '--cluster-announce-ip "$POD_IP"' in script
    assert '--requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"' in script
    assert "rm -rf" not in script and "lost-identity" in script
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"][names.SHARD_LABEL] == "1"
    assert not any(v["name"] == "data" for v in pod["volumes"])  # the claim template serves it
    assert "nodeSelector" not in pod and "tolerations" not in pod


def test_without_persistence_a_node_always_starts_empty_and_new() -> None:
    cluster = make(auth={"enabled": False})
    body = objects.statefulset(cluster, 0, 2, objects.auth_source(cluster))
    script = body["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "rm -rf nodes.conf dump.rdb appendonlydir" in script
    assert "--requirepass" not in script
    assert {"name": "data", "emptyDir": {}} in body["spec"]["template"]["spec"]["volumes"]
    assert "volumeClaimTemplates" not in body["spec"]
    assert "REDIS_PASSWORD" not in env_of(body["spec"]["template"]["spec"]["containers"][0])
    conf = redis_conf(cluster.spec, "cache")
    assert 'save ""' in conf and "appendonly no" in conf


def test_placement_is_passed_through() -> None:
    cluster = make(
        nodeSelector={"disk": "ssd"},
        tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "redis", "effect": "NoSchedule"}
        ],
        affinity={
            "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"a": "b"}},
                    }
                ]
            }
        },
        priorityClassName="data-critical",
    )
    pod = objects.statefulset(cluster, 0, 2, None)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"disk": "ssd"}
    assert pod["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "redis", "effect": "NoSchedule"}
    ]
    assert pod["priorityClassName"] == "data-critical"
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_redis_conf_is_written_by_the_operator_with_the_users_extras_last() -> None:
    cluster = make(config={"maxmemory-policy": "allkeys-lru", "cluster-node-timeout": "9000"})
    conf = redis_conf(cluster.spec, "cache").splitlines()
    for line in (
        "cluster-enabled yes",
        "cluster-config-file /data/nodes.conf",
        "protected-mode yes",
        "cluster-allow-replica-migration no",
        "repl-diskless-sync-max-replicas 1",
    ):
        assert line in conf
    assert conf.index("cluster-node-timeout 9000") > conf.index("cluster-node-timeout 5000")
    assert conf[-2:] == ["cluster-node-timeout 9000", "maxmemory-policy allkeys-lru"]
    no_auth = make(auth={"enabled": False})
    assert "protected-mode no" in redis_conf(no_auth.spec, "cache")


def test_a_config_value_cannot_smuggle_in_a_directive() -> None:
    with pytest.raises(ValueError):
        make(config={"maxmemory-policy": "allkeys-lru\nrequirepass x"})


def test_tls_serves_the_client_port_and_the_bus_with_the_users_certificates() -> None:
    cluster = make(tls={"enabled": True, "secretName": "cache-tls"}, exporter={"enabled": True})
    conf = redis_conf(cluster.spec, "cache")
    assert "port 0" in conf and "tls-port 6379" in conf and "tls-cluster yes" in conf
    pod = objects.statefulset(cluster, 0, 2, objects.auth_source(cluster))["spec"]["template"][
        "spec"
    ]
    assert {"name": "tls", "secret": {"secretName": "cache-tls"}} in pod["volumes"]
    redis, exporter = pod["containers"]
    assert "--tls" in redis["readinessProbe"]["exec"]["command"][2]
    assert exporter["args"][0] == "--redis.addr=rediss://localhost:6379"
    assert env_of(exporter)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "cache-auth"


def test_a_config_change_changes_the_pod_template() -> None:
    before = objects.statefulset(make(), 0, 2, None)
    after = objects.statefulset(make(config={"hz": "20"}), 0, 2, None)
    key = names.CONFIG_HASH_ANNOTATION
    assert (
        before["spec"]["template"]["metadata"]["annotations"][key]
        != after["spec"]["template"]["metadata"]["annotations"][key]
    )


def test_the_network_policy_admits_peers_clients_and_the_operator_only() -> None:
    policy = objects.network_policy(make())
    ingress = policy["spec"]["ingress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {names.CLUSTER_LABEL: "cache"}}
    assert ingress[0]["from"] == [{"podSelector": {"matchLabels": {names.CLUSTER_LABEL: "cache"}}}]
    assert {p["port"] for p in ingress[0]["ports"]} == {6379, 16379}
    assert ingress[1]["from"][0]["podSelector"]["matchLabels"] == {names.CLIENT_LABEL: "cache"}
    assert ingress[2]["from"][0]["podSelector"]["matchLabels"] == names.OPERATOR_POD_LABELS
    assert len(ingress) == 3
    swarm = RedisCluster.from_body(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "RedisCluster",
            "metadata": {"name": "s-redis", "labels": {names.SWARM_LABEL: "s"}},
            "spec": {},
        }
    )
    clients = objects.network_policy(swarm)["spec"]["ingress"][1]["from"][0]["podSelector"]
    assert clients == {"matchLabels": {names.SWARM_LABEL: "s"}}
    custom = make(networkPolicy={"clientPodLabels": {"app": "api"}})
    clients = objects.network_policy(custom)["spec"]["ingress"][1]["from"][0]["podSelector"]
    assert clients == {"matchLabels": {"app": "api"}}
    assert "NetworkPolicy" not in [
        o["kind"]
        for o in desired_objects(make(networkPolicy={"enabled": False}), {0: 1}, None).objects
    ]


def test_the_generated_secret_and_a_users_secret() -> None:
    secret = objects.auth_secret(make(), "s3cret")
    assert secret["metadata"]["name"] == "cache-auth" and secret["stringData"] == {
        "password": "s3cret"
    }
    users = make(auth={"secretRef": {"name": "mine", "key": "pw"}})
    assert objects.auth_source(users) == AuthSource("mine", "pw")
    assert objects.auth_source(make(auth={"enabled": False})) is None


# --- parsing at the edge ----------------------------------------------------------------------


def test_a_pod_body_becomes_a_redis_pod() -> None:
    body = {
        "metadata": {
            "name": "cache-s1-0",
            "uid": "u1",
            "labels": {"controller-revision-hash": "cache-s1-abc", names.ROLE_LABEL: "master"},
        },
        "status": {
            "podIP": "10.1.2.3",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "redis", "state": {"running": {}}}],
        },
    }
    pod = observe_redis_pod("cache", body)
    assert pod is not None
    assert (pod.shard, pod.ordinal, pod.ip, pod.running, pod.ready, pod.terminating) == (
        1,
        0,
        "10.1.2.3",
        True,
        True,
        False,
    )
    assert (pod.revision, pod.role_label) == ("cache-s1-abc", "master")
    assert observe_redis_pod("cache", {"metadata": {"name": "other-0"}}) is None


def test_a_statefulset_body_becomes_a_shard_set() -> None:
    body = {
        "metadata": {"labels": {names.SHARD_LABEL: "2"}},
        "spec": {"replicas": 3},
        "status": {"updateRevision": "cache-s2-xyz"},
    }
    shard = observe_statefulset(body)
    assert shard is not None and (shard.shard, shard.replicas, shard.update_revision) == (
        2,
        3,
        "cache-s2-xyz",
    )
    assert observe_statefulset({"metadata": {"labels": {}}}) is None


def test_an_invalid_body_is_reported_not_reconciled() -> None:
    parsed = parse_cluster(
        {
            "apiVersion": "swarmops.dev/v1alpha1",
            "kind": "RedisCluster",
            "metadata": {"name": "bad", "namespace": "team", "uid": "u", "generation": 3},
            "spec": {"shards": 1},
        }
    )
    assert isinstance(parsed, InvalidObject) and parsed.generation == 3
    assert "shards" in parsed.message


def test_events_summarise_a_round_of_actions() -> None:
    from swarmops.core.rediscluster.plan import Failover, Meet, MoveSlots  # noqa: PLC0415
    from swarmops.handlers.redisclusters import _action_events  # noqa: PLC0415
    from swarmops.redisnodes.execute import Report  # noqa: PLC0415

    report = Report(
        done=[
            Meet("p0", "10.0.0.1", 6379, None),
            Meet("p1", "10.0.0.1", 6379, "a" * 40),
            Failover("p2", "b" * 40, force=True, reason="its master's pod is gone"),
            MoveSlots("p0", "a" * 40, "p3", "c" * 40, (1, 2, 3)),
        ],
        keys_moved=9,
    )
    events = {reason: (message, kind) for reason, message, kind in _action_events(report)}
    assert events["NodesMet"][0] == (
        "Introduced 1 new nodes; told peers 1 new addresses of known nodes"
    )
    assert events["FailoverStarted"] == (
        "Forced failover to p2 (master bbbbbbbb): its master's pod is gone",
        "Warning",
    )
    assert events["SlotsMigrated"][0] == "Moved 3 slots (9 keys): p0 -> p3"
