"""Pods parsed once at the edge into typed models."""

from __future__ import annotations

import pytest

from swarmops.testbed.procnode.model import (
    ConfigMapSource,
    EmptyDirSource,
    ExecAction,
    FieldRef,
    HTTPGetAction,
    KeyRef,
    PersistentVolumeClaimSource,
    PodSpecError,
    ProjectedSource,
    SecretSource,
    ServiceAccountTokenSource,
    TCPSocketAction,
    UnsupportedSource,
    parse_pod,
)

POD = {
    "metadata": {
        "name": "redis-0",
        "namespace": "team",
        "uid": "u-1",
        "resourceVersion": "7",
        "deletionTimestamp": "2026-01-01T00:00:00Z",
        "deletionGracePeriodSeconds": 3,
    },
    "spec": {
        "nodeName": "procnode-0",
        "restartPolicy": "OnFailure",
        "terminationGracePeriodSeconds": 12,
        "readinessGates": [{"conditionType": "example.com/ready"}],
        "initContainers": [
            {"name": "setup", "image": "redis", "command": ["sh", "-c", "true"]},
            {"name": "proxy", "image": "swarmops", "restartPolicy": "Always"},
        ],
        "containers": [
            {
                "name": "redis",
                "image": "redis:7",
                "args": ["--port", "7000"],
                "ports": [{"containerPort": 7000, "name": "client"}, {"containerPort": 17000}],
                "env": [
                    {"name": "A", "value": "1"},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                ],
                "volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "x"}],
                "readinessProbe": {"tcpSocket": {"port": "client"}, "periodSeconds": 2},
                "livenessProbe": {"exec": {"command": ["redis-cli", "ping"]}},
                "startupProbe": {"httpGet": {"port": 8080, "path": "/healthz", "scheme": "https"}},
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-redis-0"}},
            {
                "name": "conf",
                "configMap": {"name": "c", "items": [{"key": "k", "path": "p", "mode": 256}]},
            },
            {"name": "auth", "secret": {"secretName": "s", "defaultMode": 384}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "nfs", "nfs": {"server": "x", "path": "/"}},
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {
                            "configMap": {
                                "name": "kube-root-ca.crt",
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ]
                },
            },
        ],
    },
    "status": {
        "phase": "Running",
        "podIP": "127.77.0.9",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
    },
}


def test_a_full_pod_parses() -> None:
    pod = parse_pod(POD)
    assert pod.key == "team/redis-0" and pod.deleting and not pod.terminal
    assert pod.deletion_grace_period_seconds == 3 and pod.termination_grace_period_seconds == 12
    assert pod.restart_policy == "OnFailure" and pod.readiness_gates == ("example.com/ready",)
    assert [c.restart_policy for c in pod.init_containers] == [None, "Always"]
    redis = pod.containers[0]
    assert redis.args == ("--port", "7000") and redis.command is None
    assert redis.env[1].source == FieldRef("status.podIP")
    assert redis.env[2].source == KeyRef("Secret", "s", "k")
    assert redis.port_number("client") == 7000 and redis.port_number("nope") is None
    assert redis.readiness_probe is not None and redis.readiness_probe.action == TCPSocketAction(
        "client"
    )
    assert redis.liveness_probe is not None and redis.liveness_probe.action == ExecAction(
        ("redis-cli", "ping")
    )
    assert redis.startup_probe is not None
    assert redis.startup_probe.action == HTTPGetAction(8080, "/healthz", None, "HTTPS")
    assert redis.volume_mounts[0].sub_path == "x"
    sources = {v.name: v.source for v in pod.volumes}
    assert sources["data"] == PersistentVolumeClaimSource("data-redis-0")
    assert isinstance(sources["conf"], ConfigMapSource) and sources["conf"].items[0].mode == 256
    assert isinstance(sources["auth"], SecretSource) and sources["auth"].default_mode == 384
    assert sources["scratch"] == EmptyDirSource()
    assert sources["nfs"] == UnsupportedSource(("nfs",))
    projected = sources["kube-api-access"]
    assert isinstance(projected, ProjectedSource)
    assert projected.sources[0] == ServiceAccountTokenSource("token", None, 3607)
    assert pod.pod_ip == "127.77.0.9" and pod.conditions[0]["type"] == "PodScheduled"


def test_defaults() -> None:
    pod = parse_pod(
        {
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "redis"}]},
        }
    )
    assert pod.namespace == "default" and pod.restart_policy == "Always"
    assert pod.termination_grace_period_seconds == 30 and pod.phase == "Pending"
    assert pod.service_account_name == "default"
    assert pod.containers[0].command is None and pod.containers[0].args is None


@pytest.mark.parametrize(
    "bad_spec",
    [
        {"containers": [{"name": "c", "image": 5}]},
        {"containers": "nope"},
        {"restartPolicy": "Sometimes", "containers": []},
        {"containers": [{"name": "c", "image": "x", "readinessProbe": {"periodSeconds": 1}}]},
        {
            "containers": [
                {"name": "c", "image": "x", "env": [{"name": "A", "valueFrom": {"magic": {}}}]}
            ]
        },
    ],
)
def test_malformed_pods_raise_a_clear_error(bad_spec: dict[str, object]) -> None:
    with pytest.raises(PodSpecError):
        parse_pod({"metadata": {"name": "p", "uid": "u"}, "spec": bad_spec})
