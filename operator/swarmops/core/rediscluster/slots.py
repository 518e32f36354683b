"""Hash slots: ranges, the even split, and which slots move where to reach it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

SLOT_COUNT = 16384


@dataclass(frozen=True, order=True, slots=True)
class SlotRange:
    """Slots ``start``..``end``, both included."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end < SLOT_COUNT:
            raise ValueError(f"bad slot range {self.start}-{self.end}")

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"

    @classmethod
    def parse(cls, text: str) -> SlotRange:
        first, _, last = text.partition("-")
        return cls(int(first), int(last or first))


def to_ranges(slots: Iterable[int]) -> tuple[SlotRange, ...]:
    """Sorted, merged ranges covering exactly `slots`."""
    ranges: list[SlotRange] = []
    start = previous = -2
    for slot in sorted(set(slots)):
        if slot != previous + 1:
            if start >= 0:
                ranges.append(SlotRange(start, previous))
            start = slot
        previous = slot
    if start >= 0:
        ranges.append(SlotRange(start, previous))
    return tuple(ranges)


def expand(ranges: Iterable[SlotRange]) -> list[int]:
    """Every slot of `ranges`, in order."""
    return [slot for r in sorted(ranges) for slot in range(r.start, r.end + 1)]


def count(ranges: Iterable[SlotRange]) -> int:
    return sum(len(r) for r in ranges)


def describe(ranges: Sequence[SlotRange], limit: int = 4) -> str:
    """A short human form: ``0-5460 5462`` or ``0-10 12-20 ... (7 ranges)``."""
    if not ranges:
        return "none"
    shown = " ".join(str(r) for r in ranges[:limit])
    return shown if len(ranges) <= limit else f"{shown} ... ({len(ranges)} ranges)"


def even_targets(shards: int) -> list[int]:
    """How many slots each of `shards` shards owns in the even split: the first
    ``16384 % shards`` shards own one more."""
    if shards <= 0:
        return []
    base, extra = divmod(SLOT_COUNT, shards)
    return [base + (1 if index < extra else 0) for index in range(shards)]


def even_split(shards: int) -> list[SlotRange]:
    """The contiguous even split used at bootstrap: shard i owns the i-th range."""
    ranges = []
    start = 0
    for size in even_targets(shards):
        ranges.append(SlotRange(start, start + size - 1))
        start += size
    return ranges


@dataclass(frozen=True, slots=True)
class SlotMove:
    """Move `slots` from the master of shard `source` to the master of shard `target`."""

    source: int
    target: int
    slots: tuple[int, ...]


def rebalance(
    owned: Mapping[int, Sequence[int]], shards: int, *, limit: int | None = None
) -> list[SlotMove]:
    """Moves that bring the slots owned per shard to the even split over shards
    ``0..shards-1``; shards at or above `shards` are drained to zero.

    `owned` maps a shard to the slots its master owns. Donors give their highest
    slots (so ranges stay contiguous where they can); receivers are filled in shard
    order. At most `limit` slots move in total when given (the caller moves a batch
    and looks again). Slots owned by no shard are not this function's business.
    """
    targets = even_targets(shards)
    surplus: list[tuple[int, list[int]]] = []
    deficit: list[tuple[int, int]] = []
    for shard in sorted(set(owned) | set(range(shards))):
        have = sorted(owned.get(shard, ()))
        want = targets[shard] if shard < shards else 0
        if len(have) > want:
            surplus.append((shard, have[want:] if want else have))
        elif len(have) < want:
            deficit.append((shard, want - len(have)))
    moves: list[SlotMove] = []
    budget = limit if limit is not None else SLOT_COUNT
    donors = [(shard, list(reversed(extra))) for shard, extra in surplus]
    for receiver, wanted in deficit:
        missing = wanted
        while missing > 0 and budget > 0 and donors:
            donor, pool = donors[0]
            take = min(missing, budget, len(pool))
            moved, pool[:] = pool[:take], pool[take:]
            moves.append(SlotMove(donor, receiver, tuple(sorted(moved))))
            missing -= take
            budget -= take
            if not pool:
                donors.pop(0)
    return moves
