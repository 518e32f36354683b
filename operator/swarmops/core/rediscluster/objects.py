"""The Kubernetes objects of a RedisCluster, built as plain manifests (pure).

Every object carries a controller ownerReference to the RedisCluster, so deleting the
cluster deletes them (the garbage collector's job); data volumes follow the
persistence's reclaimPolicy through the StatefulSets' PVC retention policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from swarmops.api.common import API_VERSION
from swarmops.api.rediscluster import ReclaimPolicy, RedisCluster, RedisClusterSpec
from swarmops.core.rediscluster import names
from swarmops.core.rediscluster.names import BUS_PORT, CLIENT_PORT, PASSWORD_KEY

DATA_DIR: Final = "/data"
CONFIG_DIR: Final = "/etc/redis"
TLS_DIR: Final = "/etc/redis/tls"
CONFIG_FILE: Final = f"{CONFIG_DIR}/redis.conf"
#: Failure detection: a node unreachable this long is flagged failed and its replica
#: promoted. Redis' default (15 s) makes a master loss cost 15 s of writes to its slots.
DEFAULT_NODE_TIMEOUT_MS: Final = 5000
TERMINATION_GRACE_SECONDS: Final = 30


@dataclass(frozen=True)
class AuthSource:
    """Where the password lives: the user's Secret key, or the one the operator made."""

    secret_name: str
    key: str = PASSWORD_KEY


def auth_source(cluster: RedisCluster) -> AuthSource | None:
    auth = cluster.spec.auth
    if not auth.enabled:
        return None
    if auth.secret_ref is not None:
        return AuthSource(auth.secret_ref.name, auth.secret_ref.key)
    return AuthSource(names.auth_secret_name(cluster.metadata.name))


def owner_reference(cluster: RedisCluster) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "RedisCluster",
        "name": cluster.metadata.name,
        "uid": cluster.metadata.uid or "",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(cluster: RedisCluster, name: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.metadata.namespace or "",
        "labels": {**names.cluster_labels(cluster.metadata.name), **labels},
        "ownerReferences": [owner_reference(cluster)],
    }


# --- redis.conf and the start-up script ---------------------------------------------------


def redis_conf(spec: RedisClusterSpec, cluster_name: str) -> str:
    """The redis.conf every node starts with. The pod's address, the password and the
    bind address come from the command line (they differ per pod or are secret)."""
    persistence = spec.persistence
    lines = [
        f"# Written by SwarmOps for RedisCluster {cluster_name}; edits are overwritten.",
        f"port {0 if spec.tls.enabled else CLIENT_PORT}",
        "cluster-enabled yes",
        # nodes.conf lives with the data: a node keeps its identity exactly as long as
        # it keeps its data.
        f"cluster-config-file {DATA_DIR}/nodes.conf",
        f"cluster-node-timeout {DEFAULT_NODE_TIMEOUT_MS}",
        # The operator places replicas; Redis moving them on its own would fight it.
        "cluster-allow-replica-migration no",
        f"dir {DATA_DIR}",
        # With a password, protected mode changes nothing; without one it would refuse
        # every peer, so the NetworkPolicy is then the only guard.
        f"protected-mode {'yes' if spec.auth.enabled else 'no'}",
        # A master waits up to 5 s for more replicas before it streams a full sync; it
        # knows how many to expect, so it starts as soon as they are all there.
        f"repl-diskless-sync-max-replicas {spec.replicas_per_shard}",
    ]
    if persistence is None:
        lines += ['save ""', "appendonly no"]
    else:
        lines += [
            "save 3600 1 300 100 60 10000",
            f"appendonly {'yes' if persistence.append_only else 'no'}",
            "appendfsync everysec",
        ]
    if spec.tls.enabled:
        lines += [
            f"tls-port {CLIENT_PORT}",
            f"tls-cert-file {TLS_DIR}/tls.crt",
            f"tls-key-file {TLS_DIR}/tls.key",
            f"tls-ca-cert-file {TLS_DIR}/ca.crt",
            "tls-cluster yes",
            "tls-replication yes",
            # Clients prove who they are with the password; a client certificate is
            # optional.
            "tls-auth-clients optional",
        ]
    for key in sorted(spec.config):
        value = spec.config[key]
        if "\n" in value or "\r" in value:
            raise ValueError(f"config {key}: a value must be one line")
        lines.append(f"{key} {value}")
    return "\n".join(lines) + "\n"


def startup_script(spec: RedisClusterSpec) -> str:
    """The container's shell: prepare the data directory, then exec redis-server.

    Without persistence, a node whose process restarts (its emptyDir survives that) must
    not come back under its old node ID with no data: it would still own its slots, or
    its replicas would copy its empty dataset. So it always starts as a new, empty node
    and the operator attaches it as a replica.

    With persistence, a volume that lost nodes.conf but kept data files would start a
    new, non-empty node that cannot join (CLUSTER REPLICATE wants an empty node). The
    files are moved aside (never deleted) and the node starts empty.
    """
    lines = ["set -eu", f"cd {DATA_DIR}"]
    if spec.persistence is None:
        lines.append("rm -rf nodes.conf dump.rdb appendonlydir temp-*.rdb")
    else:
        lines += [
            "if [ ! -s nodes.conf ] && { [ -e dump.rdb ] || [ -e appendonlydir ]; }; then",
            '  aside="lost-identity-$(date +%s)"',
            '  mkdir "$aside"',
            "  for f in dump.rdb appendonlydir; do",
            '    if [ -e "$f" ]; then mv "$f" "$aside/"; fi',
            "  done",
            '  echo "swarmops: nodes.conf is gone; old data kept in $aside; starting as a new'
            ' node" >&2',
            "fi",
        ]
    command = f'exec redis-server {CONFIG_FILE} --cluster-announce-ip "$POD_IP"'
    if spec.auth.enabled:
        command += ' --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD"'
    lines.append(command)
    return "\n".join(lines) + "\n"


def config_hash(spec: RedisClusterSpec, cluster_name: str) -> str:
    """Changes whenever the pods must restart to pick up new configuration."""
    material = {
        "conf": redis_conf(spec, cluster_name),
        "script": startup_script(spec),
        "tls": spec.tls.secret_name if spec.tls.enabled else None,
    }
    digest = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    return digest[:16]


# --- objects ------------------------------------------------------------------------------


def config_map(cluster: RedisCluster) -> dict[str, Any]:
    name = cluster.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(cluster, names.config_map_name(name)),
        "data": {"redis.conf": redis_conf(cluster.spec, name)},
    }


def auth_secret(cluster: RedisCluster, password: str) -> dict[str, Any]:
    """The generated password's Secret. Created once and never rewritten: changing the
    password under running nodes would lock the operator and the replicas out."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(cluster, names.auth_secret_name(cluster.metadata.name)),
        "stringData": {PASSWORD_KEY: password},
    }


def headless_service(cluster: RedisCluster) -> dict[str, Any]:
    name = cluster.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cluster, names.headless_service_name(name)),
        "spec": {
            "clusterIP": "None",
            # Nodes must find each other before they are Ready (they are not Ready until
            # the cluster forms).
            "publishNotReadyAddresses": True,
            "selector": {names.CLUSTER_LABEL: name},
            "ports": [
                {"name": "redis", "port": CLIENT_PORT, "targetPort": CLIENT_PORT},
                {"name": "cluster-bus", "port": BUS_PORT, "targetPort": BUS_PORT},
            ],
        },
    }


def client_service(cluster: RedisCluster) -> dict[str, Any]:
    name = cluster.metadata.name
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cluster, names.client_service_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {names.CLUSTER_LABEL: name},
            "ports": [{"name": "redis", "port": CLIENT_PORT, "targetPort": CLIENT_PORT}],
        },
    }


def pod_disruption_budget(
    cluster: RedisCluster, shard: int, statefulset_uid: str
) -> dict[str, Any]:
    """A shard's budget, owned by the shard's StatefulSet (itself owned by the cluster):
    when scaling in removes the StatefulSet, the garbage collector removes the budget."""
    name = cluster.metadata.name
    metadata = _metadata(cluster, names.pdb_name(name, shard), **{names.SHARD_LABEL: str(shard)})
    metadata["ownerReferences"] = [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "name": names.statefulset_name(name, shard),
            "uid": statefulset_uid,
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata,
        "spec": {
            # One pod of a shard at a time: a drain never takes a master and its replica
            # together.
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.shard_selector(name, shard)},
        },
    }


def client_pod_labels(cluster: RedisCluster) -> dict[str, str]:
    configured = cluster.spec.network_policy.client_pod_labels
    if configured is not None:
        return dict(configured)
    swarm = cluster.metadata.labels.get(names.SWARM_LABEL)
    if swarm:
        return {names.SWARM_LABEL: swarm}
    return {names.CLIENT_LABEL: cluster.metadata.name}


def network_policy(cluster: RedisCluster) -> dict[str, Any]:
    name = cluster.metadata.name
    own_pods = {"matchLabels": {names.CLUSTER_LABEL: name}}
    redis_port = {"protocol": "TCP", "port": CLIENT_PORT}
    ingress: list[dict[str, Any]] = [
        # Peers: replication on the client port, gossip and failover on the bus.
        {
            "from": [{"podSelector": own_pods}],
            "ports": [redis_port, {"protocol": "TCP", "port": BUS_PORT}],
        },
        {
            "from": [{"podSelector": {"matchLabels": client_pod_labels(cluster)}}],
            "ports": [redis_port],
        },
        # The operator, wherever it runs (it forms, heals and reshards the cluster).
        {
            "from": [
                {
                    "namespaceSelector": {},
                    "podSelector": {"matchLabels": dict(names.OPERATOR_POD_LABELS)},
                }
            ],
            "ports": [redis_port],
        },
    ]
    if cluster.spec.exporter.enabled:
        # Metrics only, no data: whatever scrapes them (Prometheus) may come from anywhere.
        ingress.append({"ports": [{"protocol": "TCP", "port": cluster.spec.exporter.port}]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(cluster, names.network_policy_name(name)),
        "spec": {"podSelector": own_pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def _secret_env(name: str, auth: AuthSource) -> dict[str, Any]:
    return {
        "name": name,
        "valueFrom": {"secretKeyRef": {"name": auth.secret_name, "key": auth.key}},
    }


def _resources(requirements: Any) -> dict[str, Any]:
    wire: dict[str, Any] = requirements.to_wire()
    return {key: value for key, value in wire.items() if value}


def _default_affinity(cluster_name: str, shard: int) -> dict[str, Any]:
    # Preferred, not required: a cluster with fewer nodes than pods per shard (a laptop,
    # a test bed) must still schedule.
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": names.shard_selector(cluster_name, shard)},
                        "topologyKey": "kubernetes.io/hostname",
                    },
                },
                {
                    "weight": 50,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": names.shard_selector(cluster_name, shard)},
                        "topologyKey": "topology.kubernetes.io/zone",
                    },
                },
            ]
        }
    }


def _containers(cluster: RedisCluster, auth: AuthSource | None) -> list[dict[str, Any]]:
    spec = cluster.spec
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    if auth is not None:
        env.append(_secret_env("REDIS_PASSWORD", auth))
        # redis-cli reads it: probes and people using `kubectl exec` need no -a flag.
        env.append(_secret_env("REDISCLI_AUTH", auth))
    mounts = [
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
    ]
    cli = "redis-cli"
    if spec.tls.enabled:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
        cli += f" --tls --cacert {TLS_DIR}/ca.crt"
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    redis: dict[str, Any] = {
        "name": "redis",
        "image": spec.image,
        "command": ["sh", "-c", startup_script(spec)],
        "env": env,
        "ports": [
            {"name": "redis", "containerPort": CLIENT_PORT, "protocol": "TCP"},
            {"name": "cluster-bus", "containerPort": BUS_PORT, "protocol": "TCP"},
        ],
        # Ready when the server answers (not while it loads its data). Cluster health
        # is the operator's to judge and report, not a probe's.
        "readinessProbe": {
            "exec": {"command": ["sh", "-c", f"{cli} ping | grep -q PONG"]},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "tcpSocket": {"port": CLIENT_PORT},
            "initialDelaySeconds": 10,
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": _resources(spec.resources),
        "volumeMounts": mounts,
        "securityContext": security,
    }
    containers = [redis]
    exporter = spec.exporter
    if exporter.enabled:
        scheme = "rediss" if spec.tls.enabled else "redis"
        args = [
            f"--redis.addr={scheme}://localhost:{CLIENT_PORT}",
            f"--web.listen-address=:{exporter.port}",
        ]
        if spec.tls.enabled:
            args.append(f"--tls-ca-cert-file={TLS_DIR}/ca.crt")
        sidecar: dict[str, Any] = {
            "name": "exporter",
            "image": exporter.image,
            "args": args,
            "env": [_secret_env("REDIS_PASSWORD", auth)] if auth is not None else [],
            "ports": [{"name": "metrics", "containerPort": exporter.port, "protocol": "TCP"}],
            "resources": _resources(exporter.resources),
            "securityContext": security,
        }
        if spec.tls.enabled:
            sidecar["volumeMounts"] = [{"name": "tls", "mountPath": TLS_DIR, "readOnly": True}]
        containers.append(sidecar)
    return containers


def statefulset(
    cluster: RedisCluster, shard: int, replicas: int, auth: AuthSource | None
) -> dict[str, Any]:
    """The StatefulSet of one shard: its master and its replicas.

    ``OnDelete``: the operator restarts pods itself, replicas first and a master only
    after failing it over, which a StatefulSet rolling update cannot do.
    """
    spec = cluster.spec
    name = cluster.metadata.name
    selector = names.shard_selector(name, shard)
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": names.config_map_name(name)}},
    ]
    if spec.tls.enabled and spec.tls.secret_name:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls.secret_name}})
    if spec.persistence is None:
        volumes.append({"name": "data", "emptyDir": {}})
    pod_spec: dict[str, Any] = {
        "containers": _containers(cluster, auth),
        "volumes": volumes,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {
            # The official image's redis user.
            "runAsNonRoot": True,
            "runAsUser": 999,
            "runAsGroup": 999,
            "fsGroup": 999,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "affinity": spec.affinity.to_wire()
        if spec.affinity is not None
        else _default_affinity(name, shard),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {names.CLUSTER_LABEL: name}},
            }
        ],
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    body: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(
            cluster, names.statefulset_name(name, shard), **{names.SHARD_LABEL: str(shard)}
        ),
        "spec": {
            "replicas": replicas,
            "serviceName": names.headless_service_name(name),
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {**names.cluster_labels(name), **selector},
                    "annotations": {names.CONFIG_HASH_ANNOTATION: config_hash(spec, name)},
                },
                "spec": pod_spec,
            },
        },
    }
    persistence = spec.persistence
    if persistence is not None:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": persistence.size}},
        }
        if persistence.storage_class_name:
            claim_spec["storageClassName"] = persistence.storage_class_name
        body["spec"]["volumeClaimTemplates"] = [
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "labels": selector},
                "spec": claim_spec,
            }
        ]
        deleted = "Delete" if persistence.reclaim_policy is ReclaimPolicy.DELETE else "Retain"
        body["spec"]["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": deleted,
            "whenScaled": deleted,
        }
    return body


@dataclass(frozen=True)
class DesiredObjects:
    """Everything the cluster should have in Kubernetes, in the order to write it. Each
    shard's budget is built once its StatefulSet exists (it is owned by it)."""

    objects: Sequence[dict[str, Any]]
    statefulsets: Mapping[int, dict[str, Any]]
    budgets: bool

    def budget(self, cluster: RedisCluster, shard: int, statefulset_uid: str) -> dict[str, Any]:
        return pod_disruption_budget(cluster, shard, statefulset_uid)


def desired_objects(
    cluster: RedisCluster, shard_sizes: Mapping[int, int], auth: AuthSource | None
) -> DesiredObjects:
    """The manifests for `shard_sizes` (shard -> pods). The plan decides the sizes: a
    shard being drained stays until its slots are gone, a master's pod is never the one a
    smaller StatefulSet drops."""
    common: list[dict[str, Any]] = [
        config_map(cluster),
        headless_service(cluster),
        client_service(cluster),
    ]
    if cluster.spec.network_policy.enabled:
        common.append(network_policy(cluster))
    return DesiredObjects(
        objects=common,
        statefulsets={
            shard: statefulset(cluster, shard, size, auth)
            for shard, size in sorted(shard_sizes.items())
        },
        budgets=cluster.spec.pod_disruption_budget.enabled,
    )
