"""Validated settings of `swarmops run`, and how every command's settings are loaded.

Every setting comes from a command-line flag or from an environment variable
`SWARMOPS_<NAME>` (flags win), and is validated by pydantic once, at the edge,
so the rest of the operator only ever sees a well-formed, immutable `Settings`.
`swarmops gpu-agent` loads its own model (`swarmops.gpu.settings`) the same way.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "SWARMOPS_"


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _check_ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


# The types of settings that more than one command has (`run`, `gpu-agent`); words are
# accepted in any case, as people type them in flags and manifests.
LogLevel = Annotated[
    Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
]
LogFormat = Annotated[Literal["text", "json"], BeforeValidator(_lower)]
GpuReactionMode = Annotated[Literal["on", "dry-run", "off"], BeforeValidator(_lower)]
Port = Annotated[int, Field(ge=0, le=65535)]
IpAddress = Annotated[str, AfterValidator(_check_ip_address)]
# A list: repeated flags, or one environment variable with commas between the items.
CommaSeparated = Annotated[tuple[str, ...], BeforeValidator(_split_commas)]

# A namespace name (DNS-1123 label), or one of kopf's glob patterns over such names
# ("team-*", "!kube-system"), so one operator can serve a family of namespaces.
_NAMESPACE_PATTERN = re.compile(r"^!?[a-z0-9*?]([-a-z0-9*?]{0,61}[a-z0-9*?])?$")


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line, meant for a person."""


class Settings(BaseModel):
    """What `swarmops run` needs to know, already checked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespaces: CommaSeparated = ()
    all_namespaces: bool = False
    kubeconfig: Path | None = None
    context: str | None = None
    log_level: LogLevel = "INFO"
    log_format: LogFormat = "text"
    bind_address: IpAddress = "127.0.0.1"
    health_port: Port = 8081
    metrics_port: Port = 8080
    resync_interval: float = Field(default=60.0, gt=0, le=24 * 3600)
    # Reconciles are I/O-bound (a claim's is two API calls): with 8, a loaded apiserver
    # capped binds at 8 / (call latency); docs/benchmarks.md has the measurements.
    workers: int = Field(default=32, ge=1, le=256)
    # The reaction to GPU health reports (docs/gpu.md): taints, evictions, clearing.
    gpu_reaction: GpuReactionMode = "on"
    gpu_clean_reports: int = Field(default=3, ge=1, le=1000)
    gpu_unknown_grace: float = Field(default=120.0, ge=0, le=24 * 3600)
    gpu_max_quarantined_percent: float = Field(default=50.0, ge=0, le=100)
    gpu_breaker_window: float = Field(default=300.0, gt=0, le=7 * 24 * 3600)
    # Where canary analysis metrics are measured unless a metric names its own address.
    prometheus_url: str | None = Field(default=None, max_length=2048)

    @field_validator("namespaces")
    @classmethod
    def _check_namespaces(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _NAMESPACE_PATTERN.match(name):
                raise ValueError(f"{name!r} is not a namespace name (DNS-1123 label) or pattern")
        return tuple(dict.fromkeys(value))

    @field_validator("prometheus_url")
    @classmethod
    def _check_prometheus_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL such as http://prometheus:9090")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_scope(self) -> Settings:
        if self.namespaces and self.all_namespaces:
            raise ValueError("give either namespaces or all namespaces, not both")
        if not self.namespaces and not self.all_namespaces:
            # Watching the whole cluster by accident is the expensive and risky default;
            # make the scope an explicit choice.
            raise ValueError("no scope: give --namespace NAME (repeatable) or --all-namespaces")
        if self.health_port and self.health_port == self.metrics_port:
            raise ValueError(f"health and metrics ports are both {self.health_port}")
        return self


@dataclass(frozen=True)
class SettingSource:
    """Where a setting's value came from, to name it in error messages."""

    flag: str
    env: str


def source_of(field_name: str) -> SettingSource:
    flag = "--" + ("namespace" if field_name == "namespaces" else field_name.replace("_", "-"))
    env = ENV_PREFIX + ("NAMESPACE" if field_name == "namespaces" else field_name.upper())
    return SettingSource(flag=flag, env=env)


SettingsT = TypeVar("SettingsT", bound=BaseModel)


@dataclass(frozen=True)
class GivenSettings:
    """Settings as given, not yet validated, and where each came from."""

    values: dict[str, Any]
    #: field name -> the flag or environment variable that gave it, for error messages
    origin: dict[str, str]


def gather_settings(
    model: type[BaseModel],
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    fallback_env: Mapping[str, str] | None = None,
) -> GivenSettings:
    """Merge flags over `SWARMOPS_*` environment variables, for the fields of `model`.

    `flags` maps field names to values given on the command line; `None` (or an
    empty list) means "not given", so the environment variable or the default applies.
    A blank variable is not given either. `fallback_env` names a field's second
    variable, read when its `SWARMOPS_*` one is not set.
    """
    unknown = set(flags) - set(model.model_fields)
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(sorted(unknown))}")
    fallbacks = fallback_env or {}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name in model.model_fields:
        given = flags.get(name)
        if given is not None and given not in ([], ()):
            values[name] = tuple(given) if isinstance(given, list) else given
            origin[name] = source_of(name).flag
            continue
        variables = [source_of(name).env]
        if name in fallbacks:
            variables.append(fallbacks[name])
        for variable in variables:
            raw = environ.get(variable, "").strip()
            if raw:
                values[name] = raw
                origin[name] = variable
                break
    return GivenSettings(values=values, origin=origin)


def validate_settings(model: type[SettingsT], given: GivenSettings) -> SettingsT:
    """`model` from `given`; raises `SettingsError` with a one-line message naming the
    flag or variable at fault."""
    try:
        return model.model_validate(given.values)
    except ValidationError as error:
        raise SettingsError(_describe(error, given)) from None


def load_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """The settings of `swarmops run`: flags over `SWARMOPS_*` variables (see
    `gather_settings`), validated; raises `SettingsError`."""
    return validate_settings(Settings, gather_settings(Settings, flags, environ))


def _describe(error: ValidationError, given: GivenSettings) -> str:
    first = error.errors(include_url=False)[0]
    location = [str(part) for part in first["loc"] if isinstance(part, str)]
    message = first["msg"].removeprefix("Value error, ")
    if not location:
        return message
    name = location[0]
    where = given.origin.get(name) or source_of(name).flag
    shown = given.values.get(name)
    if isinstance(shown, tuple):
        shown = ",".join(str(item) for item in shown)
    return f"invalid {where}={shown!r}: {message}" if shown is not None else f"{where}: {message}"
