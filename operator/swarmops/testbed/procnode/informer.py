"""List-then-watch of one collection in a thread of its own, level-triggered.

Every (re)list hands the whole collection to ``on_list`` so the caller can
reconcile against what it holds; then watch events go to ``on_event``. An
expired resourceVersion (410 Gone, or an ERROR event) or any failure leads to a
fresh list after a short back-off.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from swarmops.testbed.procnode.kubeapi import JSON, KubeApi, KubeError, WatchStream

log = logging.getLogger("swarmops.testbed.procnode")

WATCH_TIMEOUT_SECONDS = 60


class Follower:
    def __init__(
        self,
        api: KubeApi,
        path: str,
        query: Mapping[str, Any],
        *,
        on_list: Callable[[list[JSON]], None],
        on_event: Callable[[str, JSON], None],
        name: str,
    ) -> None:
        self._api = api
        self._path = path
        self._query = dict(query)
        self._on_list = on_list
        self._on_event = on_event
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: WatchStream | None = None
        self.listed = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"procnode-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            stream = self._stream
        if stream is not None:
            stream.close()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                listing = self._api.get(self._path, self._query)
                version = str(listing.get("metadata", {}).get("resourceVersion", ""))
                self._on_list(list(listing.get("items", [])))
                self.listed.set()
                backoff = 0.2
                self._watch(version)
            except Exception as error:
                self.error = error
                if self._stop.is_set():
                    return
                log.warning("watch of %s failed, listing again: %s", self._path, error)
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)

    def _watch(self, version: str) -> None:
        """Follow watches from `version` until one expires; then return to relist."""
        while not self._stop.is_set():
            try:
                stream = self._api.watch(
                    self._path,
                    {**self._query, "resourceVersion": version, "allowWatchBookmarks": True},
                    WATCH_TIMEOUT_SECONDS,
                )
            except KubeError as error:
                if error.gone:
                    return
                raise
            with self._lock:
                if self._stop.is_set():
                    stream.close()
                    return
                self._stream = stream
            try:
                for event in stream.events():
                    kind = str(event.get("type"))
                    obj: JSON = event.get("object") or {}
                    if kind == "ERROR":
                        return  # most often 410 Gone
                    version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._on_event(kind, obj)
            finally:
                with self._lock:
                    self._stream = None
                stream.close()
