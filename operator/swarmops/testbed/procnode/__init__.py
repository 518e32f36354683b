"""The test bed's process-backed node: a tiny kubelet whose pods are local processes.

Reference (each rule is implemented, and documented in more detail, in the module
named in brackets):

Placement [nodespec]
    The Node (``procnode-0`` in the test bed) carries ``swarmops.dev/testbed-node:
    process`` and the taint ``swarmops.dev/process-node=true:NoSchedule``; a pod
    lands there when it selects the label and tolerates the taint
    (``nodespec.POD_PLACEMENT`` holds both). Heartbeats renew a Lease in
    ``kube-node-lease`` every 10 s and the Ready condition every 30 s.

Images [images]
    ``redis``/``docker.io/library/redis:*`` (and ``valkey/valkey``) run Debian's
    ``/usr/bin/redis-server`` with the official image's entrypoint rule;
    ``swarmops``/``*/swarmops`` run ``<venv python> -m swarmops``. Tags are ignored.
    Any other image waits with reason ``ImageNotRunnable`` and a Warning event.

Addresses [ipam]
    Each pod gets its own loopback address from the prefix (``127.77.x.y``; the node
    is ``127.77.0.1``), next-fit, unique among live pods and, through per-address
    file locks, among all process nodes on the machine. Processes must bind that
    address, not 0.0.0.0 (``POD_IP`` is in every container's environment). Loopback
    inside a pod is the machine's loopback: probes and ``redis-cli`` aimed at
    localhost are pointed at the pod IP instead.

Commands, variables and paths [expansion, launch]
    ``command``/``args`` follow Kubernetes (``$(VAR)``, ``$$``); mount paths in
    arguments, env values, exec probes and redis.conf are rewritten to the
    volumes' local directories (the path-token rule in `expansion`).
    ``redis-server`` always gets ``--bind <podIP> --daemonize no`` last.

Environment [env]
    env and envFrom with literal values, fieldRef (metadata.name/namespace/uid/
    labels/annotations, spec.nodeName/serviceAccountName, status.podIP/hostIP),
    resourceFieldRef, secretKeyRef and configMapKeyRef (read through the API);
    plus PATH, HOME, HOSTNAME, POD_IP and KUBERNETES_SERVICE_HOST/PORT (the real
    API server). A container that mounts its service-account token also gets
    ``KUBECONFIG``, a kubeconfig for that service account, because clients cannot
    read the token at its absolute in-cluster path. Service-link variables are not
    set.

Volumes [volumes, storage]
    emptyDir, configMap, secret, downwardAPI, projected (with service-account
    tokens from the TokenRequest API), hostPath, persistentVolumeClaim (kept under
    ``<state>/pvcs/<ns>/<claim>``). Written once at pod start, not refreshed.
    StorageClass ``swarmops-local`` (the default) provisions claims, so
    StatefulSets with volumeClaimTemplates schedule.

Probes [probes]
    readiness, liveness and startup probes (exec, tcpSocket, httpGet; not gRPC);
    without a readiness probe, a TCP connect to the first declared port.

Lifecycle [supervisor]
    One process group per container, output in
    ``<state>/pods/<ns>/<pod>/logs/<container>/<run>.log``; exits become
    ``terminated`` states, restarts follow restartPolicy with back-off; deletion
    sends SIGTERM, SIGKILL after the grace period (at most 30 s), then deletes the
    pod with gracePeriodSeconds=0 and a UID precondition. Init and sidecar
    containers are supported; container ``lifecycle`` hooks, in-place image
    changes, ``kubectl logs``/``exec`` and cluster DNS are not.

`ProcessNode` is imported lazily so that the per-container shim
(``python -m swarmops.testbed.procnode.shim``) starts without loading the
Kubernetes client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from swarmops.testbed.procnode.node import ProcessNode

__all__ = ["ProcessNode"]


def __getattr__(name: str) -> Any:
    if name == "ProcessNode":
        from swarmops.testbed.procnode.node import ProcessNode  # noqa: PLC0415 (lazy, see above)

        return ProcessNode
    raise AttributeError(name)
