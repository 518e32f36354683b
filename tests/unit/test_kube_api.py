"""Resource paths and the typed errors of the REST client (pure parts)."""

from __future__ import annotations

import pytest

from swarmops.kube import errors
from swarmops.kube.resources import AGENTPOOLS, NAMESPACES, PODS


def test_paths() -> None:
    assert PODS.path("team") == "/api/v1/namespaces/team/pods"
    assert PODS.path("team", "p-1", "status") == "/api/v1/namespaces/team/pods/p-1/status"
    assert PODS.path() == "/api/v1/pods"  # all namespaces
    assert AGENTPOOLS.path("t", "a", "scale") == (
        "/apis/swarmops.dev/v1alpha1/namespaces/t/agentpools/a/scale"
    )
    assert NAMESPACES.path(name="team") == "/api/v1/namespaces/team"
    assert AGENTPOOLS.api_version == "swarmops.dev/v1alpha1" and PODS.api_version == "v1"


def test_bad_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="give a namespace"):
        PODS.path(None, "p")
    with pytest.raises(ValueError, match="cluster-scoped"):
        NAMESPACES.path("team")
    with pytest.raises(ValueError, match="subresource needs"):
        PODS.path("team", None, "status")


def status(code: int, reason: str, message: str, **details: object) -> dict[str, object]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (404, "NotFound", errors.NotFound),
        (409, "AlreadyExists", errors.AlreadyExists),
        (409, "Conflict", errors.Conflict),
        (422, "Invalid", errors.Invalid),
        (403, "Forbidden", errors.Forbidden),
        (401, "Unauthorized", errors.Unauthorized),
        (410, "Expired", errors.Gone),
        (429, "TooManyRequests", errors.TooManyRequests),
        (500, "InternalError", errors.ServerError),
        (418, "Teapot", errors.ApiError),
    ],
)
def test_errors_are_typed_by_status_and_reason(
    code: int, reason: str, expected: type[errors.ApiError]
) -> None:
    error = errors.error_from_response(code, status(code, reason, "the apiserver says no"))
    assert type(error) is expected
    assert (error.status, error.reason, error.message) == (code, reason, "the apiserver says no")


def test_retry_after_and_non_status_bodies() -> None:
    throttled = errors.error_from_response(
        429, status(429, "TooManyRequests", "slow down", retryAfterSeconds=2)
    )
    assert isinstance(throttled, errors.TooManyRequests) and throttled.retry_after == 2.0
    proxy = errors.error_from_response(502, None, "<html>bad gateway</html>")
    assert isinstance(proxy, errors.ServerError)
    assert proxy.message == "<html>bad gateway</html>"
