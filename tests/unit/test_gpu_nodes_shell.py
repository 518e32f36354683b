"""The shell around GPU nodes: which pools a node change requeues, and how kopf is set up."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from swarmops.api import AgentPool
from swarmops.core.expectations import NONE
from swarmops.core.gpu import GPU_NODE_SELECTOR
from swarmops.core.gpu_fit import observe_gpu_node
from swarmops.core.pool import plan_pool
from swarmops.core.testing import T0
from swarmops.handlers.context import Services
from swarmops.handlers.gpu_nodes import GPU_NODES_INDEX
from swarmops.handlers.pools import PoolController, PoolKey
from swarmops.kube.auth import Credentials
from swarmops.metrics import Metrics
from swarmops.runtime import build_registry, configure_kopf
from swarmops.settings import Settings
from swarmops.testbed.nodes import A100, H100, gpu_node

SETTINGS = Settings(namespaces=("team",))


class Recorder:
    def __init__(self) -> None:
        self.added: list[PoolKey] = []

    def add(self, key: PoolKey) -> None:
        self.added.append(key)


def pool(name: str, gpu: dict[str, Any] | None) -> AgentPool:
    body: dict[str, Any] = {
        "apiVersion": "swarmops.dev/v1alpha1",
        "kind": "AgentPool",
        "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a"}]}}},
    }
    if gpu is not None:
        body["spec"]["gpu"] = gpu
    return AgentPool.from_body(body)


def controller() -> tuple[PoolController, Recorder]:
    pools = {
        ("team", "gpu"): [pool("gpu", {"count": 1})],
        ("team", "cpu"): [pool("cpu", None)],
        ("team", "off"): [pool("off", {"count": 0})],
    }
    services = Services(settings=SETTINGS, credentials=Credentials(lambda: cast(Any, None)))
    built = PoolController(
        client=cast(Any, None),
        events=cast(Any, None),
        metrics=Metrics(),
        services=services,
        pools=cast(Any, pools),
        pods=cast(Any, {}),
        gpu_nodes=cast(Any, {}),
    )
    recorder = Recorder()
    built.queue = cast(Any, recorder)
    return built, recorder


def test_only_pools_asking_for_gpus_are_requeued_and_only_when_placement_facts_change() -> None:
    control, queue = controller()
    hopper = observe_gpu_node(gpu_node("hopper", H100))
    control.gpu_node_changed("hopper", hopper)
    assert queue.added == [("team", "gpu")]
    # The same facts again (a status heartbeat, a new annotation): nothing to do.
    control.gpu_node_changed("hopper", observe_gpu_node(gpu_node("hopper", H100)))
    assert queue.added == [("team", "gpu")]
    control.gpu_node_changed("hopper", observe_gpu_node(gpu_node("hopper", A100)))
    assert len(queue.added) == 2
    control.gpu_node_changed("hopper", None)
    control.gpu_node_changed("hopper", None)  # deleted twice (a relist): once is enough
    control.gpu_node_changed("never-seen", None)
    assert len(queue.added) == 3


def test_gpu_nodes_are_watched_with_a_server_side_selector() -> None:
    settings = kopf.OperatorSettings()
    configure_kopf(settings, SETTINGS)
    selectors = settings.watching.label_selectors
    assert GPU_NODE_SELECTOR in list(selectors.values())


def _indices(registry: kopf.OperatorRegistry) -> set[str]:
    return {handler.id for handler in registry._indexing.get_all_handlers()}


def test_the_node_index_is_registered_only_with_node_access() -> None:
    assert GPU_NODES_INDEX in _indices(build_registry(watch_gpu_nodes=True))
    assert GPU_NODES_INDEX not in _indices(build_registry(watch_gpu_nodes=False))


class Events:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []

    async def record(self, about: Any, reason: str, message: str, type_: Any = None) -> None:
        self.posted.append((reason, str(type_)))


def test_a_verdict_is_posted_once_even_while_the_cache_shows_the_old_status() -> None:
    control, _ = controller()
    events = Events()
    control._events = cast(Any, events)
    stale = pool("gpu", {"count": 16})  # the cache has not seen our status write yet
    nodes = [observe_gpu_node(gpu_node("hopper", H100))]
    planned = plan_pool(stale, [], NONE, now=T0, gpu_nodes=nodes).status

    async def reconcile_twice() -> None:
        await control._record_gpu_fit(stale, planned)
        await control._record_gpu_fit(stale, planned)

    asyncio.run(reconcile_twice())
    assert events.posted == [("UnsatisfiableGPURequest", "Warning")]
