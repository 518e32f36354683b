"""Process-wide logging setup for `swarmops run`: plain text or one JSON object a line."""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any, TextIO

from swarmops.settings import LogFormat, LogLevel

# Attributes every LogRecord has; anything else was passed via `extra=` and is worth keeping.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


# kopf's per-object loggers pass `k8s_ref` (the object a message is about) plus two
# attributes that are its own plumbing (and `settings` would dump its whole config).
_KOPF_INTERNALS = frozenset({"k8s_skip", "settings"})


def _object_ref(record: logging.LogRecord) -> str | None:
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    namespace = ref.get("namespace")
    return f"{namespace}/{ref['name']}" if namespace else str(ref["name"])


class TextFormatter(logging.Formatter):
    """Plain lines, prefixed with the object a message is about (as kopf does)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        ref = _object_ref(record)
        if ref is None:
            return super().formatMessage(record)
        prefixed = logging.makeLogRecord(record.__dict__)
        prefixed.message = f"[{ref}] {record.message}"
        return super().formatMessage(prefixed)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the Kubernetes object a message is about, when known."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key in _KOPF_INTERNALS or key.startswith("_"):
                continue
            entry["object" if key == "k8s_ref" else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


NOISY_LOGGERS = ("asyncio", "aiohttp.access", "kopf.objects", "kopf.activities.probe")


class HandlerSuccessFilter(logging.Filter):
    """Drops kopf's INFO line "Handler '...' succeeded.".

    SwarmOps' kopf handlers are all watch-event and index handlers that only put a key
    on a work queue, so that line comes once per watch event of every pod, claim and
    pool: at 100 claims a second, hundreds of lines a second that say nothing (the
    reconciles log what they do). A filter rather than a level, so that kopf's other
    INFO lines about objects, and every warning and error, still show; and installed
    by the runtime, so embedded operators (tests, benchmarks) are quiet too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        message = record.msg if isinstance(record.msg, str) else ""
        return not (message.startswith("Handler ") and message.endswith(" succeeded."))


def quiet_kopf_handler_successes() -> None:
    """Install `HandlerSuccessFilter` on kopf's per-object logger, once per process."""
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, HandlerSuccessFilter) for f in objects.filters):
        objects.addFilter(HandlerSuccessFilter())


def make_formatter(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(
    level: LogLevel, log_format: LogFormat, *, stream: TextIO | None = None
) -> logging.Handler:
    """Route all logs (ours, kopf's, aiohttp's) through one handler on the root logger.

    Only `swarmops run` calls this; an operator embedded in tests leaves the host's
    logging alone and is observed through its own handlers.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Below DEBUG these are a firehose: aiohttp's per-request lines, kopf's "Handler ...
    # succeeded" for every watch event of every pod and "Activity ... succeeded" for
    # every liveness probe. Their warnings and errors (a handler that failed) still show.
    if level != "DEBUG":
        for noisy in NOISY_LOGGERS:
            logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
    return handler
