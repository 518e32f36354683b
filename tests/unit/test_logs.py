"""Log formats: plain text or one JSON object a line, with the object a message is about."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest

from swarmops.logs import NOISY_LOGGERS, JsonFormatter, TextFormatter, configure_logging


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("kopf.objects", logging.WARNING, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


REF = {
    "apiVersion": "swarmops.dev/v1alpha1",
    "kind": "AgentPool",
    "namespace": "team",
    "name": "agents",
    "uid": "u1",
}


def test_json_lines_carry_the_object_and_extras_but_not_kopf_plumbing() -> None:
    line = JsonFormatter().format(
        record("scaled to %d", k8s_ref=REF, k8s_skip=True, settings=object(), pods=3)
    )
    entry = json.loads(line)
    assert entry["message"] == "scaled to %d"
    assert entry["level"] == "WARNING" and entry["logger"] == "kopf.objects"
    assert entry["object"] == REF
    assert entry["pods"] == 3
    assert "settings" not in entry and "k8s_skip" not in entry
    assert entry["time"].endswith("+00:00")


def test_json_lines_include_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord(
            "swarmops", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]


def test_text_lines_are_prefixed_with_the_object() -> None:
    line = TextFormatter().format(record("scaled", k8s_ref=REF))
    assert line.endswith("kopf.objects: [team/agents] scaled")
    assert TextFormatter().format(record("hello")).endswith("kopf.objects: hello")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_routes_everything_through_one_handler(fmt: str) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    quieted = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    stream = io.StringIO()
    try:
        configure_logging("INFO", fmt, stream=stream)  # type: ignore[arg-type]
        logging.getLogger("swarmops.test").info("hello %s", "world")
        logging.getLogger("swarmops.test").debug("hidden")
        logging.getLogger("kopf.objects").info("Handler 'on_pod_event' succeeded.")
        logging.getLogger("kopf.objects").warning("Handler 'on_pod_event' failed.")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, level in quieted.items():
            logging.getLogger(name).setLevel(level)
    output = stream.getvalue()
    assert "hello world" in output and "hidden" not in output
    assert "succeeded" not in output and "failed" in output
    if fmt == "json":
        assert json.loads(output.splitlines()[0])["message"] == "hello world"
