"""Settings: flags over SWARMOPS_* environment variables, validated, with one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.settings import Settings, SettingsError, load_settings

SCOPED = {"namespaces": ["agents"]}


def load(flags: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Settings:
    return load_settings({**SCOPED, **(flags or {})} if flags is not None else SCOPED, env or {})


def test_defaults_are_safe() -> None:
    settings = load()
    assert settings.namespaces == ("agents",)
    assert settings.all_namespaces is False
    assert settings.bind_address == "127.0.0.1"  # nothing exposed beyond loopback by default
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert (settings.health_port, settings.metrics_port) == (8081, 8080)


def test_every_setting_comes_from_the_environment() -> None:
    settings = load_settings(
        {},
        {
            "SWARMOPS_NAMESPACE": "a, b,a",
            "SWARMOPS_KUBECONFIG": "/etc/kube/config",
            "SWARMOPS_CONTEXT": "prod",
            "SWARMOPS_LOG_LEVEL": "debug",
            "SWARMOPS_LOG_FORMAT": "JSON",
            "SWARMOPS_BIND_ADDRESS": "0.0.0.0",
            "SWARMOPS_HEALTH_PORT": "9001",
            "SWARMOPS_METRICS_PORT": "9002",
            "SWARMOPS_RESYNC_INTERVAL": "2.5",
            "SWARMOPS_WORKERS": "3",
        },
    )
    assert settings.namespaces == ("a", "b")
    assert settings.kubeconfig == Path("/etc/kube/config")
    assert settings.context == "prod"
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.bind_address == "0.0.0.0"
    assert (settings.health_port, settings.metrics_port) == (9001, 9002)
    assert settings.resync_interval == 2.5
    assert settings.workers == 3


def test_all_namespaces_from_the_environment() -> None:
    assert load_settings({}, {"SWARMOPS_ALL_NAMESPACES": "true"}).all_namespaces is True


def test_flags_win_over_the_environment() -> None:
    settings = load_settings(
        {"namespaces": ["flag-ns"], "metrics_port": "7000"},
        {"SWARMOPS_NAMESPACE": "env-ns", "SWARMOPS_METRICS_PORT": "7001"},
    )
    assert settings.namespaces == ("flag-ns",)
    assert settings.metrics_port == 7000


def test_empty_environment_values_mean_unset() -> None:
    assert load_settings(SCOPED, {"SWARMOPS_LOG_LEVEL": "  "}).log_level == "INFO"


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ({"metrics_port": "70000"}, {}, "invalid --metrics-port='70000'"),
        ({}, {"SWARMOPS_HEALTH_PORT": "-1"}, "invalid SWARMOPS_HEALTH_PORT='-1'"),
        ({"health_port": "http"}, {}, "invalid --health-port='http'"),
        ({"log_level": "LOUD"}, {}, "invalid --log-level='LOUD'"),
        ({"log_format": "xml"}, {}, "invalid --log-format='xml'"),
        ({"bind_address": "localhost"}, {}, "'localhost' is not an IP address"),
        ({"namespaces": ["Bad_NS"]}, {}, "'Bad_NS' is not a namespace name"),
        ({"resync_interval": "0"}, {}, "invalid --resync-interval='0'"),
        ({"workers": "0"}, {}, "invalid --workers='0'"),
        ({"health_port": "8080", "metrics_port": "8080"}, {}, "both 8080"),
    ],
)
def test_bad_values_give_one_line_naming_the_source(
    flags: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**SCOPED, **flags}, env)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_scope_is_required_and_exclusive() -> None:
    with pytest.raises(SettingsError, match="no scope"):
        load_settings({}, {})
    with pytest.raises(SettingsError, match="not both"):
        load_settings({"all_namespaces": True}, {"SWARMOPS_NAMESPACE": "a"})


def test_namespace_globs_are_accepted() -> None:
    assert load_settings({"namespaces": ["team-*", "!kube-system"]}, {}).namespaces == (
        "team-*",
        "!kube-system",
    )


def test_unknown_flags_are_a_programming_error() -> None:
    with pytest.raises(SettingsError, match="unknown settings: colour"):
        load_settings({**SCOPED, "colour": "blue"}, {})


@given(st.integers())
def test_ports_are_accepted_exactly_in_range(port: int) -> None:
    flags = {**SCOPED, "metrics_port": str(port), "health_port": "0"}
    if 0 <= port <= 65535:
        assert load_settings(flags, {}).metrics_port == port
    else:
        with pytest.raises(SettingsError, match="--metrics-port"):
            load_settings(flags, {})


def test_settings_are_immutable() -> None:
    settings = load()
    with pytest.raises(ValueError, match="frozen"):
        settings.metrics_port = 1  # type: ignore[misc]


def test_prometheus_url_from_flag_or_environment() -> None:
    assert load().prometheus_url is None
    from_env = load_settings(SCOPED, {"SWARMOPS_PROMETHEUS_URL": "http://prom.monitoring:9090/"})
    assert from_env.prometheus_url == "http://prom.monitoring:9090"
    assert load({"prometheus_url": "https://prom:443"}).prometheus_url == "https://prom:443"
    with pytest.raises(SettingsError, match=r"invalid --prometheus-url='prom:9090'.*http\(s\) URL"):
        load({"prometheus_url": "prom:9090"})
