"""Kubernetes Events about our objects: what a person running `kubectl describe` wants to read."""

from __future__ import annotations

import datetime
import enum
import logging
import socket
from dataclasses import dataclass

from swarmops.kube.client import KubeClient
from swarmops.kube.errors import ApiError
from swarmops.kube.resources import EVENTS

logger = logging.getLogger(__name__)

MAX_MESSAGE_LENGTH = 1024


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True)
class ObjectRef:
    """What an Event is about (a core/v1 ObjectReference)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    def to_wire(self) -> dict[str, str]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }


class EventRecorder:
    """Posts core/v1 Events. Best effort: a lost Event is logged, never an error."""

    def __init__(self, client: KubeClient, component: str = "swarmops") -> None:
        self._client = client
        self._component = component
        self._instance = socket.gethostname()

    async def record(
        self, about: ObjectRef, reason: str, message: str, type_: EventType = EventType.NORMAL
    ) -> None:
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        if len(message) > MAX_MESSAGE_LENGTH:
            message = message[: MAX_MESSAGE_LENGTH - 1] + "…"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{about.name}.", "namespace": about.namespace},
            "involvedObject": about.to_wire(),
            "reason": reason,
            "message": message,
            "type": str(type_),
            "source": {"component": self._component},
            "reportingComponent": f"swarmops.dev/{self._component}",
            "reportingInstance": self._instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self._client.create(EVENTS, body, about.namespace)
        except (ApiError, OSError, TimeoutError) as error:
            logger.warning(
                "Could not post event %s about %s/%s: %s",
                reason,
                about.namespace,
                about.name,
                error,
            )
