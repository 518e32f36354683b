"""The `swarmops agent` subcommand: its flags, and running the agent."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from swarmops.agent.config import ENVIRONMENT, ConfigError, load_config

EXIT_USAGE = 2


def add_parser(commands: Any) -> None:
    """Add `agent` to the subcommands of `swarmops`."""
    agent: argparse.ArgumentParser = commands.add_parser(
        "agent",
        help="run an agent: the entry point of an agent pod (docs/agent-runtime.md)",
        description=(
            "Run a SwarmOps agent: HTTP probes, status and metrics on the pod IP, the "
            "operator's claim hand-off, a heartbeat in Redis, and the task loop over the "
            "queue's Redis Streams. Exits 0 after SIGTERM once the current task is done. "
            "Every flag can also be set with an environment variable (shown with each)."
        ),
    )

    def flag(name: str, metavar: str, text: str) -> None:
        agent.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar=metavar,
            help=f"{text} (env {ENVIRONMENT[name]})",
        )

    flag("handler", "MODULE:FUNCTION", "the task handler, e.g. swarmops.agent.examples:echo")
    flag("warmup", "MODULE:FUNCTION", "called once before the agent reports Ready")
    flag("on_claim", "MODULE:FUNCTION", "called with the claim when the pod is bound to one")
    flag("name", "NAME", "consumer and heartbeat name (default: $POD_NAME)")
    flag("bind_address", "IP", "address of the HTTP server (default: $POD_IP, else 0.0.0.0)")
    flag("port", "PORT", "port of the HTTP server (default 8090; 0 picks one)")
    flag("queue", "NAME", "the pool's queue (default: $SWARMOPS_POOL, else 'default')")
    flag("visibility_timeout", "SECONDS", "lease of a running task before others reclaim it (30)")
    flag("max_deliveries", "N", "deliveries before a task is dead-lettered (5)")
    flag("drain_timeout", "SECONDS", "on SIGTERM, time to finish the current task (25)")
    flag("heartbeat_interval", "SECONDS", "heartbeat period; the TTL is three of them (5)")
    flag("result_ttl", "SECONDS", "how long results (and idempotency) are kept (86400)")
    flag("block_seconds", "SECONDS", "longest blocking read on an empty queue (1)")
    flag("log_level", "LEVEL", "DEBUG, INFO (default), WARNING, ERROR")
    flag("log_format", "FORMAT", "text (default) or json")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    flags = {name: getattr(args, name, None) for name in ENVIRONMENT}
    try:
        config = load_config(flags, environ)
    except ConfigError as error:
        print(f"swarmops agent: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # Imported here: `swarmops --help` should not pay for aiohttp and redis.
    from swarmops.agent.worker import Agent, load_callable  # noqa: PLC0415
    from swarmops.logs import configure_logging  # noqa: PLC0415

    level = config.log_level if config.log_level in ("DEBUG", "WARNING", "ERROR") else "INFO"
    configure_logging(level, "json" if config.log_format == "json" else "text")  # type: ignore[arg-type]
    try:
        handler = load_callable(config.handler)
        warmup = load_callable(config.warmup) if config.warmup else None
        on_claim = load_callable(config.on_claim) if config.on_claim else None
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        print(f"swarmops agent: error: cannot load a hook: {error}", file=sys.stderr)
        return EXIT_USAGE
    agent = Agent(config, handler, warmup=warmup, on_claim=on_claim)
    code = asyncio.run(agent.run())
    if agent.abandoned_thread:
        # A plain-function handler outlived the drain timeout; its thread cannot be
        # cancelled and would hold the interpreter's exit. Its task was given back.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
