"""The operator's services, built once per operator and kept in kopf's memo.

kopf hands every handler a `memo`; ours carries one `Services`. The credentials,
metrics and expectations exist from the start; the API client, the event recorder
and the controllers are built in the startup handler (they need the running loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from swarmops.analysis.prometheus import PrometheusProvider
from swarmops.core.expectations import ExpectationsStore
from swarmops.kube.auth import Credentials
from swarmops.kube.client import KubeClient
from swarmops.kube.events import EventRecorder
from swarmops.metrics import HttpEndpoint, Metrics
from swarmops.settings import Settings

if TYPE_CHECKING:
    from swarmops.handlers.claims import ClaimController
    from swarmops.handlers.gpu_health import GpuHealthReactor
    from swarmops.handlers.pools import PoolController
    from swarmops.handlers.redisclusters import RedisController
    from swarmops.handlers.swarms import SwarmController

MEMO_KEY = "swarmops"


class NotStartedError(RuntimeError):
    """A service was used before the startup handler built it."""


@dataclass
class Services:
    settings: Settings
    credentials: Credentials
    metrics: Metrics = field(default_factory=Metrics)
    expectations: ExpectationsStore = field(default_factory=ExpectationsStore)
    client: KubeClient | None = None
    events: EventRecorder | None = None
    pools: PoolController | None = None
    claims: ClaimController | None = None
    gpu_reactor: GpuHealthReactor | None = None  # None: no GPU health reaction
    redis: RedisController | None = None  # None: RedisClusters not served (no access)
    swarms: SwarmController | None = None
    metrics_endpoint: HttpEndpoint | None = None
    # Measures canary analysis metrics; its HTTP session opens on first use.
    prometheus: PrometheusProvider = field(
        default_factory=lambda: PrometheusProvider(default_address=None)
    )
    ready: bool = False

    def pool_controller(self) -> PoolController:
        if self.pools is None:
            raise NotStartedError("the pool controller is not started")
        return self.pools

    def claim_controller(self) -> ClaimController:
        if self.claims is None:
            raise NotStartedError("the claim controller is not started")
        return self.claims

    def swarm_controller(self) -> SwarmController:
        if self.swarms is None:
            raise NotStartedError("the Swarm controller is not started")
        return self.swarms

    def redis_controller(self) -> RedisController:
        if self.redis is None:
            raise NotStartedError("the RedisCluster controller is not started")
        return self.redis


def services_of(memo: Any) -> Services:
    """Our services from kopf's memo (a `kopf.Memo`, i.e. a dict with attribute access)."""
    services = memo.get(MEMO_KEY) if hasattr(memo, "get") else None
    if not isinstance(services, Services):
        raise NotStartedError("kopf's memo carries no swarmops services")
    return services
