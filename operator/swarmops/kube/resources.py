"""The API resources the operator talks to, and how their URLs are built."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    """One REST resource: `group` is "" for the core API."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if self.namespaced:
            if namespace is None:
                if name is not None:
                    raise ValueError(f"{self.kind} {name!r} is namespaced: give a namespace")
            else:
                parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif namespace is not None:
            raise ValueError(f"{self.kind} is cluster-scoped: no namespace")
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource is not None:
                parts.append(subresource)
        elif subresource is not None:
            raise ValueError("a subresource needs an object name")
        return "/".join(parts)


PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
PODDISRUPTIONBUDGETS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
SECRETS = Resource("", "v1", "secrets", "Secret")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SERVICES = Resource("", "v1", "services", "Service")
STATEFULSETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
NETWORKPOLICIES = Resource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")
AGENTPOOLS = Resource("swarmops.dev", "v1alpha1", "agentpools", "AgentPool")
AGENTCLAIMS = Resource("swarmops.dev", "v1alpha1", "agentclaims", "AgentClaim")
REDISCLUSTERS = Resource("swarmops.dev", "v1alpha1", "redisclusters", "RedisCluster")
SWARMS = Resource("swarmops.dev", "v1alpha1", "swarms", "Swarm")
PRIORITYCLASSES = Resource(
    "scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False
)
CONTROLLERREVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision")
