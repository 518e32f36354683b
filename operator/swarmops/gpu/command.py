"""The `swarmops gpu-agent` subcommand: its flags, and running it."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from swarmops.commandline import flags_of, start
from swarmops.gpu.settings import DEFAULT_METRICS_PORT, GpuAgentSettings, load_agent_settings


def add_parser(commands: Any) -> None:
    """Add `gpu-agent` to the subcommands of `swarmops`."""
    agent: argparse.ArgumentParser = commands.add_parser(
        "gpu-agent",
        help="run the GPU health agent of one node (the DaemonSet's command)",
        description=(
            "Watch this node's GPUs through NVML (XID events and a poll loop) and publish "
            "their health on the Node: condition SwarmOpsGPUHealthy, annotation "
            "swarmops.dev/gpu-health-report, and Prometheus metrics. Every flag can also be "
            "set with SWARMOPS_<FLAG>; the node name also with NODE_NAME."
        ),
    )
    agent.add_argument("--node-name", metavar="NAME", help="this node (env: NODE_NAME)")
    agent.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig file (default as `run`)")
    agent.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    agent.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING")
    agent.add_argument("--log-format", metavar="FORMAT", help="text (default) or json")
    agent.add_argument(
        "--bind-address", metavar="IP", help="address of /metrics and /healthz (127.0.0.1)"
    )
    agent.add_argument(
        "--metrics-port",
        metavar="PORT",
        help=f"port of /metrics and /healthz (default {DEFAULT_METRICS_PORT}; 0: off)",
    )
    agent.add_argument("--poll-interval", metavar="SECONDS", help="poll NVML this often (10)")
    agent.add_argument(
        "--heartbeat-interval",
        metavar="SECONDS",
        help="rewrite an unchanged report this often (30; at least the poll interval)",
    )
    agent.add_argument(
        "--expected-gpus",
        metavar="N",
        help="GPUs the node should have (default: its nvidia.com/gpu.count label)",
    )
    agent.add_argument(
        "--xid",
        action="append",
        metavar="CODE=LEVEL[/RECOVERY]",
        help="override the XID table, e.g. 94=warn, 31=ignore, 48=critical/gpu-reset "
        "(repeatable; env SWARMOPS_XID comma-separated)",
    )
    agent.add_argument(
        "--temperature-margin",
        metavar="C",
        help="WARN this many degrees below the slowdown threshold (5)",
    )
    agent.add_argument(
        "--sustained-polls",
        metavar="N",
        help="polls of hardware slowdown before a GPU is DEGRADED (3)",
    )
    agent.add_argument(
        "--xid-hold",
        metavar="SECONDS",
        help="how long an XID that needs no reset keeps its level (600)",
    )
    agent.add_argument(
        "--nvml-timeout",
        metavar="SECONDS",
        help="a poll hung this long makes the node UNKNOWN (30)",
    )


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> GpuAgentSettings:
    return load_agent_settings(flags_of(args, GpuAgentSettings), environ)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    def connect(settings: GpuAgentSettings) -> Callable[[], None]:
        # Imported here: pynvml and the Kubernetes client are only the agent's business.
        from swarmops.gpu.agent import load_credentials, run_agent  # noqa: PLC0415

        credentials = load_credentials(settings, environ)
        return lambda: run_agent(settings, credentials)

    return start("gpu-agent", lambda: settings_from_args(args, environ), connect)
