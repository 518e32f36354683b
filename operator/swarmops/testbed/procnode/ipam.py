"""Pod IPs on loopback.

All of 127.0.0.0/8 routes to ``lo`` on Linux, so every address in it can be bound
without any set-up. The node takes ``<prefix>.0.1`` (with a two-octet prefix) for
itself; pods get the others, skipping addresses whose last octet is 0 or 255.

Allocation is next-fit: each pod gets the next free address after the last one
handed out, wrapping around. An address is reused only after its pod is gone,
and a re-created pod (say a StatefulSet's ``redis-0``) gets a new address, as on
a real cluster.

Several test beds may share this machine. A caller-supplied ``claim`` callback
decides whether an address may be taken (the node holds a per-address file
lock, see `AddressLocks`), so two process nodes with the same prefix never hand
out one address twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


class IPExhausted(RuntimeError):
    """Every address under the prefix is in use."""


def loopback_network(prefix: str) -> ipaddress.IPv4Network:
    """The network a prefix such as ``127.77`` names (``127.77.0.0/16``)."""
    octets = prefix.strip(".").split(".")
    if not 1 <= len(octets) <= 3 or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise ValueError(f"ip_prefix {prefix!r} must be one to three octets, such as '127.77'")
    network = ipaddress.IPv4Network(
        ".".join([*octets, *(["0"] * (4 - len(octets)))]) + f"/{8 * len(octets)}"
    )
    if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
        raise ValueError(f"ip_prefix {prefix!r} is not on loopback (127.0.0.0/8)")
    return network


def host_address(network: ipaddress.IPv4Network) -> str:
    return str(network.network_address + 1)


def _usable(address: ipaddress.IPv4Address) -> bool:
    last = int(address) & 0xFF
    return last not in (0, 255)


class IPAllocator:
    """Next-fit allocation of pod addresses, keyed by pod UID. Thread-safe, no I/O
    of its own."""

    def __init__(
        self,
        network: ipaddress.IPv4Network,
        claim: Callable[[str], bool] = lambda _address: True,
        release: Callable[[str], None] = lambda _address: None,
    ) -> None:
        self._network = network
        self._first = int(network.network_address) + 2  # .0 network, .1 the node
        self._last = int(network.broadcast_address) - 1
        if self._first > self._last:
            raise ValueError(f"{network} is too small for pods")
        self._claim = claim
        self._release = release
        self._cursor = self._first
        self._by_key: dict[str, str] = {}
        self._in_use: set[str] = set()
        self._lock = threading.Lock()

    @property
    def host_ip(self) -> str:
        return host_address(self._network)

    def _candidates(self) -> Iterator[str]:
        size = self._last - self._first + 1
        for offset in range(size):
            value = self._first + (self._cursor - self._first + offset) % size
            address = ipaddress.IPv4Address(value)
            if _usable(address):
                yield str(address)

    def allocate(self, key: str, preferred: str | None = None) -> str:
        """The address of `key`, allocating one when it has none. `preferred` (an
        address a pod already reports, for a node restarted under running pods)
        is taken when it is free."""
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            if preferred is not None and self._take(preferred):
                self._by_key[key] = preferred
                return preferred
            for address in self._candidates():
                if self._take(address):
                    self._by_key[key] = address
                    self._cursor = int(ipaddress.IPv4Address(address)) + 1
                    if self._cursor > self._last:
                        self._cursor = self._first
                    return address
        raise IPExhausted(f"no free pod address left in {self._network}")

    def _take(self, address: str) -> bool:
        try:
            parsed = ipaddress.IPv4Address(address)
        except ValueError:
            return False
        if parsed not in self._network or not _usable(parsed):
            return False
        if not self._first <= int(parsed) <= self._last or address in self._in_use:
            return False
        if not self._claim(address):
            return False
        self._in_use.add(address)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            address = self._by_key.pop(key, None)
            if address is not None:
                self._in_use.discard(address)
                self._release(address)

    def address_of(self, key: str) -> str | None:
        with self._lock:
            return self._by_key.get(key)

    def in_use(self) -> dict[str, str]:
        with self._lock:
            return dict(self._by_key)


class AddressLocks:
    """Machine-wide ownership of loopback addresses: an exclusive, non-blocking
    ``flock`` on ``<dir>/<address>.lock``, held while a pod lives. The kernel
    drops the lock when its holder dies, so a crashed test bed leaves none behind."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(PermissionError):
            directory.chmod(0o1777)

    def claim(self, address: str) -> bool:
        with self._lock:
            if address in self._held:
                return False
            fd = os.open(self._directory / f"{address}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            self._held[address] = fd
            return True

    def release(self, address: str) -> None:
        with self._lock:
            fd = self._held.pop(address, None)
        if fd is not None:
            os.close(fd)

    def release_all(self) -> None:
        with self._lock:
            held, self._held = self._held, {}
        for fd in held.values():
            os.close(fd)
