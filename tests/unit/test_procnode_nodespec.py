"""The Node, Lease, StorageClass and PersistentVolumes the process node writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from swarmops.testbed.procnode.expansion import PathRewriter
from swarmops.testbed.procnode.images import LocalPrograms, resolve_image
from swarmops.testbed.procnode.launch import LaunchContext
from swarmops.testbed.procnode.nodespec import (
    KWOK_ANNOTATION,
    POD_PLACEMENT,
    TAINT,
    lease_manifest,
    micro_time,
    node_manifest,
    node_status,
    node_taints,
)
from swarmops.testbed.procnode.shim import context_json, load_context
from swarmops.testbed.procnode.storage import PROVISIONER, storage_class_manifest, volume_for_claim

NOW = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_node_manifest_is_a_schedulable_tainted_process_node() -> None:
    node = node_manifest("procnode-0", "127.77.0.1", "v1.36.3", NOW)
    labels = node["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "procnode-0"
    assert labels["swarmops.dev/testbed-node"] == "process"
    assert labels["kubernetes.io/os"] == "linux"
    assert KWOK_ANNOTATION not in node["metadata"].get("annotations", {})
    assert node["spec"]["taints"] == [TAINT]
    status = node["status"]
    assert status["allocatable"] == {
        "cpu": "16",
        "memory": "64Gi",
        "ephemeral-storage": "100Gi",
        "pods": "250",
    }
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["lastHeartbeatTime"] == "2026-01-02T03:04:05Z"
    assert {"type": "InternalIP", "address": "127.77.0.1"} in status["addresses"]
    assert status["nodeInfo"]["kubeletVersion"] == "v1.36.3"


def test_pods_that_follow_the_placement_tolerate_the_taint() -> None:
    assert POD_PLACEMENT["nodeSelector"] == {"swarmops.dev/testbed-node": "process"}
    (toleration,) = POD_PLACEMENT["tolerations"]
    assert (toleration["key"], toleration["value"], toleration["effect"]) == (
        TAINT["key"],
        TAINT["value"],
        TAINT["effect"],
    )


def test_heartbeat_keeps_transition_times() -> None:
    first = node_status("n", "127.77.0.1", "v1", NOW)
    later = node_status("n", "127.77.0.1", "v1", NOW + timedelta(minutes=1), first["conditions"])
    ready = next(c for c in later["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert ready["lastHeartbeatTime"] == "2026-01-02T03:05:05Z"


def test_foreign_taints_are_kept_and_ours_not_doubled() -> None:
    unreachable = {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}
    assert node_taints([unreachable, TAINT]) == [unreachable, TAINT]


def test_lease() -> None:
    lease = lease_manifest("procnode-0", "node-uid", NOW)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "node-uid"
    assert lease["spec"]["renewTime"] == "2026-01-02T03:04:05.678901Z" == micro_time(NOW)
    assert lease["spec"]["holderIdentity"] == "procnode-0"


def claim(**annotations: str) -> dict[str, object]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": "data-kv-0",
            "uid": "c-1",
            "annotations": annotations,
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "2Gi"}},
            "storageClassName": "swarmops-local",
        },
        "status": {"phase": "Pending"},
    }


def test_storage_class_is_the_default_and_waits_for_a_consumer() -> None:
    manifest = storage_class_manifest()
    assert manifest["provisioner"] == PROVISIONER
    assert manifest["volumeBindingMode"] == "WaitForFirstConsumer"
    assert (
        manifest["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    )


def test_volume_is_provisioned_once_a_node_is_selected(tmp_path: Path) -> None:
    assert volume_for_claim(claim(), tmp_path) is None
    assert (
        volume_for_claim(
            claim(**{"volume.kubernetes.io/storage-provisioner": PROVISIONER}), tmp_path
        )
        is None
    )
    other = claim(
        **{
            "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com",
            "volume.kubernetes.io/selected-node": "n",
        }
    )
    assert volume_for_claim(other, tmp_path) is None
    ours = claim(
        **{
            "volume.kubernetes.io/storage-provisioner": PROVISIONER,
            "volume.kubernetes.io/selected-node": "procnode-0",
        }
    )
    volume = volume_for_claim(ours, tmp_path)
    assert volume is not None
    assert volume["metadata"]["name"] == "pvc-c-1"
    spec = volume["spec"]
    assert spec["capacity"] == {"storage": "2Gi"}
    assert spec["claimRef"]["uid"] == "c-1"
    assert spec["hostPath"]["path"] == str(tmp_path / "pvcs" / "ns" / "data-kv-0")
    term = spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["procnode-0"]


def test_shim_context_round_trips() -> None:
    profile = resolve_image("redis:7")
    assert profile is not None
    ctx = LaunchContext(
        profile,
        LocalPrograms(python="/venv/bin/python"),
        "127.77.0.3",
        PathRewriter([("/data", "/L")]),
        "/run",
    )
    loaded = load_context(context_json(ctx))
    assert loaded.pod_ip == ctx.pod_ip and loaded.run_dir == ctx.run_dir
    assert loaded.programs == ctx.programs
    assert loaded.rewriter.mounts == {"/data": "/L"}
    assert loaded.profile.family == profile.family
