"""Dynamic provisioning of PersistentVolumes, so that StatefulSets with
volumeClaimTemplates schedule on the test bed.

The node installs StorageClass ``swarmops-local`` (the cluster's default;
binding mode WaitForFirstConsumer) with provisioner ``swarmops.dev/procnode``.
Once the scheduler has picked a node for a claim's first pod, a hostPath
PersistentVolume pinned to that node is created for it. On the process node the
claim's data lives in ``<state dir>/pvcs/<namespace>/<claim>``; deleting the
claim deletes the volume and that directory (reclaim policy Delete). Pods on
kwok nodes get a bound volume too; nothing is written for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROVISIONER = "swarmops.dev/procnode"
STORAGE_CLASS = "swarmops-local"
PROVISIONER_ANNOTATIONS = (
    "volume.kubernetes.io/storage-provisioner",
    "volume.beta.kubernetes.io/storage-provisioner",
)
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"


def storage_class_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    }


def claim_directory(state_dir: Path, namespace: str, claim: str) -> Path:
    return state_dir / "pvcs" / namespace / claim


def volume_name(claim_uid: str) -> str:
    return f"pvc-{claim_uid}"


def volume_for_claim(claim: Mapping[str, Any], state_dir: Path) -> dict[str, Any] | None:
    """The PersistentVolume to create for a claim, or None when the claim is not
    ours to provision (yet)."""
    metadata = claim.get("metadata", {})
    annotations = metadata.get("annotations") or {}
    spec = claim.get("spec", {})
    if not any(annotations.get(key) == PROVISIONER for key in PROVISIONER_ANNOTATIONS):
        return None
    node = annotations.get(SELECTED_NODE_ANNOTATION)
    if not node or spec.get("volumeName") or metadata.get("deletionTimestamp"):
        return None
    if claim.get("status", {}).get("phase", "Pending") != "Pending":
        return None
    namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
    size = spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name(uid),
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": spec.get("storageClassName") or STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": namespace,
                "name": name,
                "uid": uid,
            },
            "hostPath": {
                "path": str(claim_directory(state_dir, namespace, name)),
                "type": "DirectoryOrCreate",
            },
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {
                                    "key": "kubernetes.io/hostname",
                                    "operator": "In",
                                    "values": [node],
                                }
                            ]
                        }
                    ]
                }
            },
        },
    }
