"""One thread per pod: starts the pod's containers as local processes, watches
them, probes them, restarts them by the pod's restartPolicy, stops them when the
pod is deleted, and keeps the pod's status in step.

Lifecycle of a container run: ``Waiting(ContainerCreating)`` → ``Running`` →
``Terminated`` (exit code, reason ``Completed``/``Error``); then, when the
restart policy says so, a new run with restartCount+1: the first restart at
once, later ones after ``Waiting(CrashLoopBackOff)`` for a back-off of 1 s,
doubling up to 30 s (reset once a run lasted 60 s). A liveness or startup probe
that fails failureThreshold times stops the process the same way.

Deletion: SIGTERM to the process group, SIGKILL after the pod's grace period
(at most `GRACE_CAP_SECONDS`), a last status, then the pod is deleted with
gracePeriodSeconds=0 and a UID precondition, as the kubelet does. A pod removed
outright gets `FORCED_GRACE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import select
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from swarmops.testbed.procnode import launch, status
from swarmops.testbed.procnode.env import (
    ContainerConfigError,
    ObjectData,
    ObjectKey,
    PodFields,
    container_env,
    referenced_objects,
    static_env,
)
from swarmops.testbed.procnode.expansion import PathRewriter
from swarmops.testbed.procnode.images import (
    ImageProfile,
    LocalPrograms,
    ProgramNotFound,
    resolve_image,
)
from swarmops.testbed.procnode.ipam import IPAllocator, IPExhausted
from swarmops.testbed.procnode.kubeapi import KubeApi, KubeError
from swarmops.testbed.procnode.model import Container, ExecAction, Pod, ServiceAccountTokenSource
from swarmops.testbed.procnode.probes import (
    ProbeKind,
    ProbeOutcome,
    ProbeTracker,
    implicit_readiness_probe,
    run_exec,
    run_network_probe,
)
from swarmops.testbed.procnode.shim import context_json
from swarmops.testbed.procnode.volumes import (
    VolumeError,
    VolumeSources,
    config_map_data,
    container_mounts,
    materialise,
    secret_data,
)

GRACE_CAP_SECONDS = 30.0
FORCED_GRACE_SECONDS = 2.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
RETRY_SECONDS = 2.0
IDLE_WAKE_SECONDS = 5.0
LOG_TAIL_BYTES = 2048
LOG_TAIL_LINES = 80

log = logging.getLogger("swarmops.testbed.procnode")

Role = Literal["init", "sidecar", "app"]


def wall_clock() -> str:
    return status.timestamp(datetime.now(UTC))


class EventRecorder:
    """Posts core/v1 Events about pods, off the caller's thread, best effort."""

    def __init__(self, api: KubeApi, node_name: str) -> None:
        self._api = api
        self._node_name = node_name
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="procnode-events")

    def emit(
        self, pod: Pod, kind: str, reason: str, message: str, container: str | None = None
    ) -> None:
        now = wall_clock()
        involved: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": pod.uid,
        }
        if container is not None:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{pod.name}.{uuid.uuid4().hex[:16]}", "namespace": pod.namespace},
            "involvedObject": involved,
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "procnode", "host": self._node_name},
            "reportingComponent": "swarmops.dev/procnode",
            "reportingInstance": self._node_name,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        path = f"/api/v1/namespaces/{pod.namespace}/events"

        def post() -> None:
            try:
                self._api.create(path, event)
            except (KubeError, OSError) as error:
                log.debug("event %s for %s not recorded: %s", reason, pod.key, error)

        with contextlib.suppress(RuntimeError):  # shut down
            self._executor.submit(post)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class NodeContext:
    """What the node shares with every pod worker."""

    api: KubeApi
    node_name: str
    host_ip: str
    state_dir: Path
    programs: LocalPrograms
    allocator: IPAllocator
    probe_pool: ThreadPoolExecutor
    events: EventRecorder
    service_env: Mapping[str, str]
    # Prefix for every container command: `setpriv --pdeathsig KILL --` where
    # available, so a test run killed outright does not leave servers behind.
    launcher: tuple[str, ...] = ()


class ContainerRun:
    """A container of the pod and its current process, if any."""

    def __init__(self, spec: Container, role: Role) -> None:
        self.spec = spec
        self.role = role
        self.profile: ImageProfile | None = resolve_image(spec.image)
        self.state: status.ContainerState = status.Waiting("ContainerCreating")
        self.last_state: status.Terminated | None = None
        self.restart_count = 0
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.pidfd: int | None = None
        self.started_monotonic = 0.0
        self.container_id: str | None = None
        self.restart_at: float | None = None
        self.retry_at: float | None = None
        self.backoff = 0.0
        self.kill_deadline: float | None = None
        self.trackers: dict[ProbeKind, ProbeTracker] = {}
        self.probe_futures: dict[ProbeKind, Future[ProbeOutcome]] = {}
        self.ctx: launch.LaunchContext | None = None
        self.plan: launch.LaunchPlan | None = None
        self.reported: str | None = None  # the last warning event's reason, against spam

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def alive(self) -> bool:
        return self.process is not None

    @property
    def started(self) -> bool:
        if not self.alive:
            return False
        startup = self.trackers.get(ProbeKind.STARTUP)
        return startup is None or startup.ever_succeeded

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        readiness = self.trackers.get(ProbeKind.READINESS)
        return readiness is None or readiness.result

    @property
    def ever_ran(self) -> bool:
        return self.runs > 0 or isinstance(self.state, status.Terminated)

    def view(self) -> status.ContainerView:
        image_id = self.profile.image_id() if self.profile is not None else ""
        return status.ContainerView(
            name=self.name,
            image=self.spec.image,
            image_id=image_id,
            state=self.state,
            last_state=self.last_state,
            restart_count=self.restart_count,
            ready=self.ready,
            started=self.started,
            container_id=self.container_id,
            sidecar=self.role == "sidecar",
        )


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _log_tail(path: Path) -> str:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - LOG_TAIL_BYTES))
            data = file.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:])


class PodWorker:
    """Drives one pod on the node; see the module docstring."""

    def __init__(
        self,
        node: NodeContext,
        pod: Pod,
        on_done: Callable[[PodWorker], None],
        predecessor: PodWorker | None = None,
    ) -> None:
        self.node = node
        self.uid = pod.uid
        self.key = pod.key
        self._pod = pod
        self._on_done = on_done
        self._predecessor = predecessor
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._gone = False
        self._shutdown_grace: float | None = None
        self.finished = threading.Event()
        self.pod_dir = node.state_dir / "pods" / pod.namespace / pod.name
        self.pod_ip: str | None = None
        self._start_time = wall_clock()
        self._runs = [
            ContainerRun(c, "sidecar" if c.restart_policy == "Always" else "init")
            for c in pod.init_containers
        ] + [ContainerRun(c, "app") for c in pod.containers]
        if pod.init_containers:
            for run in self._runs[len(pod.init_containers) :]:
                run.state = status.Waiting("PodInitializing")
        self._volumes: dict[str, Path] | None = None
        self._pod_problem: tuple[str, str] | None = None
        self._last_sent: dict[str, Any] | None = None
        self._publish_retry_at = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"procnode-pod-{pod.key}", daemon=True
        )

    # -- called from other threads --------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def update(self, pod: Pod) -> None:
        with self._lock:
            self._pod = pod
        self._wake()

    def forget(self) -> None:
        """The pod is gone from the API: stop its processes, write nothing back."""
        with self._lock:
            self._gone = True
        self._wake()

    def shutdown(self, grace: float) -> None:
        """The node is stopping: stop the processes, write nothing back."""
        with self._lock:
            self._shutdown_grace = grace
        self._wake()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def log_path(self, container: str) -> Path | None:
        for run in self._runs:
            if run.name == container:
                return self.pod_dir / "logs" / container / f"{max(0, run.runs - 1)}.log"
        return None

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"!")

    # -- the worker thread ----------------------------------------------------------------

    @property
    def pod(self) -> Pod:
        with self._lock:
            return self._pod

    def _stop_reason(self) -> tuple[str, float] | None:
        with self._lock:
            pod, gone, shutdown = self._pod, self._gone, self._shutdown_grace
        if shutdown is not None:
            return "shutdown", shutdown
        if gone:
            return "gone", min(FORCED_GRACE_SECONDS, float(pod.termination_grace_period_seconds))
        if pod.deleting:
            grace = pod.deletion_grace_period_seconds
            if grace is None:
                grace = pod.termination_grace_period_seconds
            return "deleting", min(GRACE_CAP_SECONDS, float(max(0, grace)))
        return None

    def _run(self) -> None:
        reason = "shutdown"
        try:
            if self._predecessor is not None:
                self._predecessor.finished.wait(GRACE_CAP_SECONDS + 30)
            self._prepare()
            reason, grace = self._supervise()
            self._terminate(grace, announce=reason == "deleting")
            if reason == "deleting":
                self._publish(force=True)
                self._delete_pod()
        except Exception:
            log.exception("pod worker for %s failed; stopping its processes", self.key)
            self._terminate(0)
        finally:
            self._cleanup(archive=reason != "shutdown")
            self.finished.set()
            self._on_done(self)

    def _prepare(self) -> None:
        if self.pod_dir.exists():
            shutil.rmtree(self.pod_dir, ignore_errors=True)
        self.pod_dir.mkdir(parents=True, mode=0o700)
        pod = self.pod
        if pod.host_network:
            self.pod_ip = self.node.host_ip
        else:
            try:
                self.pod_ip = self.node.allocator.allocate(pod.uid, preferred=pod.pod_ip)
            except IPExhausted as error:
                self._pod_problem = ("NoPodIP", str(error))

    # -- supervision ----------------------------------------------------------------------

    def _supervise(self) -> tuple[str, float]:
        while True:
            stop = self._stop_reason()
            if stop is not None:
                return stop
            now = time.monotonic()
            if self._pod_problem is None and self._volumes is None:
                self._materialise(now)
            self._collect_exits(now)
            self._collect_probes(now)
            self._enforce_kills(now)
            if self._volumes is not None:
                self._advance(now)
            self._schedule_probes(now)
            self._publish()
            self._wait(self._next_deadline(now))

    def _materialise(self, now: float) -> None:
        if self.pod_ip is None:
            return
        if any(r.retry_at is not None and now < r.retry_at for r in self._runs):
            return
        pod = self.pod
        fields = PodFields(pod, self.pod_ip, self.node.host_ip)
        try:
            self._volumes = materialise(
                pod, fields, self.pod_dir, self.node.state_dir, self._volume_sources(pod)
            )
        except VolumeError as error:
            waiting = error.reason if error.permanent else "ContainerCreating"
            for run in self._runs:
                run.state = status.Waiting(waiting, error.message)
                run.retry_at = None if error.permanent else now + RETRY_SECONDS
            if error.permanent:
                self._pod_problem = (error.reason, error.message)
            self._warn(self._runs[0] if self._runs else None, "FailedMount", error.message)
        except (KubeError, OSError, ContainerConfigError) as error:
            for run in self._runs:
                run.state = status.Waiting("ContainerCreating", str(error))
                run.retry_at = now + RETRY_SECONDS
            self._warn(self._runs[0] if self._runs else None, "FailedMount", str(error))
        else:
            initializing = bool(pod.init_containers)
            for run in self._runs:
                run.retry_at = None
                if not run.ever_ran:
                    behind_init = initializing and run.role == "app"
                    run.state = status.Waiting(
                        "PodInitializing" if behind_init else "ContainerCreating"
                    )

    def _volume_sources(self, pod: Pod) -> VolumeSources:
        api = self.node.api

        def config_map(namespace: str, name: str) -> Mapping[str, bytes] | None:
            try:
                return config_map_data(api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}"))
            except KubeError as error:
                if error.not_found:
                    return None
                raise

        def secret(namespace: str, name: str) -> Mapping[str, bytes] | None:
            try:
                return secret_data(api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}"))
            except KubeError as error:
                if error.not_found:
                    return None
                raise

        def token(source: ServiceAccountTokenSource) -> str:
            spec: dict[str, Any] = {
                "expirationSeconds": source.expiration_seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "uid": pod.uid,
                },
            }
            if source.audience:
                spec["audiences"] = [source.audience]
            response = api.create(
                f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/"
                f"{pod.service_account_name}/token",
                {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
            )
            return str(response.get("status", {}).get("token", ""))

        return VolumeSources(config_map, secret, token)

    def _advance(self, now: float) -> None:
        pod = self.pod
        if status.pod_phase(self._view()) in ("Succeeded", "Failed"):
            for run in self._runs:
                if run.alive and run.kill_deadline is None:
                    self._kill(run, now, "the pod has completed")
            return
        for run in self._runs:
            if run.role == "init":
                if isinstance(run.state, status.Terminated) and run.state.exit_code == 0:
                    continue
                if run.alive:
                    return
                if not run.ever_ran:
                    self._start(run, now)
                    return
                policy = "Never" if pod.restart_policy == "Never" else "OnFailure"
                self._maybe_restart(run, now, policy)
                return
            if run.role == "sidecar":
                if not run.ever_ran:
                    self._start(run, now)
                elif not run.alive:
                    self._maybe_restart(run, now, "Always")
                if not run.started:
                    return
                continue
            if not run.ever_ran:
                self._start(run, now)
            elif not run.alive:
                self._maybe_restart(run, now, pod.restart_policy)

    def _maybe_restart(self, run: ContainerRun, now: float, policy: str) -> None:
        if run.retry_at is not None:
            # A start that failed before any process existed (config, image).
            if now >= run.retry_at:
                self._start(run, now)
            return
        last = run.state if isinstance(run.state, status.Terminated) else run.last_state
        if last is None:
            return
        if policy == "Never" or (policy == "OnFailure" and last.exit_code == 0):
            return
        if run.restart_at is None:
            # Just exited: leave Terminated visible for one status, then back off.
            run.restart_at = now + run.backoff
            run.backoff = min(BACKOFF_MAX, max(BACKOFF_INITIAL, run.backoff * 2))
            return
        if now < run.restart_at:
            if isinstance(run.state, status.Terminated):
                run.last_state = run.state
                delay = max(1, round(run.restart_at - now))
                pod = self.pod
                run.state = status.Waiting(
                    "CrashLoopBackOff",
                    f"back-off {delay}s restarting failed container={run.name} "
                    f"pod={pod.name}_{pod.namespace}({pod.uid})",
                )
                self._warn(run, "BackOff", "Back-off restarting failed container")
            return
        self._start(run, now)

    # -- starting and stopping processes --------------------------------------------------

    def _launch_context(self, run: ContainerRun) -> launch.LaunchContext:
        assert run.profile is not None and self.pod_ip is not None and self._volumes is not None
        if run.ctx is None:
            mounts = container_mounts(run.spec, self._volumes)
            run_dir = self.pod_dir / "containers" / run.name
            run.ctx = launch.LaunchContext(
                profile=run.profile,
                programs=self.node.programs,
                pod_ip=self.pod_ip,
                rewriter=PathRewriter(mounts),
                run_dir=os.fspath(run_dir),
            )
            context_file = run_dir / "context.json"
            context_file.parent.mkdir(parents=True, exist_ok=True)
            (run_dir / "root").mkdir(exist_ok=True)
            context_file.write_text(context_json(run.ctx))
            _write_files(launch.shim_scripts(run.ctx, os.fspath(context_file)))
        return run.ctx

    def _fetch_objects(self, run: ContainerRun) -> dict[ObjectKey, ObjectData]:
        namespace = self.pod.namespace
        objects: dict[ObjectKey, ObjectData] = {}
        for kind, name in referenced_objects(run.spec):
            resource = "configmaps" if kind == "ConfigMap" else "secrets"
            try:
                raw = self.node.api.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
            except KubeError as error:
                if not error.not_found:
                    raise
                objects[(kind, name)] = None
                continue
            decoded = config_map_data(raw) if kind == "ConfigMap" else secret_data(raw)
            objects[(kind, name)] = {k: v.decode(errors="replace") for k, v in decoded.items()}
        return objects

    def _start(self, run: ContainerRun, now: float) -> None:
        if run.retry_at is not None and now < run.retry_at:
            return
        run.restart_at = None
        if run.profile is None:
            message = (
                f"the process node cannot run image {run.spec.image!r}: it runs only "
                "redis (redis-server) and swarmops images as local processes"
            )
            run.state = status.Waiting("ImageNotRunnable", message)
            self._warn(run, "ImageNotRunnable", message)
            return
        pod = self.pod
        assert self.pod_ip is not None
        try:
            ctx = self._launch_context(run)
            env = container_env(
                run.spec,
                PodFields(pod, self.pod_ip, self.node.host_ip),
                self._fetch_objects(run),
                self.node.service_env,
            )
        except (ContainerConfigError, KubeError, VolumeError, OSError) as error:
            run.state = status.Waiting("CreateContainerConfigError", str(error))
            run.retry_at = now + RETRY_SECONDS
            self._warn(run, "Failed", f"Error: {error}")
            return
        run.retry_at = None
        try:
            plan = launch.plan_container(
                run.spec,
                ctx,
                container_env=env,
                service_env=self.node.service_env,
                hostname=pod.hostname or pod.name,
                default_dir=os.fspath(Path(ctx.run_dir) / "root"),
                read_file=_read_text,
                node_env=self._service_account_env(ctx),
            )
            _write_files(plan.command.files)
            Path(plan.cwd).mkdir(parents=True, exist_ok=True)
            log_file = self.pod_dir / "logs" / run.name / f"{run.runs}.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            with log_file.open("ab") as output:
                process = subprocess.Popen(
                    (*self.node.launcher, *plan.command.argv),
                    env=dict(plan.env),
                    cwd=plan.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
        except (ProgramNotFound, OSError) as error:
            self._record_start_error(run, str(error))
            return
        if run.ever_ran:
            run.restart_count += 1
            if isinstance(run.state, status.Terminated):
                run.last_state = run.state
        run.runs += 1
        run.plan = plan
        run.process = process
        run.pidfd = os.pidfd_open(process.pid)
        run.started_monotonic = now
        run.kill_deadline = None
        run.container_id = f"procnode://{process.pid}"
        run.state = status.Running(wall_clock())
        run.trackers = {}
        run.probe_futures = {}
        if run.spec.startup_probe is not None:
            run.trackers[ProbeKind.STARTUP] = ProbeTracker(
                run.spec.startup_probe, ProbeKind.STARTUP, now
            )
        readiness = implicit_readiness_probe(run.spec)
        if readiness is not None and run.role != "init":
            run.trackers[ProbeKind.READINESS] = ProbeTracker(readiness, ProbeKind.READINESS, now)
        if run.spec.liveness_probe is not None and run.role != "init":
            run.trackers[ProbeKind.LIVENESS] = ProbeTracker(
                run.spec.liveness_probe, ProbeKind.LIVENESS, now
            )
        run.reported = None
        self.node.events.emit(pod, "Normal", "Started", f"Started container {run.name}", run.name)

    def _service_account_env(self, ctx: launch.LaunchContext) -> dict[str, str]:
        """``KUBECONFIG`` for a container that mounts a service-account token."""
        local = ctx.rewriter.local_path(launch.SERVICE_ACCOUNT_DIR)
        token = None if local is None else _read_text(posixpath.join(local, "token"))
        if local is None or not token:
            return {}
        ca_file = posixpath.join(local, "ca.crt")
        kubeconfig = Path(ctx.run_dir) / "kubeconfig"
        kubeconfig.write_text(
            launch.service_account_kubeconfig(
                self.node.api.server,
                ca_file if Path(ca_file).is_file() else None,
                token.strip(),
                self.pod.namespace,
            )
        )
        kubeconfig.chmod(0o600)
        return {"KUBECONFIG": os.fspath(kubeconfig)}

    def _record_start_error(self, run: ContainerRun, message: str) -> None:
        now = wall_clock()
        if run.ever_ran:
            run.restart_count += 1
            if isinstance(run.state, status.Terminated):
                run.last_state = run.state
        run.runs += 1
        run.state = status.Terminated(
            exit_code=128, reason="StartError", finished_at=now, started_at=now, message=message
        )
        self._warn(run, "Failed", f"Error: {message}")

    def _collect_exits(self, now: float) -> None:
        for run in self._runs:
            process = run.process
            if process is None or process.poll() is None:
                continue
            self._on_exit(run, process, now)

    def _on_exit(self, run: ContainerRun, process: subprocess.Popen[bytes], now: float) -> None:
        code = process.returncode
        _kill_group(process.pid, signal.SIGKILL)  # whatever the process left behind
        if run.pidfd is not None:
            os.close(run.pidfd)
            run.pidfd = None
        exit_code = code if code >= 0 else 128 - code
        message = None
        if exit_code != 0 and run.spec.termination_message_policy == "FallbackToLogsOnError":
            message = _log_tail(self.pod_dir / "logs" / run.name / f"{run.runs - 1}.log") or None
        started = run.state.started_at if isinstance(run.state, status.Running) else None
        run.state = status.Terminated(
            exit_code=exit_code,
            reason=status.exit_reason(exit_code),
            finished_at=wall_clock(),
            started_at=started,
            signal=-code if code < 0 else None,
            message=message,
            container_id=run.container_id,
        )
        run.process = None
        run.kill_deadline = None
        run.restart_at = None
        for future in run.probe_futures.values():
            future.cancel()
        run.probe_futures = {}
        if now - run.started_monotonic >= BACKOFF_RESET_AFTER:
            run.backoff = 0.0

    def _kill(self, run: ContainerRun, now: float, why: str, grace: float | None = None) -> None:
        if run.process is None:
            return
        if grace is None:
            grace = min(GRACE_CAP_SECONDS, float(self.pod.termination_grace_period_seconds))
        self.node.events.emit(
            self.pod, "Normal", "Killing", f"Stopping container {run.name}: {why}", run.name
        )
        _kill_group(run.process.pid, signal.SIGTERM)
        run.kill_deadline = now + grace

    def _enforce_kills(self, now: float) -> None:
        for run in self._runs:
            if (
                run.process is not None
                and run.kill_deadline is not None
                and now >= run.kill_deadline
            ):
                _kill_group(run.process.pid, signal.SIGKILL)
                run.kill_deadline = now + 1.0

    def _terminate(self, grace: float, announce: bool = False) -> None:
        """Stop every process: SIGTERM to its group, SIGKILL after `grace` seconds."""
        now = time.monotonic()
        for run in self._runs:
            for future in run.probe_futures.values():
                future.cancel()
            if run.process is not None:
                if announce:
                    self.node.events.emit(
                        self.pod, "Normal", "Killing", f"Stopping container {run.name}", run.name
                    )
                _kill_group(run.process.pid, signal.SIGTERM)
                run.kill_deadline = now + grace
        while True:
            now = time.monotonic()
            self._collect_exits(now)
            alive = [run for run in self._runs if run.process is not None]
            if not alive:
                return
            overdue = [
                run for run in alive if run.kill_deadline is None or now >= run.kill_deadline
            ]
            for run in overdue:
                assert run.process is not None
                _kill_group(run.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.process.wait(5)
            if not overdue:
                self._wait(min(0.5, min(r.kill_deadline or now for r in alive) - now))

    # -- probes ---------------------------------------------------------------------------

    def _schedule_probes(self, now: float) -> None:
        for run in self._runs:
            if run.process is None or run.kill_deadline is not None:
                continue
            for kind, tracker in run.trackers.items():
                if kind is not ProbeKind.STARTUP and not run.started:
                    continue
                if kind in run.probe_futures or not tracker.due(now):
                    continue
                future = self.node.probe_pool.submit(self._probe, run, tracker)
                run.probe_futures[kind] = future
                future.add_done_callback(lambda _f: self._wake())

    def _probe(self, run: ContainerRun, tracker: ProbeTracker) -> ProbeOutcome:
        action = tracker.probe.action
        timeout = float(tracker.probe.timeout_seconds)
        assert self.pod_ip is not None
        if isinstance(action, ExecAction):
            ctx, plan = run.ctx, run.plan
            if ctx is None or plan is None:
                return ProbeOutcome(False, "container is not running")
            try:
                command = launch.plan_exec_probe(
                    action.command, ctx, static_env(run.spec), _read_text
                )
                _write_files(command.files)
            except (ProgramNotFound, OSError) as error:
                return ProbeOutcome(False, str(error))
            return run_exec(command.argv, plan.env, plan.cwd, timeout)
        return run_network_probe(action, run.spec, self.pod_ip, timeout)

    def _collect_probes(self, now: float) -> None:
        for run in self._runs:
            for kind, future in list(run.probe_futures.items()):
                if not future.done():
                    continue
                del run.probe_futures[kind]
                if future.cancelled():
                    continue
                outcome = future.result()
                tracker = run.trackers.get(kind)
                if tracker is None:
                    continue
                changed = tracker.record(outcome.ok, now, outcome.message)
                if changed and not tracker.result and kind is ProbeKind.READINESS:
                    self._warn(run, "Unhealthy", f"Readiness probe failed: {outcome.message}")
                if tracker.exhausted and run.kill_deadline is None:
                    self._warn(run, "Unhealthy", f"{kind.value} probe failed: {outcome.message}")
                    self._kill(run, now, f"failed {kind.value.lower()} probe, will be restarted")

    # -- waiting --------------------------------------------------------------------------

    def _next_deadline(self, now: float) -> float:
        deadlines = [now + IDLE_WAKE_SECONDS]
        for run in self._runs:
            deadlines += [
                t for t in (run.restart_at, run.retry_at, run.kill_deadline) if t is not None
            ]
            if run.process is not None:
                deadlines += [
                    t.next_due for k, t in run.trackers.items() if k not in run.probe_futures
                ]
        if self._last_sent is None or self._publish_retry_at:
            deadlines.append(self._publish_retry_at or now)
        return max(0.0, min(deadlines) - time.monotonic())

    def _wait(self, timeout: float) -> None:
        fds = [self._wake_read] + [r.pidfd for r in self._runs if r.pidfd is not None]
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select(fds, [], [], timeout)
            if self._wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_read, 4096):
                        pass

    # -- status ---------------------------------------------------------------------------

    def _view(self) -> status.PodView:
        pod = self.pod
        views = []
        for run in self._runs:
            if self._pod_problem is not None and not run.ever_ran:
                run.state = status.Waiting(*self._pod_problem)
            views.append(run.view())
        init = tuple(views[: len(pod.init_containers)])
        return status.PodView(
            host_ip=self.node.host_ip,
            pod_ip=self.pod_ip,
            start_time=self._start_time,
            restart_policy=pod.restart_policy,
            containers=tuple(views[len(pod.init_containers) :]),
            init_containers=init,
            readiness_gates=pod.readiness_gates,
        )

    def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._publish_retry_at and now < self._publish_retry_at:
            return
        pod = self.pod
        own = [] if self._last_sent is None else self._last_sent["conditions"]
        own_types = {c["type"] for c in own}
        known = [c for c in pod.conditions if c.get("type") not in own_types] + own
        body = status.pod_status(self._view(), known, wall_clock())
        if body == self._last_sent:
            return
        try:
            self.node.api.merge_patch(
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/status",
                {"metadata": {"uid": pod.uid}, "status": body},
            )
        except (KubeError, OSError) as error:
            if isinstance(error, KubeError) and error.not_found:
                self.forget()
                return
            log.warning("status of %s not written: %s", self.key, error)
            self._publish_retry_at = now + 1.0
            return
        self._publish_retry_at = 0.0
        self._last_sent = body

    def _delete_pod(self) -> None:
        pod = self.pod
        try:
            self.node.api.delete(
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
                {
                    "apiVersion": "v1",
                    "kind": "DeleteOptions",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": pod.uid},
                },
            )
        except (KubeError, OSError) as error:
            if not (isinstance(error, KubeError) and (error.not_found or error.conflict)):
                log.warning("could not delete %s: %s", self.key, error)

    def _warn(self, run: ContainerRun | None, reason: str, message: str) -> None:
        marker = f"{reason}:{message}"
        if run is not None:
            if run.reported == marker:
                return
            run.reported = marker
        self.node.events.emit(
            self.pod, "Warning", reason, message, None if run is None else run.name
        )

    def _cleanup(self, archive: bool) -> None:
        for run in self._runs:
            if run.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(run.pidfd)
                run.pidfd = None
        if self.pod_ip is not None and self.pod_ip != self.node.host_ip:
            self.node.allocator.release(self.uid)
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        # Secrets do not outlive their pod; logs are kept for post-mortems.
        shutil.rmtree(self.pod_dir / "volumes", ignore_errors=True)
        if archive and self.pod_dir.exists():
            pod = self.pod
            target = (
                self.node.state_dir / "deleted-pods" / pod.namespace / f"{pod.name}-{pod.uid[:8]}"
            )
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                self.pod_dir.rename(target)


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _write_files(files: tuple[tuple[str, str, int], ...]) -> None:
    for path, content, mode in files:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
