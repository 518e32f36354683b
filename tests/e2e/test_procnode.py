"""The process-backed node on the real control plane: pods run as local processes
on loopback pod IPs and their status follows the processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import yaml
from kubernetes import client
from redis.backoff import NoBackoff
from redis.retry import Retry

from swarmops.testbed.procnode import ProcessNode
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT

pytestmark = pytest.mark.e2e

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Poll `probe` until it returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


@pytest.fixture
def core(testbed: Any) -> Iterator[client.CoreV1Api]:
    with testbed.api_client() as api_client:
        yield client.CoreV1Api(api_client)


def pod_manifest(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            **POD_PLACEMENT,
            "terminationGracePeriodSeconds": 5,
            "containers": containers,
            **spec,
        },
    }


def redis_container(**fields: Any) -> dict[str, Any]:
    return {"name": "redis", "image": "redis:7", "ports": [{"containerPort": 6379}], **fields}


def get_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return core.read_namespaced_pod(name, namespace)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def is_ready(pod: client.V1Pod | None) -> bool:
    return pod is not None and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
    )


def wait_ready(
    core: client.CoreV1Api, namespace: str, name: str, timeout: float = 30.0
) -> client.V1Pod:
    return eventually(
        lambda: pod if is_ready(pod := get_pod(core, namespace, name)) else None,
        timeout,
        f"pod {namespace}/{name} to be Ready",
    )


def container_pid(pod: client.V1Pod, container: str = "redis") -> int:
    status = next(s for s in pod.status.container_statuses if s.name == container)
    scheme, _, pid = status.container_id.partition("://")
    assert scheme == "procnode"
    return int(pid)


def listening(ip: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((ip, port), timeout=0.5):
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_redis_pod_answers_ping_at_its_pod_ip(
    testbed: Any, namespace: str, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod(namespace, pod_manifest("redis", [redis_container()]))
    pod = wait_ready(core, namespace, "redis")

    assert pod.spec.node_name == testbed.process_node
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip.startswith("127.") and pod.status.pod_ip != pod.status.host_ip
    (container,) = pod.status.container_statuses
    assert container.ready and container.started and container.restart_count == 0
    assert container.state.running is not None
    assert redis.Redis(host=pod.status.pod_ip, port=6379, socket_timeout=5).ping()


def test_deleting_the_pod_stops_the_process(namespace: str, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(namespace, pod_manifest("doomed", [redis_container()]))
    pod = wait_ready(core, namespace, "doomed")
    pid, ip = container_pid(pod), pod.status.pod_ip
    assert pid_alive(pid) and listening(ip, 6379)

    core.delete_namespaced_pod("doomed", namespace)

    eventually(lambda: get_pod(core, namespace, "doomed") is None, what="the pod to be deleted")
    assert not pid_alive(pid)
    assert not listening(ip, 6379)


def test_killed_process_is_reported_and_restarted(namespace: str, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(namespace, pod_manifest("phoenix", [redis_container()]))
    pod = wait_ready(core, namespace, "phoenix")
    first_pid = container_pid(pod)

    os.kill(first_pid, signal.SIGKILL)

    def restarted() -> client.V1Pod | None:
        current = get_pod(core, namespace, "phoenix")
        if current is None or not current.status.container_statuses:
            return None
        status = current.status.container_statuses[0]
        return current if status.restart_count >= 1 and is_ready(current) else None

    pod = eventually(restarted, what="the container to be restarted and Ready")
    status = pod.status.container_statuses[0]
    assert status.last_state.terminated.exit_code == 128 + signal.SIGKILL
    assert status.last_state.terminated.reason == "Error"
    assert container_pid(pod) != first_pid
    assert redis.Redis(host=pod.status.pod_ip, port=6379, socket_timeout=5).ping()


def test_unknown_image_fails_visibly(namespace: str, core: client.CoreV1Api) -> None:
    core.create_namespaced_pod(
        namespace,
        pod_manifest(
            "busy", [{"name": "box", "image": "busybox:1.36", "command": ["sleep", "1d"]}]
        ),
    )

    def waiting_reason() -> client.V1ContainerStateWaiting | None:
        pod = get_pod(core, namespace, "busy")
        statuses = (pod.status.container_statuses or []) if pod else []
        return statuses[0].state.waiting if statuses and statuses[0].state.waiting else None

    waiting = eventually(
        lambda: w if (w := waiting_reason()) and w.reason == "ImageNotRunnable" else None,
        what="the ImageNotRunnable waiting reason",
    )
    assert "busybox:1.36" in waiting.message
    pod = get_pod(core, namespace, "busy")
    assert pod is not None and pod.status.phase == "Pending" and not is_ready(pod)
    eventually(
        lambda: [
            e
            for e in core.list_namespaced_event(namespace).items
            if e.reason == "ImageNotRunnable" and e.involved_object.name == "busy"
        ],
        what="an ImageNotRunnable event",
    )


def test_config_map_redis_conf_and_secret_env_are_honoured(
    namespace: str, core: client.CoreV1Api
) -> None:
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="redis-conf"),
            data={"redis.conf": "port 7000\nmaxmemory 12mb\ndir /data\nappendonly yes\n"},
        ),
    )
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="auth"), string_data={"password": "pa$$w0rd"}
        ),
    )
    container = {
        "name": "redis",
        "image": "docker.io/library/redis:7.2",
        "args": ["/etc/redis/redis.conf", "--requirepass", "$(REDIS_PASSWORD)"],
        "env": [
            {
                "name": "REDIS_PASSWORD",
                "valueFrom": {"secretKeyRef": {"name": "auth", "key": "password"}},
            }
        ],
        "ports": [{"containerPort": 7000}],
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/redis"},
            {"name": "data", "mountPath": "/data"},
        ],
        "readinessProbe": {
            "exec": {
                "command": ["sh", "-c", 'redis-cli -p 7000 -a "$REDIS_PASSWORD" ping | grep PONG']
            },
            "periodSeconds": 1,
        },
    }
    volumes = [
        {"name": "conf", "configMap": {"name": "redis-conf"}},
        {"name": "data", "emptyDir": {}},
    ]
    core.create_namespaced_pod(namespace, pod_manifest("configured", [container], volumes=volumes))
    pod = wait_ready(core, namespace, "configured")

    server = redis.Redis(host=pod.status.pod_ip, port=7000, password="pa$$w0rd", socket_timeout=5)
    assert server.config_get("maxmemory") == {"maxmemory": str(12 * 1024 * 1024)}
    data_dir = server.config_get("dir")["dir"]
    assert data_dir.endswith(f"/pods/{namespace}/configured/volumes/data")
    assert server.config_get("appendonly") == {"appendonly": "yes"}
    anonymous = redis.Redis(
        host=pod.status.pod_ip, port=7000, socket_timeout=5, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_failing_probe_keeps_the_pod_unready(namespace: str, core: client.CoreV1Api) -> None:
    container = redis_container(
        readinessProbe={"tcpSocket": {"port": 6390}, "periodSeconds": 1},
    )
    core.create_namespaced_pod(namespace, pod_manifest("unready", [container]))
    eventually(
        lambda: (
            (pod := get_pod(core, namespace, "unready"))
            and pod.status.container_statuses
            and pod.status.container_statuses[0].state.running
        ),
        what="the container to run",
    )
    time.sleep(1.5)  # several probe periods; the pod must still not be Ready
    pod = get_pod(core, namespace, "unready")
    assert pod is not None and not is_ready(pod)
    assert pod.status.phase == "Running"


def test_liveness_failure_restarts_the_container(namespace: str, core: client.CoreV1Api) -> None:
    container = redis_container(
        livenessProbe={
            "exec": {"command": ["redis-cli", "-p", "6390", "ping"]},
            "periodSeconds": 1,
            "failureThreshold": 1,
        },
    )
    core.create_namespaced_pod(namespace, pod_manifest("unlively", [container]))
    pod = eventually(
        lambda: (
            (p := get_pod(core, namespace, "unlively"))
            and p.status.container_statuses
            and p.status.container_statuses[0].restart_count >= 1
            and p
        ),
        what="a liveness restart",
    )
    terminated = pod.status.container_statuses[0].last_state.terminated
    assert terminated is not None and terminated.exit_code in (0, 128 + signal.SIGTERM)


def test_restart_policy_never_ends_in_failed_phase(namespace: str, core: client.CoreV1Api) -> None:
    container = {"name": "redis", "image": "redis", "args": ["--no-such-option", "x"]}
    core.create_namespaced_pod(
        namespace, pod_manifest("broken", [container], restartPolicy="Never")
    )
    pod = eventually(
        lambda: (p := get_pod(core, namespace, "broken")) and p.status.phase == "Failed" and p,
        what="phase Failed",
    )
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 1 and terminated.reason == "Error"
    assert pod.status.container_statuses[0].restart_count == 0


def test_swarmops_image_runs_the_venv_python_with_downward_env(
    namespace: str, core: client.CoreV1Api
) -> None:
    container = {
        "name": "web",
        "image": "ghcr.io/swarmops/swarmops:dev",
        "command": [
            "python",
            "-m",
            "http.server",
            "--bind",
            "$(MY_IP)",
            "8080",
            "--directory",
            "/site",
        ],
        "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
        "volumeMounts": [{"name": "site", "mountPath": "/site"}],
        "readinessProbe": {"httpGet": {"path": "/name", "port": 8080}, "periodSeconds": 1},
    }
    volumes = [
        {
            "name": "site",
            "downwardAPI": {
                "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
            },
        }
    ]
    core.create_namespaced_pod(namespace, pod_manifest("web", [container], volumes=volumes))
    pod = wait_ready(core, namespace, "web")

    with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/name", timeout=5) as response:
        assert response.read().decode() == "web"


WHOAMI = """
import os, sys
from kubernetes import client, config
config.load_config()
with client.ApiClient() as api:
    authentication = client.AuthenticationV1Api(api)
    review = authentication.create_self_subject_review(client.V1SelfSubjectReview())
name = review.status.user_info.username
print(name)
sys.exit(0 if name == f"system:serviceaccount:{os.environ['NS']}:default" else 1)
"""


def test_pods_reach_the_api_as_their_service_account(
    namespace: str, core: client.CoreV1Api
) -> None:
    container = {
        "name": "whoami",
        "image": "swarmops",
        "command": ["python", "-c", WHOAMI],
        "env": [{"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
    }
    core.create_namespaced_pod(
        namespace, pod_manifest("whoami", [container], restartPolicy="Never")
    )
    pod = eventually(
        lambda: (
            (p := get_pod(core, namespace, "whoami"))
            and p.status.phase in ("Succeeded", "Failed")
            and p
        ),
        timeout=60,
        what="the pod to finish",
    )
    assert pod.status.phase == "Succeeded", pod.status.container_statuses


def test_pods_get_distinct_addresses(namespace: str, core: client.CoreV1Api) -> None:
    for index in range(3):
        core.create_namespaced_pod(namespace, pod_manifest(f"r{index}", [redis_container()]))
    pods = [wait_ready(core, namespace, f"r{index}") for index in range(3)]
    addresses = {p.status.pod_ip for p in pods}
    assert len(addresses) == 3
    for address in addresses:
        assert redis.Redis(host=address, port=6379, socket_timeout=5).ping()


def test_statefulset_data_survives_pod_deletion(
    testbed: Any, namespace: str, core: client.CoreV1Api
) -> None:
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "kv"},
        "spec": {
            "serviceName": "kv",
            "replicas": 1,
            "selector": {"matchLabels": {"app": "kv"}},
            "template": {
                "metadata": {"labels": {"app": "kv"}},
                "spec": {
                    **POD_PLACEMENT,
                    "terminationGracePeriodSeconds": 10,
                    "containers": [
                        redis_container(
                            # Through a shell, so the PATH shim for redis-server is used.
                            command=["sh", "-c"],
                            args=["exec redis-server --appendonly yes --dir /data"],
                            volumeMounts=[{"name": "data", "mountPath": "/data"}],
                        )
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    with testbed.api_client() as api_client:
        client.AppsV1Api(api_client).create_namespaced_stateful_set(namespace, statefulset)
    first = wait_ready(core, namespace, "kv-0", timeout=60)
    claim = core.read_namespaced_persistent_volume_claim("data-kv-0", namespace)
    assert claim.status.phase == "Bound"
    server = redis.Redis(host=first.status.pod_ip, port=6379, socket_timeout=5)
    server.set("answer", "42")
    assert server.config_get("dir")["dir"].endswith(f"/pvcs/{namespace}/data-kv-0")

    core.delete_namespaced_pod("kv-0", namespace)
    second = eventually(
        lambda: (
            (p := get_pod(core, namespace, "kv-0"))
            and p.metadata.uid != first.metadata.uid
            and is_ready(p)
            and p
        ),
        timeout=60,
        what="the StatefulSet to bring kv-0 back",
    )

    assert (
        redis.Redis(host=second.status.pod_ip, port=6379, socket_timeout=5).get("answer") == b"42"
    )


def test_stop_is_safe_after_a_failed_start(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": "https://127.0.0.1:1",
                            "insecure-skip-tls-verify": True,
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    node = ProcessNode(kubeconfig, "nowhere", tmp_path / "state")
    with pytest.raises(Exception, match=r"(?i)connection|refused|max retries"):
        node.start()
    node.stop()
    node.stop()
