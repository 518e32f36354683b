"""Names and labels of everything a RedisCluster owns.

One StatefulSet per shard, ``<cluster>-s<shard>``, so a pod's name says its shard
(``cache-s2-0``, ``cache-s2-1``) and a shard's pods can be spread, budgeted and rolled
together. Which pod of a shard is the master changes with every failover, so the name
does not say it: the ``swarmops.dev/redis-role`` label and the status do.
"""

from __future__ import annotations

import re
from typing import Final

from swarmops.api.common import OWNED_KEY_PREFIX

CLUSTER_LABEL: Final = f"{OWNED_KEY_PREFIX}redis-cluster"
SHARD_LABEL: Final = f"{OWNED_KEY_PREFIX}redis-shard"
ROLE_LABEL: Final = f"{OWNED_KEY_PREFIX}redis-role"
SWARM_LABEL: Final = f"{OWNED_KEY_PREFIX}swarm"
CLIENT_LABEL: Final = f"{OWNED_KEY_PREFIX}redis-client"
CONFIG_HASH_ANNOTATION: Final = f"{OWNED_KEY_PREFIX}config-hash"
#: The StatefulSet controller's label on each pod: the revision the pod was made from.
REVISION_LABEL: Final = "controller-revision-hash"
#: Labels of the operator's own pods (the Helm chart's selector labels).
OPERATOR_POD_LABELS: Final = {"app.kubernetes.io/name": "swarmops"}

CLIENT_PORT: Final = 6379
BUS_PORT: Final = 16379
PASSWORD_KEY: Final = "password"

_POD_NAME = re.compile(r"^(?P<cluster>.+)-s(?P<shard>\d+)-(?P<ordinal>\d+)$")


def statefulset_name(cluster: str, shard: int) -> str:
    return f"{cluster}-s{shard}"


def pod_name(cluster: str, shard: int, ordinal: int) -> str:
    return f"{statefulset_name(cluster, shard)}-{ordinal}"


def headless_service_name(cluster: str) -> str:
    return f"{cluster}-nodes"


def client_service_name(cluster: str) -> str:
    return cluster


def config_map_name(cluster: str) -> str:
    return f"{cluster}-config"


def auth_secret_name(cluster: str) -> str:
    """The Secret the operator generates when the user names none."""
    return f"{cluster}-auth"


def pdb_name(cluster: str, shard: int) -> str:
    return statefulset_name(cluster, shard)


def network_policy_name(cluster: str) -> str:
    return cluster


def parse_pod_name(cluster: str, name: str) -> tuple[int, int] | None:
    """(shard, ordinal) of one of the cluster's pods, or None for any other name."""
    match = _POD_NAME.match(name)
    if match is None or match.group("cluster") != cluster:
        return None
    return int(match.group("shard")), int(match.group("ordinal"))


def cluster_labels(cluster: str) -> dict[str, str]:
    """Labels on every object of the cluster; the first one selects its pods."""
    return {
        CLUSTER_LABEL: cluster,
        "app.kubernetes.io/name": "redis",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/component": "redis-cluster",
        "app.kubernetes.io/managed-by": "swarmops",
    }


def shard_selector(cluster: str, shard: int) -> dict[str, str]:
    return {CLUSTER_LABEL: cluster, SHARD_LABEL: str(shard)}
