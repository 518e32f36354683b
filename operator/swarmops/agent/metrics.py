"""The agent's Prometheus metrics, in a registry of its own (several agents may run in
one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from swarmops.agent.scheduling import AgentState

TASK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tasks = Counter(
            "swarmops_agent_tasks_total",
            "Tasks this agent finished, by queue, priority and outcome: ok, error (the "
            "handler raised), duplicate (the key was done already: no effect), retried "
            "(the handler asked for it), released (given back unfinished on shutdown), "
            "dead (delivered too often, dead-lettered).",
            ["queue", "priority", "outcome"],
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "swarmops_agent_task_duration_seconds",
            "Time the handler took, by queue and priority.",
            ["queue", "priority"],
            buckets=TASK_BUCKETS,
            registry=self.registry,
        )
        self.wait_seconds = Histogram(
            "swarmops_agent_task_wait_seconds",
            "From submission to the handler starting, by queue and priority (clocks of the "
            "producer and the agent).",
            ["queue", "priority"],
            buckets=TASK_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "swarmops_agent_task_errors_total",
            "Handler exceptions, by queue and exception type.",
            ["queue", "type"],
            registry=self.registry,
        )
        self.reclaimed = Counter(
            "swarmops_agent_tasks_reclaimed_total",
            "Tasks taken over from an agent whose lease ran out, by queue.",
            ["queue"],
            registry=self.registry,
        )
        self.leases_lost = Counter(
            "swarmops_agent_leases_lost_total",
            "Running tasks another agent took over (a renewal came too late); the "
            "idempotency key keeps the effect single.",
            ["queue"],
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "swarmops_agent_redis_errors_total",
            "Redis calls that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.state = Gauge(
            "swarmops_agent_state",
            "1 for the agent's current state (starting, idle, busy, draining, stopped).",
            ["state"],
            registry=self.registry,
        )
        self.warmup_seconds = Gauge(
            "swarmops_agent_warmup_seconds",
            "How long the warm-up hook took.",
            registry=self.registry,
        )
        self.handoff_seconds = Histogram(
            "swarmops_agent_claim_handoff_seconds",
            "From the claim's bound-at (the operator's clock) to the agent receiving it.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30),
            registry=self.registry,
        )
        self.assignments = Counter(
            "swarmops_agent_assignments_total",
            "Assignments received from the operator, by role and whether they changed anything.",
            ["role", "changed"],
            registry=self.registry,
        )
        self.heartbeat_failures = Counter(
            "swarmops_agent_heartbeat_failures_total",
            "Heartbeats that could not be written.",
            registry=self.registry,
        )

    def set_state(self, state: AgentState) -> None:
        for each in AgentState:
            self.state.labels(str(each)).set(1 if each is state else 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
