"""What Redis says about its cluster, parsed into typed data.

`parse_nodes` reads the text of ``CLUSTER NODES`` (one node's view of every node it
knows), `parse_info` the ``key:value`` lines of ``CLUSTER INFO`` and ``INFO``. Nodes
are identified by their 40-hex node ID; an address is only where a node was last seen.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from swarmops.core.rediscluster.slots import SlotRange, count

NODE_ID_RE = re.compile(r"^[0-9a-f]{40}$")
_OPEN_SLOT_RE = re.compile(r"^\[(\d+)-([<>])-([0-9a-f]{40})\]$")


class TopologyError(ValueError):
    """Redis answered something that is not a CLUSTER NODES listing."""


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One line of ``CLUSTER NODES``: one node as the answering node sees it."""

    node_id: str
    ip: str | None  # None: no address known (``noaddr`` or an empty host)
    port: int
    bus_port: int
    flags: frozenset[str]
    master_id: str | None
    config_epoch: int
    connected: bool
    slots: tuple[SlotRange, ...] = ()
    # Only on the answering node's own line: slot -> peer node ID.
    migrating: Mapping[int, str] = field(default_factory=dict)
    importing: Mapping[int, str] = field(default_factory=dict)

    @property
    def myself(self) -> bool:
        return "myself" in self.flags

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def failed(self) -> bool:
        """Agreed to be down by the cluster (``fail``), not merely suspected (``fail?``)."""
        return "fail" in self.flags

    @property
    def suspected(self) -> bool:
        return "fail?" in self.flags

    @property
    def in_handshake(self) -> bool:
        return "handshake" in self.flags

    @property
    def no_address(self) -> bool:
        return "noaddr" in self.flags or not self.ip

    @property
    def slot_count(self) -> int:
        return count(self.slots)


def _parse_address(text: str) -> tuple[str | None, int, int]:
    # ip:port@cport[,hostname]; IPv6 addresses contain colons, so split on the last one.
    address = text.split(",", 1)[0]
    host_port, _, bus = address.partition("@")
    host, _, port = host_port.rpartition(":")
    try:
        port_number = int(port) if port else 0
        bus_number = int(bus) if bus else 0
    except ValueError as error:
        raise TopologyError(f"bad node address {text!r}") from error
    return (host or None), port_number, bus_number


def parse_node_line(line: str) -> NodeEntry:
    parts = line.split()
    if len(parts) < 8:
        raise TopologyError(f"a CLUSTER NODES line has at least 8 fields: {line!r}")
    node_id, address, flags_text, master, _ping, _pong, epoch, link = parts[:8]
    if not NODE_ID_RE.match(node_id):
        raise TopologyError(f"bad node ID in {line!r}")
    ip, port, bus_port = _parse_address(address)
    flags = frozenset(flag for flag in flags_text.split(",") if flag and flag != "noflags")
    slots: list[SlotRange] = []
    migrating: dict[int, str] = {}
    importing: dict[int, str] = {}
    for token in parts[8:]:
        opened = _OPEN_SLOT_RE.match(token)
        if opened:
            slot, direction, peer = int(opened.group(1)), opened.group(2), opened.group(3)
            (migrating if direction == ">" else importing)[slot] = peer
            continue
        try:
            slots.append(SlotRange.parse(token))
        except ValueError as error:
            raise TopologyError(f"bad slot token {token!r} in {line!r}") from error
    return NodeEntry(
        node_id=node_id,
        ip=ip,
        port=port,
        bus_port=bus_port,
        flags=flags,
        master_id=master if NODE_ID_RE.match(master) else None,
        config_epoch=int(epoch),
        connected=link == "connected",
        slots=tuple(sorted(slots)),
        migrating=migrating,
        importing=importing,
    )


def parse_nodes(text: str) -> dict[str, NodeEntry]:
    """Every node of a ``CLUSTER NODES`` answer, by node ID."""
    entries: dict[str, NodeEntry] = {}
    for line in text.splitlines():
        if line.strip():
            entry = parse_node_line(line)
            entries[entry.node_id] = entry
    if sum(1 for e in entries.values() if e.myself) != 1:
        raise TopologyError("CLUSTER NODES must list exactly one node flagged myself")
    return entries


def parse_info(text: str) -> dict[str, str]:
    """``key:value`` lines (CLUSTER INFO, INFO sections); comments and blanks skipped."""
    info: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        info[key] = value
    return info
