"""kopf's per-event work that SwarmOps does not need is switched off: the "Handler ...
succeeded." log line per watch event, and the diff-base of every object."""

from __future__ import annotations

import logging

import kopf

from swarmops.logs import HandlerSuccessFilter, quiet_kopf_handler_successes
from swarmops.runtime import NoDiffBase, build_registry


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)


def test_only_the_success_line_is_dropped() -> None:
    quiet = HandlerSuccessFilter()
    assert not quiet.filter(record(logging.INFO, "Handler 'on_pod_event' succeeded."))
    assert quiet.filter(record(logging.INFO, "Timer 'x' has finished."))
    assert quiet.filter(
        record(logging.ERROR, "Handler 'on_pod_event' failed with an exception and will stop.")
    )
    assert quiet.filter(record(logging.WARNING, "Handler 'h' succeeded."))  # not kopf's INFO


def test_installing_twice_installs_once() -> None:
    objects = logging.getLogger("kopf.objects")
    quiet_kopf_handler_successes()
    quiet_kopf_handler_successes()
    assert sum(isinstance(f, HandlerSuccessFilter) for f in objects.filters) == 1


def test_no_handler_needs_the_diff_base_that_the_runtime_switches_off() -> None:
    """NoDiffBase (runtime.py) saves kopf's per-event diff; it is only right while no
    on.create/update/resume/field handler ("changing" handlers in kopf) exists."""
    registry = build_registry(watch_gpu_nodes=True, gpu_reaction=True)
    # kopf has no public way to list handlers by kind; its registry keeps them here.
    assert list(registry._changing.get_all_handlers()) == []
    assert list(registry._watching.get_all_handlers())  # the event handlers are there


def test_the_diff_base_is_empty_and_never_stored() -> None:
    storage = NoDiffBase()
    body = kopf.Body({"metadata": {"name": "x"}, "spec": {"a": 1}})
    assert storage.build(body=body) == {}
    assert storage.fetch(body=body) is None
