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
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import kopf

from swarmops import __version__
from swarmops.analysis.prometheus import PrometheusProvider
from swarmops.core.gpu import GPU_NODE_SELECTOR
from swarmops.core.pods import POOL_LABEL
from swarmops.core.rediscluster.names import CLUSTER_LABEL as REDIS_CLUSTER_LABEL
from swarmops.handlers import claims, gpu_health, gpu_nodes, pools, redisclusters, swarms
from swarmops.handlers.context import MEMO_KEY, Services, services_of
from swarmops.kube.access import allowed
from swarmops.kube.auth import Credentials, load_connection_info
from swarmops.kube.client import KubeClient
from swarmops.kube.errors import ApiError, NotFound, TooManyRequests
from swarmops.kube.events import EventRecorder
from swarmops.kube.resources import (
    AGENTCLAIMS,
    AGENTPOOLS,
    NODES,
    PODDISRUPTIONBUDGETS,
    REDISCLUSTERS,
    STATEFULSETS,
    SWARMS,
    Resource,
)
from swarmops.logs import quiet_kopf_handler_successes
from swarmops.metrics import Metrics, serve_metrics
from swarmops.settings import Settings

logger = logging.getLogger(__name__)

ANNOTATION_PREFIX = "swarmops.dev"
FINALIZER = "swarmops.dev/finalizer"

# What kopf accepts as stop and ready flags.
Flag = threading.Event | asyncio.Event | asyncio.Future[Any] | concurrent.futures.Future[Any]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's diff-base, switched off: SwarmOps has no handler that reads it.

    kopf computes the "essence" of every object on every watch event (a deep copy of the
    body, its annotations filtered, a diff against the stored one) before it looks at
    which handlers exist; only on.create/update/resume/field handlers use it. Ours are
    all watch-event and index handlers, so that work is wasted, and on the claim hot path
    (hundreds of pod and claim events a second) the benchmark measured it at about a
    sixth of the operator's CPU (docs/benchmarks.md). An empty essence makes the diff
    empty and costs nothing; nothing is ever written to the objects.

    tests/unit/test_kopf_quiet.py fails if a handler that needs the diff-base (a
    "changing" handler) is registered: then this must go.
    """

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def configure_kopf(settings: kopf.OperatorSettings, ours: Settings) -> None:
    """kopf's own settings for SwarmOps.

    * Progress in `swarmops.dev/*` annotations (our status schemas are strict, so
      nothing may go to `status.kopf`), though no handler of ours stores any; no
      diff-base at all (`NoDiffBase`).
    * kopf posts Events for its own log lines; only warnings and errors are worth an
      API call (our handlers post their own, meaningful Events).
    * Pods are watched with a label selector server-side, so the operator only ever
      holds the pods of its pools, not every pod in the namespace; PodDisruptionBudgets
      likewise (only its pools' own); nodes likewise, so it holds only GPU nodes
      (labelled by GPU Feature Discovery), never the CPU fleet.
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
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = "swarmops"
    settings.posting.event_name_prefix = "swarmops-"
    settings.watching.label_selectors["v1", "pods"] = POOL_LABEL
    settings.watching.label_selectors["policy", "poddisruptionbudgets"] = POOL_LABEL
    settings.watching.label_selectors["v1", "nodes"] = GPU_NODE_SELECTOR
    # Only the RedisClusters' own StatefulSets, never every StatefulSet in a namespace.
    settings.watching.label_selectors["apps", "statefulsets"] = REDIS_CLUSTER_LABEL
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.peering.standalone = True
    settings.scanning.disabled = not any(_is_pattern(ns) for ns in ours.namespaces)


def _is_pattern(namespace: str) -> bool:
    return any(mark in namespace for mark in "!*?")


def build_registry(
    *,
    watch_gpu_nodes: bool = True,
    gpu_reaction: bool = True,
    disruption_budgets: bool = True,
    redis_clusters: bool = True,
) -> kopf.OperatorRegistry:
    """A registry with every handler of SwarmOps (not kopf's global default registry).

    `watch_gpu_nodes`: index the GPU nodes, to check GPU requests against them. Only
    when the operator may list and watch nodes: kopf holds every handler back until
    each index has listed, and a watch that is refused never lists.
    """
    registry = kopf.OperatorRegistry()
    kopf.on.startup(registry=registry)(on_startup)
    kopf.on.cleanup(registry=registry)(on_cleanup)
    kopf.on.login(registry=registry)(on_login)
    kopf.on.probe(id="reconciler", registry=registry)(on_probe)
    pools.register(registry, disruption_budgets=disruption_budgets)
    claims.register(registry)
    if watch_gpu_nodes:
        gpu_nodes.register(registry)
    if watch_gpu_nodes and gpu_reaction:
        gpu_health.register(registry)
    if redis_clusters:
        redisclusters.register(registry)
    swarms.register(registry, redis_clusters=redis_clusters)
    return registry


async def on_startup(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    services = services_of(memo)
    configure_kopf(settings, services.settings)
    if services.client is None:  # kopf retries this handler while the CRDs are missing
        services.client = KubeClient(services.credentials)
    await _require_crds(services.client)
    await _wait_for_watch_caches(services.client, services.settings)
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
        gpu_nodes=kwargs.get(gpu_nodes.GPU_NODES_INDEX),
        budgets=kwargs.get(pools.BUDGETS_INDEX),  # absent: no access to budgets
    )
    services.pools.queue.start()
    services.claims = claims.ClaimController(
        client=services.client,
        events=services.events,
        metrics=services.metrics,
        services=services,
        claims=kwargs[claims.CLAIMS_INDEX],
        claim_pods=kwargs[claims.CLAIM_PODS_INDEX],
        pools=kwargs[pools.POOLS_INDEX],
        pool_pods=kwargs[pools.POOL_PODS_INDEX],
    )
    services.claims.queue.start()
    gpu_health_nodes = kwargs.get(gpu_health.GPU_HEALTH_INDEX)
    if gpu_health_nodes is not None:
        services.gpu_reactor = gpu_health.GpuHealthReactor(
            client=services.client,
            metrics=services.metrics,
            policy=await gpu_health.reaction_policy(services.settings, services.client),
            nodes=gpu_health_nodes,
            pool_pods=kwargs[pools.POOL_PODS_INDEX],
        )
        services.gpu_reactor.start()
    redis_clusters = kwargs.get(redisclusters.CLUSTERS_INDEX)
    if redis_clusters is not None:
        services.redis = redisclusters.RedisController(
            client=services.client,
            events=services.events,
            metrics=services.metrics,
            services=services,
            clusters=redis_clusters,
            statefulsets=kwargs[redisclusters.STATEFULSETS_INDEX],
        )
        services.redis.queue.start()
    services.swarms = swarms.SwarmController(
        client=services.client,
        events=services.events,
        metrics=services.metrics,
        services=services,
        swarms=kwargs[swarms.SWARMS_INDEX],
        pools=kwargs[pools.POOLS_INDEX],
        pool_pods=kwargs[pools.POOL_PODS_INDEX],
        clusters=redis_clusters,
    )
    services.swarms.queue.start()
    if services.settings.metrics_port:
        services.metrics_endpoint = await serve_metrics(
            services.metrics,
            host=services.settings.bind_address,
            port=services.settings.metrics_port,
            is_ready=lambda: services.ready,
        )
    services.ready = True
    logger.info("SwarmOps %s started.", __version__)


REQUIRED_RESOURCES = frozenset(
    {AGENTPOOLS.plural, AGENTCLAIMS.plural, REDISCLUSTERS.plural, SWARMS.plural}
)


# How long a new CRD's storage may take to initialise before startup gives up and
# lets kopf retry the startup handler.
WATCH_CACHE_PATIENCE = 30.0


async def _wait_for_watch_caches(client: KubeClient, settings: Settings) -> None:
    """Wait, quietly, until the apiserver serves our resources from its watch cache.

    For a moment after a CRD is installed, its lists and watches are refused with 429
    "storage is (re)initializing"; kopf would log every refused watch as an ERROR, which
    is noise on every fresh install (the chart installs the CRDs and starts us at once).
    """
    namespaces: list[str | None] = (
        [None]
        if settings.all_namespaces
        else [n for n in settings.namespaces if not _is_pattern(n)]
    )
    deadline = time.monotonic() + WATCH_CACHE_PATIENCE
    for resource in (AGENTPOOLS, AGENTCLAIMS, REDISCLUSTERS, SWARMS):
        for namespace in namespaces:
            while True:
                try:
                    # resourceVersion=0: served by the watch cache, as kopf's watches are.
                    await client.request(
                        "GET",
                        resource.path(namespace),
                        params={"limit": "1", "resourceVersion": "0"},
                    )
                    break
                except TooManyRequests as error:
                    if time.monotonic() > deadline:
                        raise kopf.TemporaryError(
                            f"{resource.plural} storage still initialising: {error}", delay=5
                        ) from error
                    await asyncio.sleep(min(error.retry_after or 0.5, 1.0))


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
    if services.claims is not None:
        await services.claims.stop()
    if services.gpu_reactor is not None:
        await services.gpu_reactor.stop()
    if services.redis is not None:
        await services.redis.stop()
    if services.swarms is not None:
        await services.swarms.stop()
    if services.metrics_endpoint is not None:
        await services.metrics_endpoint.close()
    await services.prometheus.close()
    if services.client is not None:
        await services.client.close()
    logger.info("SwarmOps stopped.")


async def on_login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """kopf's credentials are ours: the same `Credentials` our client uses."""
    return await services_of(memo).credentials.login()


async def on_probe(memo: Any, **_: Any) -> dict[str, Any]:
    """Liveness: the reconcile workers are alive (kopf serves this at /healthz)."""
    services = services_of(memo)
    queues = [services.pool_controller().queue, services.claim_controller().queue]
    if services.redis is not None:
        queues.append(services.redis.queue)
    if services.swarms is not None:
        queues.append(services.swarms.queue)
    for queue in queues:
        if not queue.started:
            raise RuntimeError("the reconcile workers have stopped")
    return {"ready": services.ready}


ACCESS_REVIEW_ATTEMPTS = 5


def _served_scopes(settings: Settings) -> tuple[str | None, ...]:
    """The namespaces served, to ask about; None (cluster-wide) when they are all
    namespaces or a pattern, whose namespaces are not known in advance."""
    if settings.all_namespaces or any(_is_pattern(ns) for ns in settings.namespaces):
        return (None,)
    return settings.namespaces


async def _may(
    credentials: Credentials,
    verbs: tuple[str, ...],
    resource: Resource,
    scopes: tuple[str | None, ...],
    without: str,
) -> bool:
    """Whether the operator may do each of `verbs` to `resource` in each of `scopes`
    (None: cluster-wide), asked through SelfSubjectAccessReviews, not tried.

    A refusal is a warning that says `without`: what the operator does without the
    access. The apiserver not answering is no answer: after a few tries that is an
    error, as it would be for kopf.
    """
    async with KubeClient(credentials) as client:
        for attempt in range(1, ACCESS_REVIEW_ATTEMPTS + 1):
            try:
                for namespace in scopes:
                    for verb in verbs:
                        if not await allowed(
                            client, verb, resource.plural, group=resource.group, namespace=namespace
                        ):
                            logger.warning(
                                "The operator may not %s %s %s, so %s",
                                verb,
                                resource.plural,
                                f"in {namespace}" if namespace else "cluster-wide",
                                without,
                            )
                            return False
                return True
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                if attempt == ACCESS_REVIEW_ATTEMPTS:
                    raise
                logger.warning(
                    "Could not ask the apiserver about %s access: %s", resource.kind, error
                )
                await asyncio.sleep(attempt)
    raise AssertionError("unreachable")  # pragma: no cover


async def may_watch_nodes(credentials: Credentials) -> bool:
    """Whether the operator may list and watch nodes cluster-wide.

    A namespaced install without the chart's nodes ClusterRole still runs; it only
    cannot tell a GPU request no node can satisfy.
    """
    without = (
        "GPU requests of AgentPools are not checked against the GPU nodes (no "
        "UnsatisfiableGPURequest condition). The Helm chart grants it with its '-nodes' "
        "ClusterRole."
    )
    return await _may(credentials, ("list", "watch"), NODES, (None,), without)


BUDGET_VERBS = ("list", "watch", "create", "patch")


async def may_manage_budgets(credentials: Credentials, settings: Settings) -> bool:
    """Whether the operator may keep its pools' PodDisruptionBudgets where it serves.

    kopf holds every handler back until each index has listed, and a refused watch never
    lists: an install whose Role predates the budgets (the chart grants them) would stop
    the whole operator. Without the access, pools run without budgets.
    """
    scopes = _served_scopes(settings)
    without = "AgentPools get no PodDisruptionBudget. The Helm chart's Role grants it."
    return await _may(credentials, BUDGET_VERBS, PODDISRUPTIONBUDGETS, scopes, without)


async def may_watch_redis_statefulsets(credentials: Credentials, settings: Settings) -> bool:
    """Whether the operator may list and watch StatefulSets where it serves (RedisClusters
    are made of them). Asked, not tried: a refused watch never lists, and kopf would hold
    back every other handler until it did. Without it, RedisClusters are not served."""
    scopes = _served_scopes(settings)
    without = "RedisClusters are not served. The Helm chart's Role grants it."
    return await _may(credentials, ("list", "watch"), STATEFULSETS, scopes, without)


def build_services(settings: Settings, environ: Mapping[str, str] | None = None) -> Services:
    """Services with credentials loaded (raises `CredentialsError` with a clear message)."""
    env = os.environ if environ is None else environ
    credentials = Credentials(
        lambda: load_connection_info(settings.kubeconfig, settings.context, env)
    )
    metrics = Metrics()
    return Services(
        settings=settings,
        credentials=credentials,
        metrics=metrics,
        prometheus=PrometheusProvider(default_address=settings.prometheus_url, metrics=metrics),
    )


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
    quiet_kopf_handler_successes()
    health = (
        f"http://{settings.bind_address}:{settings.health_port}/healthz"
        if settings.health_port
        else None
    )
    watch_gpu_nodes = await may_watch_nodes(services.credentials)
    disruption_budgets = await may_manage_budgets(services.credentials, settings)
    redis_clusters = await may_watch_redis_statefulsets(services.credentials, settings)
    await kopf.operator(
        registry=build_registry(
            watch_gpu_nodes=watch_gpu_nodes,
            gpu_reaction=settings.gpu_reaction != "off",
            disruption_budgets=disruption_budgets,
            redis_clusters=redis_clusters,
        ),
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
