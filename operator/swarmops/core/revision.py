"""A stable revision hash of a pod template."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

REVISION_LENGTH = 10


def _without_nulls(value: Any) -> Any:
    # A field set to null and a field left out mean the same to the apiserver; empty
    # maps and lists do not (`emptyDir: {}` is a volume), so those are kept.
    if isinstance(value, Mapping):
        return {str(k): _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_nulls(item) for item in value]
    return value


def template_revision(template: Mapping[str, Any]) -> str:
    """Hash a pod template (metadata and spec) into a short label-safe revision.

    Equal templates hash equally whatever their key order; list order counts, as
    it does for containers, env and args.
    """
    canonical = json.dumps(
        _without_nulls(template), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    )
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()[:REVISION_LENGTH]
