"""Valid objects drawn from the models are accepted by the real apiserver and come back
exactly as sent: no field pruned, none defaulted differently, status kept by the status
subresource."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client

from swarmops.api import GROUP, KINDS, VERSION, CustomResource, kind_info
from swarmops.api.testing import STRATEGIES

# Each example is a create, a status patch, a read and a delete on a real apiserver;
# SWARMOPS_API_EXAMPLES raises the count for a deeper search.
EXAMPLES_PER_KIND = int(os.environ.get("SWARMOPS_API_EXAMPLES", "30"))

_names = itertools.count()


def same_json(sent: Any, stored: Any) -> bool:
    """Equal as JSON documents. The apiserver writes an integral float back as an integer
    (5.8e16 comes back as 58000000000000000), so numbers compare as doubles."""
    if isinstance(sent, dict):
        return (
            isinstance(stored, dict)
            and sent.keys() == stored.keys()
            and all(same_json(value, stored[key]) for key, value in sent.items())
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(sent) == len(stored)
            and all(same_json(a, b) for a, b in zip(sent, stored, strict=True))
        )
    if isinstance(sent, float) or isinstance(stored, float):
        return (
            isinstance(sent, int | float)
            and isinstance(stored, int | float)
            and not isinstance(sent, bool)
            and not isinstance(stored, bool)
            and float(sent) == float(stored)
        )
    return type(sent) is type(stored) and sent == stored


@pytest.mark.e2e
@pytest.mark.parametrize("kind", [info.kind for info in KINDS])
def test_generated_objects_round_trip_without_pruning(
    kind: str, testbed: Any, crds_installed: Path, namespace: str
) -> None:
    info = kind_info(kind)

    with testbed.api_client() as api_client:
        api = client.CustomObjectsApi(api_client)

        @settings(
            max_examples=EXAMPLES_PER_KIND,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(obj=STRATEGIES[kind])
        def round_trip(obj: CustomResource) -> None:
            name = f"{kind.lower()}-{next(_names)}"
            body = obj.to_wire()
            status = body.pop("status")
            body["metadata"] = {"name": name}

            api.create_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, body)
            try:
                api.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, info.plural, name, {"status": status}
                )
                stored = cast(
                    dict[str, Any],
                    api.get_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name),
                )
            finally:
                api.delete_namespaced_custom_object(GROUP, VERSION, namespace, info.plural, name)

            assert same_json(body["spec"], stored["spec"]), (body["spec"], stored["spec"])
            assert same_json(status, stored["status"]), (status, stored["status"])
            parsed = info.model.from_body(stored)
            assert parsed.model_dump(exclude={"metadata"}) == obj.model_dump(exclude={"metadata"})

        round_trip()
