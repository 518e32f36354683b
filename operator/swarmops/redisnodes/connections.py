"""Connections to the Redis nodes of one cluster, by address.

One small ``redis.asyncio`` client per node address, reused across reconciles and
dropped when the address disappears. No retries inside a call: an unreachable node
must cost one connect timeout, not a backoff loop; the reconcile itself is the retry.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 5.0
#: MIGRATE of a batch of keys may take longer than a plain command.
MIGRATE_TIMEOUT_MS = 10000


@dataclass(frozen=True)
class NodeAuth:
    """How to talk to every node of a cluster: the password, and TLS if on."""

    password: str | None
    tls_ca: str | None = None  # PEM of the CA that signed the nodes' certificates
    port: int = 6379

    def __repr__(self) -> str:  # never print the password
        return f"NodeAuth(password={'set' if self.password else 'none'}, tls={bool(self.tls_ca)})"


class NodeConnections:
    """Clients to the nodes of one cluster, keyed by IP."""

    def __init__(self, auth: NodeAuth) -> None:
        self.auth = auth
        self._clients: dict[str, aioredis.Redis] = {}

    def client(self, ip: str) -> aioredis.Redis:
        client = self._clients.get(ip)
        if client is None:
            options: dict[str, Any] = {
                "host": ip,
                "port": self.auth.port,
                "password": self.auth.password,
                "socket_connect_timeout": CONNECT_TIMEOUT,
                "socket_timeout": COMMAND_TIMEOUT,
                "retry": Retry(NoBackoff(), 0),
                "decode_responses": False,
                "client_name": "swarmops",
            }
            if self.auth.tls_ca is not None:
                options.update(
                    ssl=True,
                    ssl_ca_data=self.auth.tls_ca,
                    ssl_cert_reqs=ssl.CERT_REQUIRED,
                    # Nodes are reached by pod IP; the certificate names the Services.
                    ssl_check_hostname=False,
                )
            client = aioredis.Redis(**options)
            self._clients[ip] = client
        return client

    async def keep_only(self, ips: Iterable[str]) -> None:
        """Close the clients of addresses no pod has any more."""
        wanted = set(ips)
        for ip in [ip for ip in self._clients if ip not in wanted]:
            await self._clients.pop(ip).aclose()

    async def close(self) -> None:
        await self.keep_only(())
