"""Validated settings of `swarmops gpu-agent`.

As for `swarmops run`: every setting is a flag or an environment variable
`SWARMOPS_<NAME>` (flags win), validated once by pydantic. The node name also comes
from `NODE_NAME`, the name the downward API usually gives it in a DaemonSet.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from swarmops.gpu.health import Policy, parse_xid_overrides
from swarmops.settings import (
    CommaSeparated,
    IpAddress,
    LogFormat,
    LogLevel,
    Port,
    SettingsError,
    gather_settings,
    source_of,
    validate_settings,
)

NODE_NAME_ENV = "NODE_NAME"
DEFAULT_METRICS_PORT = 9402


class GpuAgentSettings(BaseModel):
    """What `swarmops gpu-agent` needs to know, already checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node_name: str = Field(min_length=1, max_length=253)
    kubeconfig: Path | None = None
    context: str | None = None
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    bind_address: IpAddress = "127.0.0.1"
    metrics_port: Port = DEFAULT_METRICS_PORT
    poll_interval: float = Field(default=10.0, ge=0.5, le=3600)
    heartbeat_interval: float = Field(default=30.0, ge=1, le=3600)
    #: GPUs the node should have; None: the node's `nvidia.com/gpu.count` label.
    expected_gpus: int | None = Field(default=None, ge=0, le=1024)
    #: XID table entries over the defaults: CODE=LEVEL[/RECOVERY].
    xid: CommaSeparated = ()
    temperature_margin: int = Field(default=5, ge=0, le=50)
    sustained_polls: int = Field(default=3, ge=1, le=1000)
    xid_hold: float = Field(default=600.0, ge=0, le=7 * 24 * 3600)
    #: A poll that takes longer than this (a hung driver) makes the node UNKNOWN.
    nvml_timeout: float = Field(default=30.0, ge=1, le=3600)

    @field_validator("xid")
    @classmethod
    def _check_xids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        parse_xid_overrides(value)  # raises ValueError with the bad entry
        return value

    @model_validator(mode="after")
    def _check_intervals(self) -> GpuAgentSettings:
        if self.heartbeat_interval < self.poll_interval:
            raise ValueError(
                f"the heartbeat interval ({self.heartbeat_interval:g}s) is shorter than the "
                f"poll interval ({self.poll_interval:g}s)"
            )
        return self

    def policy(self) -> Policy:
        base = Policy()
        return Policy(
            xids={**base.xids, **parse_xid_overrides(self.xid)},
            temperature_margin_c=self.temperature_margin,
            sustained_polls=self.sustained_polls,
            xid_hold_seconds=self.xid_hold,
        )


def load_agent_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> GpuAgentSettings:
    """Merge flags over `SWARMOPS_*` (and `NODE_NAME`) and validate; `SettingsError` names
    the flag or variable at fault in one line."""
    given = gather_settings(
        GpuAgentSettings, flags, environ, fallback_env={"node_name": NODE_NAME_ENV}
    )
    if "node_name" not in given.values:
        raise SettingsError(
            f"no node name: give {source_of('node_name').flag}, or set {NODE_NAME_ENV} "
            "(the downward API's spec.nodeName)"
        )
    return validate_settings(GpuAgentSettings, given)
