"""The operator process: kopf embedded, configured, and wired to our services.

`run_operator` is the single entry point, used by `swarmops run` (in the main
thread, stopped by SIGINT/SIGTERM) and by the tests (in a background thread,
stopped by `stop_flag`). Each call builds its own kopf registry, its own services
and its own metrics registry, so several operators can live in one process.

Standalone on purpose: kopf's peering needs its KopfPeering CRDs and, on equal
priorities, pauses every instance instead of electing one, so it is not leader
election. SwarmOps runs one replica (Deployment strategy Recreate); the
reconciles are idempotent, so an overlap during a restart is harmless.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import kopf

from swarmops import __version__
from swarmops.core.pods import POOL_LABEL
from swarmops.handlers import pools
from swarmops.handlers.context import MEMO_KEY, Services, services_of
from swarmops.kube.auth import Credentials, load_connection_info
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import NotFound
from swarmops.kube.events import EventRecorder
from swarmops.kube.resources import AGENTPOOLS
from swarmops.metrics import serve_metrics
from swarmops.settings import Settings

logger = logging.getLogger(__name__)

ANNOTATION_PREFIX = "swarmops.dev"
FINALIZER = "swarmops.dev/finalizer"

# What kopf accepts as stop and ready flags.
Flag = threading.Event | asyncio.Event | asyncio.Future[Any] | concurrent.futures.Future[Any]


def configure_kopf(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """kopf's own settings for SwarmOps.

    * Progress and diff-base in `swarmops.dev/*` annotations: our status schemas are
      strict, so nothing may go to `status.kopf`.
    * kopf posts Events for its own log lines; only warnings and errors are worth an
      API call (our handlers post their own, meaningful Events).
    * Pods are watched with a label selector server-side, so the operator only ever
      holds the pods of its pools, not every pod in the namespace.
    * Watches are restarted every few minutes and requests time out, so a half-dead
      connection cannot leave the operator blind.
    * No scanning of CRDs and namespaces at runtime (it needs cluster-wide list/watch
      on both, which least-privilege RBAC does not grant, and without it kopf spends a
      minute retrying 403s before it starts): our CRDs must be installed before the
      operator starts (the startup handler waits for them). Namespace globs need the
      namespace list to expand, so they turn scanning back on.
    """
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=ANNOTATION_PREFIX
    )
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "swarmops"
    settings.posting.event_name_prefix = "swarmops-"
    settings.watching.label_selectors["v1", "pods"] = POOL_LABEL
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.peering.standalone = True
    settings.scanning.disabled = not any(_is_pattern(ns) for ns in ours.namespaces)


def _is_pattern(namespace: str) -> bool:
    return any(mark in namespace for mark in "!*?")


def build_registry() -> kopf.OperatorRegistry:
    """A registry with every handler of SwarmOps (not kopf's global default registry)."""
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.login(registry=registry)(on_login)
    kopf.on.probe(id="reconciler", registry=registry)(on_probe)
    pools.register(registry)
    return registry


async def on_startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    services = services_of(memo)
    configure_kopf(settings, services.settings)
    if services.client is None:  # kopf retries this handler while the CRDs are missing
        services.client = KubeClient(services.credentials)
    await _require_crds(services.client)
    services.events = EventRecorder(services.client)
    services.pools = pools.PoolController(
        client=services.client,
        events=services.events,
        metrics=services.metrics,
        services=services,
        # Indices are passed to every handler by their ids; they fill in the background
        # and kopf runs no resource handler before they are complete.
        pools=kwargs[pools.POOLS_INDEX],
        pods=kwargs[pools.POOL_PODS_INDEX],
    )
    services.pools.queue.start()
    if services.settings.metrics_port:
        services.metrics_endpoint = await serve_metrics(
            services.metrics,
            host=services.settings.bind_address,
            port=services.settings.metrics_port,
            is_ready=lambda: services.ready,
        )
    services.ready = True
    logger.info("SwarmOps %s started.", __version__)


REQUIRED_RESOURCES = frozenset({AGENTPOOLS.plural})


async def _require_crds(client: KubeClient) -> None:
    """Wait (by kopf's retries) until the apiserver serves our resources.

    kopf resolves the resources it watches once, right after startup; a CRD
    installed later would go unnoticed until a restart, so start only once
    they are there.
    """
    try:
        discovery = await client.request("GET", f"/apis/{AGENTPOOLS.group}/{AGENTPOOLS.version}")
    except NotFound:
        discovery = {}
    served = {resource.get("name") for resource in discovery.get("resources") or []}
    missing = sorted(REQUIRED_RESOURCES - served)
    if missing:
        raise kopf.TemporaryError(
            f"the apiserver does not serve {', '.join(missing)}.{AGENTPOOLS.group}/"
            f"{AGENTPOOLS.version}: install the CRDs (crds/ or the Helm chart) first",
            delay=5,
        )


async def on_cleanup(memo: Any, **_: Any) -> None:
    services = services_of(memo)
    services.ready = False
    if services.pools is not None:
        await services.pools.queue.stop()
    if services.metrics_endpoint is not None:
        await services.metrics_endpoint.close()
    if services.client is not None:
        await services.client.close()
    logger.info("SwarmOps stopped.")


async def on_login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials are ours: the same `Credentials` our client uses."""
    return await services_of(memo).credentials.login()


async def on_probe(memo: Any, **_: Any) -> dict[str, Any]:
    """Liveness: the reconcile workers are alive (kopf serves this at /healthz)."""
    services = services_of(memo)
    controller = services.pool_controller()
    if not controller.queue.started:
        raise RuntimeError("the reconcile workers have stopped")
    return {"ready": services.ready}


def build_services(settings: Settings, environ: Mapping[str, str] | None = None) -> Services:
    """Services with credentials loaded (raises `CredentialsError` with a clear message)."""
    env = os.environ if environ is None else environ
    credentials = Credentials(
        lambda: load_connection_info(settings.kubeconfig, settings.context, env)
    )
    return Services(settings=settings, credentials=credentials)


async def serve(
    settings: Settings,
    *,
    services: Services | None = None,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the operator in the current event loop until `stop_flag` is set (or a signal)."""
    services = services if services is not None else build_services(settings, environ)
    health = (
        f"http://{settings.bind_address}:{settings.health_port}/healthz"
        if settings.health_port
        else None
    )
    await kopf.operator(
        registry=build_registry(),
        settings=kopf.OperatorSettings(),
        memo=kopf.Memo({MEMO_KEY: services}),
        standalone=True,
        clusterwide=settings.all_namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=health,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


def run_operator(
    settings: Settings,
    *,
    services: Services | None = None,
    stop_flag: Flag | None = None,
    ready_flag: Flag | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Run the operator to completion in a new event loop (blocking)."""
    asyncio.run(
        serve(
            settings,
            services=services,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            environ=environ,
        )
    )


class OperatorThread:
    """An operator running in a background thread with its own event loop.

    For tests, benchmarks and the demo, which need the real operator beside their
    own code in one process. `start()` returns once kopf's startup is done (the
    services exist and the watches begin); `stop()` asks it to exit and waits.
    """

    def __init__(self, settings: Settings, services: Services | None = None) -> None:
        self.settings = settings
        self.services = services if services is not None else build_services(settings)
        self.error: BaseException | None = None
        self._stop_flag = threading.Event()
        self._ready_flag = threading.Event()
        self._thread = threading.Thread(target=self._main, name="swarmops-operator", daemon=True)

    def _main(self) -> None:
        try:
            run_operator(
                self.settings,
                services=self.services,
                stop_flag=self._stop_flag,
                ready_flag=self._ready_flag,
            )
        except BaseException as error:
            self.error = error
            logger.exception("The operator failed.")

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._ready_flag.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError("the operator exited while starting") from self.error
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not start within {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        """Stop and wait; raise if it does not exit in time or if it had failed."""
        self._stop_flag.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the operator did not stop within {timeout:.0f}s")
        if self.error is not None:
            raise RuntimeError("the operator failed") from self.error
