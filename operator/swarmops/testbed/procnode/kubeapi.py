"""A small synchronous Kubernetes REST client for the process node's threads.

The node is test tooling running in threads of its own, never on an event loop,
so a blocking client is right here. It speaks JSON dicts (parsed into typed
models at the edge, see `model`), sets the content type of every patch
explicitly, and can abort a watch from another thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data)
        return KubeError(status, str(body.get("reason", "")), str(body.get("message", "")))
    except (ValueError, AttributeError):
        return KubeError(status, "", data[:500].decode(errors="replace"))


class WatchStream:
    """One open watch; `close` may be called from any thread to end it."""

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self._closed = threading.Event()

    def events(self) -> Iterator[JSON]:
        pending = b""
        try:
            for chunk in self._response.stream(None, decode_content=False):
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            if not self._closed.is_set():
                raise
        finally:
            self._response.release_conn()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # shutdown() unblocks a read in another thread; it refuses (with varying
        # exception types) once the connection went back to the pool, which means
        # the stream already ended: nothing left to interrupt.
        with contextlib.suppress(Exception):
            self._response.shutdown()
        with contextlib.suppress(Exception):
            self._response.close()


class KubeApi:
    def __init__(self, kubeconfig: Path, timeout: float = 15.0) -> None:
        configuration = k8s_client.Configuration()
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(kubeconfig), client_configuration=configuration
        )
        self.server = str(configuration.host).rstrip("/")
        self._timeout = timeout
        self._headers: dict[str, str] = {"Accept": "application/json", "User-Agent": "procnode"}
        token = configuration.get_api_key_with_prefix("BearerToken") or configuration.api_key.get(
            "authorization"
        )
        if token:
            self._headers["Authorization"] = str(token)
        tls: dict[str, Any] = {}
        if configuration.verify_ssl:
            tls["cert_reqs"] = "CERT_REQUIRED"
            if configuration.ssl_ca_cert:
                tls["ca_certs"] = configuration.ssl_ca_cert
        else:
            tls["cert_reqs"] = "CERT_NONE"
        if configuration.cert_file:
            tls["cert_file"] = configuration.cert_file
            tls["key_file"] = configuration.key_file
        self._pool = urllib3.PoolManager(num_pools=2, maxsize=32, block=False, **tls)

    @property
    def server_host_port(self) -> tuple[str, int]:
        parsed = urllib.parse.urlsplit(self.server)
        return parsed.hostname or "127.0.0.1", parsed.port or 443

    def _url(self, path: str, query: Mapping[str, Any] | None) -> str:
        url = self.server + path
        if query:
            params = {
                k: ("true" if v is True else "false" if v is False else v)
                for k, v in query.items()
                if v is not None
            }
            url += "?" + urllib.parse.urlencode(params)
        return url

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
    ) -> JSON:
        headers = dict(self._headers)
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        response = self._pool.request(
            method,
            self._url(path, query),
            body=data,
            headers=headers,
            timeout=urllib3.Timeout(total=timeout or self._timeout),
            retries=False,
        )
        if response.status >= 400:
            raise _error(response.status, response.data)
        if not response.data:
            return {}
        parsed: JSON = json.loads(response.data)
        return parsed

    def get(self, path: str, query: Mapping[str, Any] | None = None) -> JSON:
        return self.request("GET", path, query=query)

    def create(self, path: str, body: JSON) -> JSON:
        return self.request("POST", path, body=body)

    def replace(self, path: str, body: JSON) -> JSON:
        return self.request("PUT", path, body=body)

    def merge_patch(self, path: str, body: JSON) -> JSON:
        return self.request("PATCH", path, body=body, content_type=MERGE_PATCH)

    def delete(self, path: str, body: JSON | None = None) -> JSON:
        return self.request("DELETE", path, body=body)

    def watch(self, path: str, query: Mapping[str, Any], timeout_seconds: int) -> WatchStream:
        response = self._pool.request(
            "GET",
            self._url(path, {**query, "watch": True, "timeoutSeconds": timeout_seconds}),
            headers=self._headers,
            preload_content=False,
            timeout=urllib3.Timeout(connect=5.0, read=timeout_seconds + 30.0),
            retries=False,
        )
        if response.status >= 400:
            data = response.read()
            response.release_conn()
            raise _error(response.status, data)
        return WatchStream(response)

    def close(self) -> None:
        self._pool.clear()
