"""The agent's configuration, from flags and the environment (docs/agent-runtime.md).

Pure: `load_config` takes the flags, the environment and a file reader, so tests give it
whatever they like. Every flag has an environment variable; a flag wins.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarmops.agent import contract
from swarmops.agent.contract import PodRole
from swarmops.agent.keys import valid_queue_name


class ConfigError(ValueError):
    """The agent cannot start with this configuration; the message says why."""


@dataclass(frozen=True)
class RedisConfig:
    url: str
    password: str | None = None
    username: str | None = None
    ca_file: str | None = None
    cluster: bool | None = None  # None: ask the server (INFO cluster)

    def __repr__(self) -> str:  # never print the password
        return (
            f"RedisConfig(url={self.url!r}, password={'set' if self.password else 'none'}, "
            f"cluster={self.cluster})"
        )


@dataclass(frozen=True)
class AgentConfig:
    handler: str  # module:function
    warmup: str | None
    on_claim: str | None
    name: str  # the consumer name in the queue and the heartbeat: the pod name
    namespace: str
    pod_uid: str
    bind_address: str
    port: int
    queue: str  # the pool's queue, served while active
    role: PodRole  # before any hand-off
    claim: str | None  # the claim's name at start (cold-started claimed pods)
    redis: RedisConfig | None
    visibility_timeout: float  # a task's lease: reclaimed by others when not renewed
    max_deliveries: int
    drain_timeout: float  # on SIGTERM, how long the current task may take
    heartbeat_interval: float
    result_ttl: float
    block_seconds: float  # how long one blocking read waits before looking around
    log_level: str
    log_format: str


DEFAULTS: Mapping[str, Any] = {
    "port": contract.DEFAULT_AGENT_PORT,
    "visibility_timeout": 30.0,
    "max_deliveries": 5,
    # Kubernetes' default terminationGracePeriodSeconds is 30: finish within it, with room
    # for the acknowledgement and the exit.
    "drain_timeout": 25.0,
    "heartbeat_interval": 5.0,
    "result_ttl": 24 * 3600.0,
    "block_seconds": 1.0,
    "log_level": "INFO",
    "log_format": "text",
}

# flag name -> environment variable
ENVIRONMENT: Mapping[str, str] = {
    "handler": "SWARMOPS_AGENT_HANDLER",
    "warmup": "SWARMOPS_AGENT_WARMUP",
    "on_claim": "SWARMOPS_AGENT_ON_CLAIM",
    "name": "SWARMOPS_AGENT_NAME",
    "bind_address": "SWARMOPS_AGENT_BIND_ADDRESS",
    "port": "SWARMOPS_AGENT_PORT",
    "queue": contract.ENV_QUEUE,
    "visibility_timeout": "SWARMOPS_VISIBILITY_TIMEOUT_SECONDS",
    "max_deliveries": "SWARMOPS_MAX_DELIVERIES",
    "drain_timeout": "SWARMOPS_DRAIN_TIMEOUT_SECONDS",
    "heartbeat_interval": "SWARMOPS_HEARTBEAT_SECONDS",
    "result_ttl": "SWARMOPS_RESULT_TTL_SECONDS",
    "block_seconds": "SWARMOPS_BLOCK_SECONDS",
    "log_level": "SWARMOPS_LOG_LEVEL",
    "log_format": "SWARMOPS_LOG_FORMAT",
}


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def load_config(
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    read_file: Callable[[str], str | None] = _read_text,
) -> AgentConfig:
    def value(name: str) -> Any:
        flag = flags.get(name)
        if flag is not None:
            return flag
        env = environ.get(ENVIRONMENT[name], "").strip()
        if env:
            return env
        return DEFAULTS.get(name)

    handler = value("handler")
    if not handler:
        raise ConfigError("--handler module:function is required (env SWARMOPS_AGENT_HANDLER)")
    for field in ("handler", "warmup", "on_claim"):
        target = value(field)
        if target is not None and ":" not in str(target):
            raise ConfigError(f"--{field.replace('_', '-')} {target!r}: expected module:function")

    name = (
        value("name")
        or environ.get(contract.ENV_POD_NAME)
        or f"{environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}"
    )
    pool = environ.get(contract.ENV_POOL, "").strip()
    queue = str(value("queue") or pool or "default")
    if not valid_queue_name(queue):
        raise ConfigError(f"queue {queue!r}: letters, digits and ._:/- only (max 200)")
    role_text = environ.get(contract.ENV_POD_STATE, "").strip() or PodRole.ACTIVE
    try:
        role = PodRole(role_text)
    except ValueError:
        raise ConfigError(
            f"{contract.ENV_POD_STATE}={role_text!r}: one of warm, active, claimed"
        ) from None
    claim = environ.get(contract.ENV_CLAIM, "").strip() or None

    bind = value("bind_address") or environ.get(contract.ENV_POD_IP) or "0.0.0.0"
    numbers = {
        "port": _number(value, "port", int, 0, 65535),
        "visibility_timeout": _number(value, "visibility_timeout", float, 0.1, 86400),
        "max_deliveries": _number(value, "max_deliveries", int, 1, 1000),
        "drain_timeout": _number(value, "drain_timeout", float, 0, 86400),
        "heartbeat_interval": _number(value, "heartbeat_interval", float, 0.05, 3600),
        "result_ttl": _number(value, "result_ttl", float, 1, 365 * 86400),
        "block_seconds": _number(value, "block_seconds", float, 0.01, 60),
    }
    return AgentConfig(
        handler=str(handler),
        warmup=value("warmup"),
        on_claim=value("on_claim"),
        name=str(name),
        namespace=environ.get(contract.ENV_POD_NAMESPACE, ""),
        pod_uid=environ.get(contract.ENV_POD_UID, ""),
        bind_address=str(bind),
        queue=queue,
        role=role,
        claim=claim,
        redis=redis_config(environ, read_file),
        log_level=str(value("log_level")).upper(),
        log_format=str(value("log_format")).lower(),
        **numbers,
    )


def redis_config(
    environ: Mapping[str, str], read_file: Callable[[str], str | None] = _read_text
) -> RedisConfig | None:
    """Where the queues are, and how to log in: the contract of docs/agent-runtime.md."""
    url = environ.get(contract.ENV_REDIS_URL, "").strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"{contract.ENV_REDIS_URL}: expected redis://, rediss:// or unix://")
    password: str | None = None
    password_file = environ.get(contract.ENV_REDIS_PASSWORD_FILE, "").strip()
    if password_file:
        text = read_file(password_file)
        if text is None:
            raise ConfigError(f"{contract.ENV_REDIS_PASSWORD_FILE}: {password_file} not found")
        password = text.strip()
    elif environ.get(contract.ENV_REDIS_PASSWORD):
        password = environ[contract.ENV_REDIS_PASSWORD]
    else:
        text = read_file(contract.DEFAULT_REDIS_PASSWORD_FILE)
        password = text.strip() if text is not None else None
    ca_file = environ.get(contract.ENV_REDIS_CA_FILE, "").strip() or None
    default_ca = read_file(contract.DEFAULT_REDIS_CA_FILE) if url.startswith("rediss://") else None
    if ca_file is None and default_ca is not None:
        ca_file = contract.DEFAULT_REDIS_CA_FILE
    mode = environ.get(contract.ENV_REDIS_CLUSTER, "auto").strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"{contract.ENV_REDIS_CLUSTER}={mode!r}: auto, true or false")
    return RedisConfig(
        url=url,
        password=password or None,
        username=environ.get(contract.ENV_REDIS_USERNAME, "").strip() or None,
        ca_file=ca_file,
        cluster=None if mode == "auto" else mode == "true",
    )


def _number(
    value: Callable[[str], Any], name: str, kind: type[int] | type[float], low: float, high: float
) -> Any:
    raw = value(name)
    try:
        number = kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name.replace('_', '-')}={raw!r}: not a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{name.replace('_', '-')}={raw!r}: between {low:g} and {high:g}")
    return number
