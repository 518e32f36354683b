"""Typed errors of the Kubernetes API, carrying the apiserver's own message."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the apiserver answered with an error status (a `metav1.Status`)."""

    def __init__(
        self, status: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details or {}


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """An optimistic-concurrency failure: resourceVersion or uid precondition not met."""


class AlreadyExists(ApiError):
    """A create for a name that is taken (also a 409, told apart by the Status reason)."""


class Gone(ApiError):
    """An expired resourceVersion (410), e.g. a stale list continue token."""


class Invalid(ApiError):
    """The object failed validation (422): the message lists the offending fields."""


class TooManyRequests(ApiError):
    """Throttled by API Priority and Fairness (429); `retry_after` says when to retry."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retryAfterSeconds")
        return float(value) if isinstance(value, int | float) else None


class ServerError(ApiError):
    pass


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def error_from_response(status: int, payload: Any, text: str = "") -> ApiError:
    """Build the typed error for a failed response; `payload` is the parsed body, if JSON."""
    reason = ""
    message = text.strip()[:1000]
    details: dict[str, Any] = {}
    if isinstance(payload, dict) and payload.get("kind") == "Status":
        reason = str(payload.get("reason") or "")
        message = str(payload.get("message") or message)
        raw_details = payload.get("details")
        details = raw_details if isinstance(raw_details, dict) else {}
    if status == 409:
        cls: type[ApiError] = AlreadyExists if reason == "AlreadyExists" else Conflict
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    return cls(status, reason or cls.__name__, message, details)
