"""What the operator's own identity may do: SelfSubjectAccessReviews.

Every authenticated identity may create a SelfSubjectAccessReview (the bootstrap
`system:basic-user` ClusterRole), so asking costs no extra RBAC.
"""

from __future__ import annotations

from swarmops.kube.client import KubeClient
from swarmops.kube.errors import Forbidden

SELF_SUBJECT_ACCESS_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


async def allowed(
    client: KubeClient,
    verb: str,
    resource: str,
    *,
    group: str = "",
    namespace: str | None = None,
) -> bool:
    """Whether the client's identity may `verb` `resource` (in `namespace`; None: cluster-wide)."""
    attributes = {"verb": verb, "resource": resource, "group": group}
    if namespace is not None:
        attributes["namespace"] = namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": attributes},
    }
    try:
        answer = await client.request("POST", SELF_SUBJECT_ACCESS_REVIEWS, body=review)
    except Forbidden:
        return False  # a cluster that took even this away from us: assume the worst
    return bool(((answer or {}).get("status") or {}).get("allowed"))
