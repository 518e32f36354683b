"""The agent's HTTP side in-process, without Redis: probes through warm-up and stop, the
status it reports, and how it takes (or refuses) the operator's assignments."""

from __future__ import annotations

import asyncio
import datetime
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from swarmops.agent.config import load_config
from swarmops.agent.contract import Assignment, ClaimInfo, PodRole
from swarmops.agent.worker import Agent


def make_agent(**env: str) -> tuple[Agent, threading.Event, list[ClaimInfo]]:
    warmed = threading.Event()
    claims: list[ClaimInfo] = []
    config = load_config(
        {"handler": "swarmops.agent.examples:echo", "port": 0, "bind_address": "127.0.0.1"},
        {"POD_NAME": "pod-a", "POD_UID": "uid-a", **env},
        lambda _: None,
    )
    agent = Agent(
        config,
        handler=lambda task: None,
        warmup=lambda: warmed.wait(10),
        on_claim=claims.append,
    )
    return agent, warmed, claims


async def until(check: Callable[[], Any], seconds: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


class Running:
    def __init__(self, agent: Agent, session: aiohttp.ClientSession) -> None:
        self.agent = agent
        self.session = session

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.agent.port}{path}"

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.json()

    async def post(self, body: Any) -> tuple[int, Any]:
        async with self.session.post(self.url("/v1/assignment"), json=body) as response:
            return response.status, await response.json()


@pytest.fixture
def scenario() -> Callable[[Callable[[Running, threading.Event, list[ClaimInfo]], Any]], None]:
    def run(body: Callable[[Running, threading.Event, list[ClaimInfo]], Any]) -> None:
        async def main() -> None:
            agent, warmed, claims = make_agent(SWARMOPS_POD_STATE="warm")
            task = asyncio.ensure_future(agent.run())
            try:
                await until(lambda: agent.port is not None)
                async with aiohttp.ClientSession() as session:
                    await body(Running(agent, session), warmed, claims)
            finally:
                warmed.set()
                agent.stop()
                assert await asyncio.wait_for(task, 10) == 0

        asyncio.run(main())

    return run


def test_not_ready_until_warmed_then_ready_then_not_when_stopping(scenario: Any) -> None:
    async def body(agent: Running, warmed: threading.Event, _: Any) -> None:
        assert (await agent.get("/healthz"))[0] == 200
        status, ready = await agent.get("/readyz")
        assert (status, ready["state"]) == (503, "starting")
        warmed.set()
        await until(lambda: agent.agent.state.value == "idle")
        assert (await agent.get("/readyz"))[0] == 200
        status, report = await agent.get("/status")
        assert report["state"] == "idle" and report["idle"] and report["role"] == "warm"
        assert report["queue"] is None  # no Redis, and warm: serves nothing
        metrics = await (await agent.session.get(agent.url("/metrics"))).text()
        assert 'swarmops_agent_state{state="idle"} 1.0' in metrics

    scenario(body)


def wire(pod: str = "pod-a", uid: str = "uid-a", claim: str | None = "session") -> Any:
    if claim is None:
        return Assignment(pod, uid, PodRole.ACTIVE).to_wire()
    bound = datetime.datetime.now(datetime.UTC) - datetime.timedelta(milliseconds=5)
    info = ClaimInfo(claim, "team", f"uid-{claim}", {"repo": "r"}, ("python",), bound, True)
    return Assignment(pod, uid, PodRole.CLAIMED, info).to_wire()


def test_a_claim_is_taken_once_and_kept(scenario: Any) -> None:
    async def body(agent: Running, warmed: threading.Event, claims: list[ClaimInfo]) -> None:
        warmed.set()
        await until(lambda: agent.agent.state.value == "idle")
        assert await agent.post(wire()) == (200, {"changed": True, "state": "idle"})
        assert (await agent.post(wire()))[1]["changed"] is False  # a repeat: no-op
        _, report = await agent.get("/status")
        assert report["role"] == "claimed"
        assert report["claim"]["parameters"] == {"repo": "r"}
        assert "claimReceivedAt" in report
        await until(lambda: claims)
        assert [c.name for c in claims] == ["session"]  # the on-claim hook, once
        # Claimed for good: another claim, or a demotion, is refused.
        assert (await agent.post(wire(claim="other")))[0] == 409
        assert (await agent.post(wire(claim=None)))[0] == 409

    scenario(body)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (wire(pod="pod-b"), 409),  # an address reused by another pod
        (wire(uid="uid-old"), 409),  # a previous pod of the same name
        ({"pod": {"name": "pod-a", "uid": "uid-a"}, "role": "claimed"}, 400),
        ("not an object", 400),
    ],
)
def test_assignments_not_for_this_agent_are_refused(scenario: Any, body: Any, status: int) -> None:
    async def run(agent: Running, warmed: threading.Event, _: Any) -> None:
        warmed.set()
        assert (await agent.post(body))[0] == status
        assert (await agent.get("/status"))[1]["role"] == "warm"

    scenario(run)
