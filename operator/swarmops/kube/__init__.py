"""A thin async client for the Kubernetes API, and the operator's credentials."""

from swarmops.kube.auth import Credentials, CredentialsError, load_connection_info
from swarmops.kube.client import Body, KubeClient, PatchType, Propagation
from swarmops.kube.errors import (
    AlreadyExists,
    ApiError,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    ServerError,
    TooManyRequests,
    Unauthorized,
)
from swarmops.kube.resources import AGENTCLAIMS, AGENTPOOLS, EVENTS, NAMESPACES, PODS, Resource

__all__ = [
    "AGENTCLAIMS",
    "AGENTPOOLS",
    "EVENTS",
    "NAMESPACES",
    "PODS",
    "AlreadyExists",
    "ApiError",
    "Body",
    "Conflict",
    "Credentials",
    "CredentialsError",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeClient",
    "NotFound",
    "PatchType",
    "Propagation",
    "Resource",
    "ServerError",
    "TooManyRequests",
    "Unauthorized",
    "load_connection_info",
]
