"""Telling agents what they are for: the operator's side of the hand-off.

The claim controller calls `AgentNotifier.notify` right after a bind patch succeeds
(the POST goes out while the claim's status patch is in flight) and on every pool pod
event (`pod_changed`), which makes delivery level-triggered: a cold-started pod gets
its claim once it is Ready, a promoted pod learns it is active, and a POST lost to a
network blip or to an operator restart is sent again on the pod's next event (after a
restart, kopf's initial listing replays every pod, so every agent is told once more;
the agent ignores what it already knows).

Nothing here is on the claim's path: `notify` only schedules a background POST with a
short timeout and a few retries, bounded in concurrency, and never raises. What the
agent is told is decided by pure functions (`assignment_for_pod`, `claim_info`) from
the pod's body and the claim; the wire format is swarmops.agent.contract.

Only pods with a container port named `swarmops-agent` are called: other pools' pods
(any image, kwok's fake pods) are never contacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import aiohttp

from swarmops.agent.contract import (
    ASSIGNMENT_PATH,
    DRAIN_PATH,
    STATUS_PATH,
    AgentEndpoint,
    Assignment,
    ClaimInfo,
    PodRole,
    agent_endpoint,
)
from swarmops.api import AgentClaim
from swarmops.core.claims import ClaimedPod, observe_claimed_pod
from swarmops.core.pods import CLAIM_LABEL, STATE_LABEL
from swarmops.metrics import Metrics

logger = logging.getLogger(__name__)

TIMEOUT_SECONDS: Final = 1.0
# Backoff before each retry: an agent that is just starting its HTTP server, or a
# transient refusal, gets about two seconds in all before the next pod event takes over.
RETRY_DELAYS: Final = (0.05, 0.2, 0.5, 1.0)
CONCURRENCY: Final = 64
MAX_REMEMBERED: Final = 100_000


# --- what to tell (pure) ----------------------------------------------------------------------


def claim_info(
    claim: AgentClaim, pod: ClaimedPod, expires_at: datetime.datetime | None = None
) -> ClaimInfo:
    """The claim as its agent sees it: identity, parameters and the bind's facts
    (`expires_at`: the status being written, when the cached one is older)."""
    return ClaimInfo(
        name=claim.metadata.name,
        namespace=claim.metadata.namespace or "",
        uid=claim.metadata.uid or "",
        parameters=dict(claim.spec.parameters),
        capabilities=tuple(claim.spec.capabilities),
        bound_at=pod.bound_at,
        warm_hit=pod.warm_hit,
        expires_at=expires_at or claim.status.expires_at,
    )


def assignment_for_pod(
    body: Mapping[str, Any], claim: AgentClaim | None
) -> tuple[AgentEndpoint, Assignment] | None:
    """What a pool pod's agent should be told now, from the pod's body (its state label)
    and, for a claimed pod, its claim; None when there is nobody to tell (no agent port,
    no IP yet) or nothing certain to say (a claimed pod whose claim is not known)."""
    endpoint = agent_endpoint(body)
    if endpoint is None:
        return None
    labels: Mapping[str, str] = (body.get("metadata") or {}).get("labels") or {}
    try:
        role = PodRole(labels.get(STATE_LABEL, ""))
    except ValueError:
        return None
    info = None
    if role is PodRole.CLAIMED:
        if claim is None or claim.metadata.name != labels.get(CLAIM_LABEL):
            return None
        pod = observe_claimed_pod(body)
        if not pod.owned_by(claim.metadata.uid):
            return None  # a pod of an earlier claim of the same name, or released
        info = claim_info(claim, pod)
    return endpoint, Assignment(pod=endpoint.pod, pod_uid=endpoint.pod_uid, role=role, claim=info)


# --- reading (I/O) ---------------------------------------------------------------------------


async def agent_status(
    session: aiohttp.ClientSession, endpoint: AgentEndpoint, *, seconds: float = TIMEOUT_SECONDS
) -> dict[str, Any] | None:
    """GET an agent's /status (`state`: starting, idle, busy, draining, stopped; `idle`:
    safe to remove without losing work in progress): what drain-aware scale-down and
    shutdown read. None when the agent does not answer."""
    try:
        async with session.get(
            endpoint.url(STATUS_PATH), timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            if response.status != 200:
                return None
            body = await response.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


async def request_drain(
    session: aiohttp.ClientSession, endpoint: AgentEndpoint, *, seconds: float = TIMEOUT_SECONDS
) -> dict[str, Any] | None:
    """POST the agent's /v1/drain (take no new task, finish the current one) and return
    its /status body, whose `idle` says whether the pod may go now. Repeating it is
    harmless, so a drain is simply asked again at every poll. An agent without the
    endpoint (an older runtime) is only asked for its status. None: no answer."""
    body = {"pod": endpoint.pod, "podUid": endpoint.pod_uid}
    try:
        async with session.post(
            endpoint.url(DRAIN_PATH), json=body, timeout=aiohttp.ClientTimeout(total=seconds)
        ) as response:
            if response.status == 404:
                return await agent_status(session, endpoint, seconds=seconds)
            if response.status != 200:
                return None
            answer = await response.json()
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else None


# --- delivering (I/O) -------------------------------------------------------------------------


class AgentNotifier:
    """POSTs assignments to agents in the background, once per pod and assignment."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        timeout: float = TIMEOUT_SECONDS,
        retry_delays: tuple[float, ...] = RETRY_DELAYS,
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._metrics = metrics
        self._timeout = timeout
        self._retry_delays = retry_delays
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None
        # pod uid -> the assignment key delivered (or being delivered) to it
        self._told: dict[str, tuple[str, str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def notify(self, endpoint: AgentEndpoint, assignment: Assignment) -> bool:
        """Send `assignment` unless this pod was told (or is being told) exactly that;
        True when a POST was scheduled. Never blocks, never raises."""
        if not endpoint.pod_uid or self._told.get(endpoint.pod_uid) == assignment.key:
            return False
        if len(self._told) >= MAX_REMEMBERED:
            # Pods that left the watch without a DELETED event (released with Retain)
            # would otherwise stay here for ever; forgetting costs only repeated POSTs.
            self._told.clear()
        self._told[endpoint.pod_uid] = assignment.key
        task = asyncio.get_running_loop().create_task(self._deliver(endpoint, assignment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def forget(self, pod_uid: str) -> None:
        """The pod is gone."""
        self._told.pop(pod_uid, None)

    async def flush(self) -> None:
        """Wait for the POSTs in flight (and any they lead to)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        if self._session is None or self._limit is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                connector=aiohttp.TCPConnector(limit=self._concurrency, force_close=False),
                # Pod IPs only: no proxy from the operator's environment applies.
                trust_env=False,
            )
            self._limit = asyncio.Semaphore(self._concurrency)
        return self._session, self._limit

    async def _deliver(self, endpoint: AgentEndpoint, assignment: Assignment) -> None:
        session, limit = self._client()
        role = str(assignment.role)
        started = time.perf_counter()
        result = "failed"
        problem = ""
        url = endpoint.url(ASSIGNMENT_PATH)
        try:
            async with limit:
                for delay in (0.0, *self._retry_delays):
                    if delay:
                        await asyncio.sleep(delay)
                    if self._told.get(endpoint.pod_uid) != assignment.key:
                        result = "superseded"  # the pod is gone, or has news since
                        return
                    try:
                        async with session.post(url, json=assignment.to_wire()) as response:
                            if response.status == 200:
                                result = "delivered"
                                return
                            problem = f"HTTP {response.status}: {(await response.text())[:200]}"
                            if 400 <= response.status < 500:
                                result = "refused"
                                return
                    except (aiohttp.ClientError, TimeoutError, OSError) as error:
                        problem = f"{type(error).__name__}: {error}"
        finally:
            seconds = time.perf_counter() - started
            self._metrics.agent_handoffs.labels(role, result).inc()
            self._metrics.agent_handoff_seconds.observe(seconds)
            if result == "delivered":
                logger.debug(
                    "Told agent %s/%s it is %s%s in %.1f ms",
                    endpoint.namespace,
                    endpoint.pod,
                    role,
                    f" for claim {assignment.claim.name}" if assignment.claim else "",
                    seconds * 1000,
                )
            elif result in ("failed", "refused"):
                logger.info(
                    "Could not tell agent %s/%s (%s) it is %s: %s",
                    endpoint.namespace,
                    endpoint.pod,
                    url,
                    role,
                    problem,
                )
                if result == "failed":
                    # Let the pod's next event try again.
                    with contextlib.suppress(KeyError):
                        if self._told[endpoint.pod_uid] == assignment.key:
                            del self._told[endpoint.pod_uid]
