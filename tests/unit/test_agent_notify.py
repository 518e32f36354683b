"""The operator's side of the hand-off against a real HTTP server on loopback: one POST per
pod and assignment, retries on failure, no retry on refusal, and a failed delivery tried
again by the next pod event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp.web

from swarmops.agent.contract import AgentEndpoint, Assignment, ClaimInfo, PodRole
from swarmops.handlers.agentnotify import AgentNotifier, agent_status
from swarmops.metrics import Metrics


async def serve(answers: list[int]) -> tuple[aiohttp.web.AppRunner, int, list[Any]]:
    """An agent stand-in answering with `answers` in turn (then 200), recording bodies."""
    received: list[Any] = []

    async def post(request: aiohttp.web.Request) -> aiohttp.web.Response:
        received.append(await request.json())
        status = answers.pop(0) if answers else 200
        return aiohttp.web.json_response({}, status=status)

    app = aiohttp.web.Application()
    app.add_routes([aiohttp.web.post("/v1/assignment", post)])
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1]), received


def run(body: Callable[[AgentNotifier, Metrics], Awaitable[None]]) -> None:
    async def main() -> None:
        metrics = Metrics()
        notifier = AgentNotifier(metrics, timeout=1.0, retry_delays=(0.01, 0.01))
        try:
            await body(notifier, metrics)
        finally:
            await notifier.close()

    asyncio.run(main())


def claimed(claim: str = "c") -> Assignment:
    return Assignment("pod", "pod-uid", PodRole.CLAIMED, ClaimInfo(claim, "ns", f"{claim}-uid"))


def count(metrics: Metrics, role: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "swarmops_agent_handoffs_total", {"role": role, "result": result}
    )
    return value or 0.0


def test_one_post_per_pod_and_assignment() -> None:
    async def body(notifier: AgentNotifier, metrics: Metrics) -> None:
        runner, port, received = await serve([])
        endpoint = AgentEndpoint("pod", "ns", "pod-uid", "127.0.0.1", port)
        assert notifier.notify(endpoint, claimed())
        assert not notifier.notify(endpoint, claimed())  # in flight: not again
        await notifier.flush()
        assert not notifier.notify(endpoint, claimed())  # delivered: not again
        assert notifier.notify(endpoint, Assignment("pod", "pod-uid", PodRole.ACTIVE))
        await notifier.flush()
        assert [r["role"] for r in received] == ["claimed", "active"]
        assert received[0]["claim"]["uid"] == "c-uid"
        assert count(metrics, "claimed", "delivered") == 1
        notifier.forget("pod-uid")  # the pod is gone; a new pod of that uid is news
        assert notifier.notify(endpoint, Assignment("pod", "pod-uid", PodRole.ACTIVE))
        await notifier.flush()
        await runner.cleanup()

    run(body)


def test_server_errors_are_retried_refusals_are_not() -> None:
    async def body(notifier: AgentNotifier, metrics: Metrics) -> None:
        runner, port, received = await serve([503, 500])
        endpoint = AgentEndpoint("pod", "ns", "pod-uid", "127.0.0.1", port)
        notifier.notify(endpoint, claimed())
        await notifier.flush()
        assert len(received) == 3 and count(metrics, "claimed", "delivered") == 1
        await runner.cleanup()

        runner, port, received = await serve([409])
        other = AgentEndpoint("pod2", "ns", "pod2-uid", "127.0.0.1", port)
        notifier.notify(other, Assignment("pod2", "pod2-uid", PodRole.WARM))
        await notifier.flush()
        assert len(received) == 1 and count(metrics, "warm", "refused") == 1
        await runner.cleanup()

    run(body)


def test_an_unreachable_agent_is_tried_again_by_the_next_event() -> None:
    async def body(notifier: AgentNotifier, metrics: Metrics) -> None:
        runner, port, _ = await serve([])
        await runner.cleanup()  # nobody listens on that port any more
        endpoint = AgentEndpoint("pod", "ns", "pod-uid", "127.0.0.1", port)
        assert notifier.notify(endpoint, claimed())
        await notifier.flush()
        assert count(metrics, "claimed", "failed") == 1
        assert notifier.notify(endpoint, claimed())  # forgotten: the next event retries
        await notifier.flush()

    run(body)


def test_the_idle_signal_is_read_from_the_agent() -> None:
    async def body(notifier: AgentNotifier, metrics: Metrics) -> None:
        async def status(_: aiohttp.web.Request) -> aiohttp.web.Response:
            return aiohttp.web.json_response({"state": "busy", "idle": False})

        app = aiohttp.web.Application()
        app.add_routes([aiohttp.web.get("/status", status)])
        runner = aiohttp.web.AppRunner(app, access_log=None)
        await runner.setup()
        await aiohttp.web.TCPSite(runner, "127.0.0.1", 0).start()
        port = int(runner.addresses[0][1])
        async with aiohttp.ClientSession() as session:
            endpoint = AgentEndpoint("pod", "ns", "uid", "127.0.0.1", port)
            assert await agent_status(session, endpoint) == {"state": "busy", "idle": False}
            await runner.cleanup()
            assert await agent_status(session, endpoint, seconds=0.5) is None

    run(body)
