"""The process node: registers a Node, keeps its Lease and Ready condition fresh,
watches the pods bound to it and hands each to a `PodWorker`, and provisions
volumes for claims (see `storage`).

Runs in background threads of the caller's process (test tooling, not the
operator's event loop). The pod watch is level-triggered and resilient: an
expired resourceVersion or any error leads to a fresh list, and the list is
reconciled against the running workers (pods that vanished are stopped).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from swarmops.testbed.processes import death_signal_launcher
from swarmops.testbed.procnode import nodespec, storage
from swarmops.testbed.procnode.images import LocalPrograms
from swarmops.testbed.procnode.informer import Follower
from swarmops.testbed.procnode.ipam import AddressLocks, IPAllocator, host_address, loopback_network
from swarmops.testbed.procnode.kubeapi import KubeApi, KubeError
from swarmops.testbed.procnode.model import PodSpecError, parse_pod
from swarmops.testbed.procnode.supervisor import EventRecorder, NodeContext, PodWorker

log = logging.getLogger("swarmops.testbed.procnode")

LEASE_RENEW_SECONDS = 10.0
NODE_STATUS_SECONDS = 30.0
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 5.0
ADDRESS_LOCK_DIR = Path(tempfile.gettempdir()) / "swarmops-procnode-addresses"
_DONE_MEMORY = 10_000


class ProcessNode:
    """A node of the test bed whose pods run as local processes on loopback IPs.

    Pods land on it only when they select ``swarmops.dev/testbed-node: process``
    and tolerate the ``swarmops.dev/process-node=true:NoSchedule`` taint (see
    `nodespec.POD_PLACEMENT`).
    """

    def __init__(
        self,
        kubeconfig: Path,
        name: str,
        state_dir: Path,
        ip_prefix: str = "127.77",
        python: str = sys.executable,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.name = name
        self.state_dir = Path(state_dir)
        self._network = loopback_network(ip_prefix)
        self.host_ip = host_address(self._network)
        self.python = python
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._started = False
        self._stopped = False
        self._api: KubeApi | None = None
        self._context: NodeContext | None = None
        self._address_locks: AddressLocks | None = None
        self._probe_pool: ThreadPoolExecutor | None = None
        self._events: EventRecorder | None = None
        self._threads: list[threading.Thread] = []
        self._followers: list[Follower] = []
        self._workers: dict[str, PodWorker] = {}
        self._latest_by_key: dict[str, PodWorker] = {}
        self._done: dict[str, None] = {}
        self._node_uid = ""
        self._kubelet_version = "v0.0.0"
        self._node_conditions: list[dict[str, Any]] = []

    # -- public ---------------------------------------------------------------------------

    def start(self) -> None:
        """Register the Node, start the loops; return once the node is Ready and the
        pods bound to it are known."""
        with self._lock:
            if self._started:
                raise RuntimeError(f"process node {self.name} was already started")
            self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process this node started and its loops. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._stop.set()
            workers = list(self._workers.values())
        for follower in self._followers:
            follower.stop()
        for worker in workers:
            worker.shutdown(STOP_GRACE_SECONDS)
        for worker in workers:
            if not worker.join(STOP_GRACE_SECONDS + 15):
                log.error("pod worker for %s did not stop", worker.key)
        for thread in self._threads:
            thread.join(5)
        for follower in self._followers:
            follower.join(5)
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=False, cancel_futures=True)
        if self._events is not None:
            self._events.close()
        if self._address_locks is not None:
            self._address_locks.release_all()
        if self._api is not None:
            self._api.close()

    def log_path(self, namespace: str, pod: str, container: str) -> Path | None:
        """The log file of a container's current (or last) run, if the pod is here."""
        with self._lock:
            worker = self._latest_by_key.get(f"{namespace}/{pod}")
        return None if worker is None else worker.log_path(container)

    def pod_ips(self) -> dict[str, str]:
        """Pod UID → address, for the pods that hold one now."""
        context = self._context
        return {} if context is None else context.allocator.in_use()

    # -- start-up -------------------------------------------------------------------------

    def _start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        api = self._api = KubeApi(self.kubeconfig)
        self._kubelet_version = str(api.get("/version").get("gitVersion", "v0.0.0"))
        self._register_node()
        self._renew_lease()
        self._address_locks = AddressLocks(ADDRESS_LOCK_DIR)
        self._probe_pool = ThreadPoolExecutor(16, thread_name_prefix="procnode-probe")
        self._events = EventRecorder(api, self.name)
        host, port = api.server_host_port
        self._context = NodeContext(
            api=api,
            node_name=self.name,
            host_ip=self.host_ip,
            state_dir=self.state_dir,
            programs=LocalPrograms(python=self.python),
            allocator=IPAllocator(
                self._network, self._address_locks.claim, self._address_locks.release
            ),
            probe_pool=self._probe_pool,
            events=self._events,
            service_env={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)},
            launcher=death_signal_launcher(),
        )
        self._install_storage_class()
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="procnode-heartbeat", daemon=True
        )
        self._threads.append(heartbeat)
        heartbeat.start()
        self._followers = [
            Follower(
                api,
                "/api/v1/pods",
                {"fieldSelector": f"spec.nodeName={self.name}"},
                on_list=self._reconcile,
                on_event=self._pod_event,
                name="pods",
            ),
            Follower(
                api,
                "/api/v1/persistentvolumeclaims",
                {},
                on_list=self._claims_listed,
                on_event=self._claim_event,
                name="claims",
            ),
        ]
        for follower in self._followers:
            follower.start()
        for follower in self._followers:
            if not follower.listed.wait(START_TIMEOUT_SECONDS):
                raise TimeoutError(f"process node {self.name} could not list: {follower.error}")
        node = api.get(f"/api/v1/nodes/{self.name}")
        ready = [
            c for c in node.get("status", {}).get("conditions", []) if c.get("type") == "Ready"
        ]
        if not ready or ready[0].get("status") != "True":
            raise RuntimeError(f"node {self.name} is not Ready after registration: {ready}")

    def _register_node(self) -> None:
        assert self._api is not None
        api = self._api
        now = datetime.now(UTC)
        path = f"/api/v1/nodes/{self.name}"
        try:
            existing = api.get(path)
        except KubeError as error:
            if not error.not_found:
                raise
            existing = api.create(
                "/api/v1/nodes",
                nodespec.node_manifest(self.name, self.host_ip, self._kubelet_version, now),
            )
        else:
            annotations: dict[str, Any] = {"node.alpha.kubernetes.io/ttl": "0"}
            if nodespec.KWOK_ANNOTATION in existing["metadata"].get("annotations", {}):
                annotations[nodespec.KWOK_ANNOTATION] = None  # kwok must not manage this node
            existing = api.merge_patch(
                path,
                {
                    "metadata": {
                        "labels": nodespec.node_labels(self.name),
                        "annotations": annotations,
                    },
                    "spec": {
                        "taints": nodespec.node_taints(existing.get("spec", {}).get("taints", []))
                    },
                },
            )
        self._node_uid = str(existing["metadata"]["uid"])
        self._node_conditions = list(existing.get("status", {}).get("conditions", []))
        self._post_node_status()

    def _post_node_status(self) -> None:
        assert self._api is not None
        status = nodespec.node_status(
            self.name,
            self.host_ip,
            self._kubelet_version,
            datetime.now(UTC),
            self._node_conditions,
        )
        updated = self._api.merge_patch(f"/api/v1/nodes/{self.name}/status", {"status": status})
        self._node_conditions = list(updated.get("status", {}).get("conditions", []))

    def _renew_lease(self) -> None:
        assert self._api is not None
        now = datetime.now(UTC)
        path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{nodespec.LEASE_NAMESPACE}/leases/{self.name}"
        )
        try:
            self._api.merge_patch(
                path,
                {
                    "spec": {
                        "holderIdentity": self.name,
                        "leaseDurationSeconds": nodespec.LEASE_DURATION_SECONDS,
                        "renewTime": nodespec.micro_time(now),
                    }
                },
            )
        except KubeError as error:
            if not error.not_found:
                raise
            self._api.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{nodespec.LEASE_NAMESPACE}/leases",
                nodespec.lease_manifest(self.name, self._node_uid, now),
            )

    # -- loops ----------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        since_status = 0.0
        while not self._stop.wait(LEASE_RENEW_SECONDS):
            try:
                self._renew_lease()
                since_status += LEASE_RENEW_SECONDS
                if since_status >= NODE_STATUS_SECONDS:
                    since_status = 0.0
                    self._post_node_status()
            except KubeError as error:
                if error.not_found:
                    # Someone deleted the Node: register it again.
                    with contextlib.suppress(KubeError, OSError):
                        self._register_node()
                else:
                    log.warning("process node heartbeat failed: %s", error)
            except OSError as error:
                log.warning("process node heartbeat failed: %s", error)

    # -- storage --------------------------------------------------------------------------

    def _install_storage_class(self) -> None:
        assert self._api is not None
        try:
            self._api.create(
                "/apis/storage.k8s.io/v1/storageclasses", storage.storage_class_manifest()
            )
        except KubeError as error:
            if not error.conflict:
                raise

    def _claims_listed(self, items: list[dict[str, Any]]) -> None:
        for claim in items:
            self._claim_event("ADDED", claim)

    def _claim_event(self, kind: str, claim: dict[str, Any]) -> None:
        assert self._api is not None
        metadata = claim.get("metadata", {})
        if kind == "DELETED":
            self._release_claim(claim)
            return
        volume = storage.volume_for_claim(claim, self.state_dir)
        if volume is None:
            return
        try:
            self._api.create("/api/v1/persistentvolumes", volume)
            log.info(
                "provisioned %s for %s/%s",
                volume["metadata"]["name"],
                metadata.get("namespace"),
                metadata.get("name"),
            )
        except KubeError as error:
            if not error.conflict:
                log.warning(
                    "could not provision a volume for %s/%s: %s",
                    metadata.get("namespace"),
                    metadata.get("name"),
                    error,
                )

    def _release_claim(self, claim: dict[str, Any]) -> None:
        assert self._api is not None
        metadata = claim.get("metadata", {})
        name = storage.volume_name(str(metadata.get("uid", "")))
        try:
            volume = self._api.get(f"/api/v1/persistentvolumes/{name}")
        except KubeError as error:
            if not error.not_found:
                log.warning("could not read volume %s: %s", name, error)
            return
        provisioner = (
            volume.get("metadata", {}).get("annotations", {}).get("pv.kubernetes.io/provisioned-by")
        )
        if provisioner != storage.PROVISIONER:
            return
        with contextlib.suppress(KubeError):
            self._api.delete(f"/api/v1/persistentvolumes/{name}")
        directory = storage.claim_directory(
            self.state_dir, str(metadata.get("namespace")), str(metadata.get("name"))
        )
        shutil.rmtree(directory, ignore_errors=True)

    # -- pods -----------------------------------------------------------------------------

    def _reconcile(self, items: list[dict[str, Any]]) -> None:
        present = {str(item.get("metadata", {}).get("uid", "")) for item in items}
        with self._lock:
            vanished = [uid for uid in self._workers if uid not in present]
        for uid in vanished:
            self._forget(uid)
        for item in items:
            self._dispatch(item)

    def _dispatch(self, raw: dict[str, Any]) -> None:
        try:
            pod = parse_pod(raw)
        except PodSpecError as error:
            metadata = raw.get("metadata", {})
            log.warning(
                "pod %s/%s cannot run on the process node: %s",
                metadata.get("namespace"),
                metadata.get("name"),
                error,
            )
            return
        with self._lock:
            if self._stop.is_set() or self._context is None or pod.uid in self._done:
                return
            worker = self._workers.get(pod.uid)
            if worker is not None:
                worker.update(pod)
                return
            if pod.node_name != self.name or (pod.terminal and not pod.deleting):
                return
            predecessor = self._latest_by_key.get(pod.key)
            if predecessor is not None and predecessor.finished.is_set():
                predecessor = None
            worker = PodWorker(self._context, pod, self._worker_done, predecessor)
            self._workers[pod.uid] = worker
            self._latest_by_key[pod.key] = worker
            # Started under the lock, so stop() never misses a worker it must join.
            worker.start()

    def _pod_event(self, kind: str, raw: dict[str, Any]) -> None:
        if kind == "DELETED":
            self._forget(str(raw.get("metadata", {}).get("uid", "")))
        else:
            self._dispatch(raw)

    def _forget(self, uid: str) -> None:
        with self._lock:
            worker = self._workers.get(uid)
            self._done.pop(uid, None)
        if worker is not None:
            worker.forget()

    def _worker_done(self, worker: PodWorker) -> None:
        with self._lock:
            if self._workers.get(worker.uid) is worker:
                del self._workers[worker.uid]
            self._done[worker.uid] = None
            while len(self._done) > _DONE_MEMORY:
                self._done.pop(next(iter(self._done)))
