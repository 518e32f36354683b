"""Where the operator's time went: a summary of a py-spy profile in its raw format.

`python bench/claims.py --profile DIR` writes DIR/operator-steady.txt (`py-spy record
--format raw`: one line per distinct stack, frames joined by ';', then a sample count).
This prints one JSON object: the samples, the share of them inside each of a few parts
of the operator (a stack counts toward every part it passes through, so the parts
overlap), and the functions with the largest inclusive share (those under nearly every
sample, the entry point and the event loop, left out).

    python bench/profile_summary.py DIR/operator-steady.txt [--top 25]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

# A part of the operator, and the frames that mean a stack is in it.
PARTS: dict[str, re.Pattern[str]] = {
    "kopf: per-object workers (all of kopf's event processing)": re.compile(
        r"kopf/_core/reactor/queueing"
    ),
    "kopf: invoking event handlers (on.event)": re.compile(r"process_resource_causes"),
    "kopf: invoking index handlers": re.compile(r"index_resource"),
    "kopf: watch streams and their JSON": re.compile(r"kopf/_cogs/clients/watching"),
    "claim reconciles": re.compile(r"ClaimController\.reconcile"),
    "pool reconciles": re.compile(r"PoolController\.reconcile"),
    "choosing the warm pod": re.compile(r"choose_warm_pod|WarmPods\.choose"),
    "parsing claims": re.compile(r"parse_claim"),
    "parsing pods": re.compile(r"observe_pod"),
    "HTTP client (aiohttp, TLS)": re.compile(r"aiohttp/|ssl\.py|sslproto\.py"),
}
_LOCATION = re.compile(r" \(.*\)$")


def summarize(lines: list[str], top: int) -> dict[str, object]:
    total = 0
    parts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for part, pattern in PARTS.items():
            if pattern.search(stack):
                parts[part] += samples
        for name in {_LOCATION.sub("", frame) for frame in stack.split(";")}:
            inclusive[name] += samples

    def share(samples: int) -> float:
        return round(100 * samples / total, 1) if total else 0.0

    return {
        "samples": total,
        "parts_percent": {part: share(parts[part]) for part in PARTS},
        # Frames under nearly every sample (the entry point, the event loop) say nothing.
        "top_inclusive_percent": {
            name: share(n)
            for name, n in [(k, v) for k, v in inclusive.most_common() if v < 0.9 * total][:top]
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy's raw output")
    parser.add_argument("--top", type=int, default=25, help="how many functions to list")
    args = parser.parse_args(argv)
    lines = args.profile.read_text().splitlines()
    json.dump(summarize(lines, args.top), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
