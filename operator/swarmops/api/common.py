"""Shapes shared by every SwarmOps kind: wire conventions, conditions, status base, metadata.

Every model here and in the kind modules follows the same conventions:

* Python attributes are snake_case; the wire (JSON/YAML, the CRD schema) is camelCase.
  Models accept either spelling on input and always write camelCase.
* Every field carries a description: it becomes the CRD schema's description, which is
  what ``kubectl explain`` prints.
* Object-level cross-field rules are CEL (``x-kubernetes-validations``), declared next to
  the model with :func:`cel_rules`. Where a rule can be checked without the previous
  object, the model mirrors it in Python so objects the operator builds are checked too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake

GROUP: Final = "swarmops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

#: Prefix of every label and annotation key that the operator owns.
OWNED_KEY_PREFIX: Final = f"{GROUP}/"

# --- Patterns (RE2-compatible: the apiserver evaluates them with Go's regexp) -----------------

#: RFC 1123 DNS label: names of pods, services, containers, list-map keys.
DNS_LABEL_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1035 label: names that become Service names must start with a letter.
DNS_1035_LABEL_PATTERN: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
#: RFC 1123 subdomain: names of most Kubernetes objects (Secrets, StorageClasses, ...).
DNS_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Capabilities and GPU products: short tokens that stay readable in labels and logs.
TOKEN_PATTERN: Final = r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$"
#: A Kubernetes resource quantity ("500m", "2Gi", "1.5", "1e3").
QUANTITY_PATTERN: Final = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
#: A whole percentage, as used by maxSurge/maxUnavailable ("25%").
PERCENT_PATTERN: Final = r"^[0-9]{1,3}%$"

# Bounds that keep CEL cost estimates small: the apiserver estimates the worst case from
# maxItems/maxLength, and rejects a CRD whose rules could exceed its budget.
NAME_MAX_LENGTH: Final = 63
SUBDOMAIN_MAX_LENGTH: Final = 253
MAX_MAP_ENTRIES: Final = 64


LIST_TYPE_KEY: Final = "x-kubernetes-list-type"
LIST_MAP_KEYS_KEY: Final = "x-kubernetes-list-map-keys"


def list_map(*keys: str) -> dict[str, Any]:
    """Schema extras for a list whose items are keyed by ``keys`` (wire names), like
    containers by name: the apiserver merges such lists by key and refuses duplicates."""
    return {LIST_TYPE_KEY: "map", LIST_MAP_KEYS_KEY: list(keys)}


class ApiModel(BaseModel):
    """Base of every model on the wire: camelCase aliases, snake_case attributes."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
        use_enum_values=False,
        validate_assignment=True,
    )

    #: (field, key attributes) of every list-map field, so Python refuses duplicate keys
    #: as the apiserver does. Derived from the schema extras; filled per subclass.
    _list_maps: ClassVar[tuple[tuple[str, tuple[str, ...]], ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        list_maps: list[tuple[str, tuple[str, ...]]] = []
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get(LIST_TYPE_KEY) == "map":
                wire_keys = extra[LIST_MAP_KEYS_KEY]
                assert isinstance(wire_keys, list)
                list_maps.append((name, tuple(to_snake(str(key)) for key in wire_keys)))
        cls._list_maps = tuple(list_maps)

    @model_validator(mode="after")
    def _list_map_keys_are_unique(self) -> Self:
        for name, key_attributes in self._list_maps:
            seen: set[tuple[Any, ...]] = set()
            for item in getattr(self, name):
                key = tuple(getattr(item, attribute) for attribute in key_attributes)
                if key in seen:
                    raise ValueError(f"{to_camel(name)}: duplicate entries for key {key}")
                seen.add(key)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready body for the Kubernetes API: camelCase keys, no null values."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- CEL rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry.

    ``field_path`` makes the apiserver report the error on a sub-field, so a person sees
    ``spec.warmPool.size`` rather than ``spec.warmPool``. ``reason`` is one of the
    apiserver's FieldValue* reasons.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    optional_old_self: bool | None = None

    def to_schema(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason
        if self.optional_old_self is not None:
            entry["optionalOldSelf"] = self.optional_old_self
        return entry


CEL_KEY: Final = "x-kubernetes-validations"


def cel_rules(*rules: CelRule) -> dict[str, Any]:
    """Schema extras that attach CEL rules to a model or a field."""
    return {CEL_KEY: [rule.to_schema() for rule in rules]}


def immutable(what: str, why: str = "") -> CelRule:
    """A transition rule: once set, the field keeps its value."""
    message = f"{what} is immutable once set"
    if why:
        message = f"{message}: {why}"
    return CelRule(rule="self == oldSelf", message=message)


# --- Scalar types with Kubernetes semantics ---------------------------------------------------

_QUANTITY_RE: Final = re.compile(QUANTITY_PATTERN)
_PERCENT_RE: Final = re.compile(PERCENT_PATTERN)


def _check_quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a non-negative quantity")
        return value
    if not _QUANTITY_RE.match(value) or value.startswith("-"):
        raise ValueError(f"{value!r} is not a non-negative quantity such as 500m, 2Gi or 1")
    return value


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not _PERCENT_RE.match(value) or int(value[:-1]) > 100:
        raise ValueError(f"{value!r} is not a count or a percentage between 0% and 100%")
    return value


#: A resource quantity: an integer or a string such as "500m" or "2Gi".
Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,
            CEL_KEY: [
                {
                    "rule": "type(self) == int ? self >= 0 : "
                    "(isQuantity(self) && !self.startsWith('-'))",
                    "message": "must be a non-negative quantity such as 500m, 2Gi or 1",
                }
            ],
        }
    ),
]

#: A count or a percentage of a total ("25%"), as in Deployment's maxSurge.
IntOrPercent = Annotated[
    int | str,
    AfterValidator(_check_int_or_percent),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 4,
            CEL_KEY: [
                {
                    "rule": "type(self) == int ? self >= 0 : "
                    "(self.matches('^[0-9]{1,3}%$') && int(self.replace('%', '')) <= 100)",
                    "message": "must be a non-negative count or a percentage between 0% and 100%",
                }
            ],
        }
    ),
]

#: A Kubernetes object name (DNS subdomain), as used in references.
ObjectName = Annotated[
    str, Field(min_length=1, max_length=SUBDOMAIN_MAX_LENGTH, pattern=DNS_SUBDOMAIN_PATTERN)
]

#: A DNS label (no dots), as used for names that become labels, hosts or list keys.
DnsLabel = Annotated[
    str, Field(min_length=1, max_length=NAME_MAX_LENGTH, pattern=DNS_LABEL_PATTERN)
]

#: A free-form string map (labels, annotations, config), bounded so CEL can reason about it.
StringMap = Annotated[dict[str, str], Field(max_length=MAX_MAP_ENTRIES)]


def is_zero(value: int | str) -> bool:
    """Whether an int-or-percent value means zero ("0", 0 or "0%")."""
    if isinstance(value, int):
        return value == 0
    return value.endswith("%") and value[:-1].isdigit() and int(value[:-1]) == 0


# --- References ---------------------------------------------------------------------------------


class LocalObjectReference(ApiModel):
    """A reference to an object of a known kind in the same namespace."""

    name: ObjectName = Field(description="Name of the referenced object, in the same namespace.")


class SecretKeyReference(ApiModel):
    """A key in a Secret in the same namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the same namespace.")
    key: str = Field(
        "password",
        min_length=1,
        max_length=SUBDOMAIN_MAX_LENGTH,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key inside the Secret's data that holds the value.",
    )


class ResourceRequirements(ApiModel):
    """Compute resources, as in a container's ``resources``."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources the scheduler reserves, e.g. {cpu: 100m, memory: 256Mi}.",
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources the container may use, e.g. {memory: 1Gi}.",
    )


# --- Conditions -------------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    """The status of a condition, as in metav1.Condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    """Condition types every SwarmOps kind reports (kstatus and ``kubectl wait`` read them).

    Kind-specific types live next to each kind (for example ``AgentPoolConditionType``).
    """

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"


CONDITION_TYPE_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON_PATTERN: Final = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
MAX_CONDITIONS: Final = 16


class Condition(ApiModel):
    """One aspect of the object's current state, in the metav1.Condition shape."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="Type of condition in CamelCase, e.g. Ready, Progressing or Degraded.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="The metadata.generation the condition was computed from; older than the "
        "object's generation means the condition is out of date.",
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another (RFC 3339)."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON_PATTERN,
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        "",
        max_length=32768,
        description="Human-readable details about the last transition.",
    )


class StatusBase(ApiModel):
    """Fields every SwarmOps status has. Status is written only by the operator."""

    observed_generation: int = Field(
        0,
        ge=0,
        description="The metadata.generation the operator last acted on; status describes that "
        "generation. Smaller than metadata.generation means the operator has not caught up yet.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        max_length=MAX_CONDITIONS,
        description="Current conditions of the object (Ready, Progressing, Degraded and "
        "kind-specific ones), at most one per type.",
        json_schema_extra=list_map("type"),
    )

    def condition(self, condition_type: str) -> Condition | None:
        """The condition of the given type, if the operator has reported it."""
        for condition in self.conditions:
            if condition.type == condition_type:
                return condition
        return None


# --- Metadata and the resource envelope ---------------------------------------------------------


class OwnerReference(ApiModel):
    """Enough of metav1.OwnerReference to follow ownership."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = Field(description="API version of the owner.")
    kind: str = Field(description="Kind of the owner.")
    name: str = Field(description="Name of the owner.")
    uid: str = Field(description="UID of the owner.")
    controller: bool | None = Field(
        None, description="Whether the owner is the managing controller."
    )
    block_owner_deletion: bool | None = Field(
        None, description="Whether the owner's deletion waits for this object."
    )


class ObjectMeta(ApiModel):
    """The parts of metav1.ObjectMeta the operator reads.

    Unknown server-populated fields (managedFields and friends) are ignored, so any body
    the apiserver returns parses.
    """

    model_config = ConfigDict(extra="ignore")

    name: str = Field("", description="Name of the object.")
    generate_name: str | None = Field(None, description="Prefix for a server-generated name.")
    namespace: str | None = Field(None, description="Namespace of the object.")
    uid: str | None = Field(None, description="Server-assigned unique ID.")
    resource_version: str | None = Field(
        None, description="Opaque version for concurrency control."
    )
    generation: int | None = Field(None, description="Sequence number of spec changes.")
    creation_timestamp: datetime | None = Field(None, description="When the object was created.")
    deletion_timestamp: datetime | None = Field(None, description="When deletion was requested.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
    finalizers: list[str] = Field(default_factory=list, description="Finalizers of the object.")
    owner_references: list[OwnerReference] = Field(
        default_factory=list, description="Owners of the object."
    )


def _plain(value: Any) -> Any:
    """Deep-copy mappings and sequences into dicts and lists (kopf hands out views)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


class CustomResource(ApiModel):
    """The envelope of every SwarmOps object: apiVersion, kind, metadata, spec, status.

    Subclasses declare ``kind`` as a Literal and their ``spec`` and ``status`` models.
    """

    model_config = ConfigDict(extra="ignore")

    #: Kind name, set by each subclass; used by the registry.
    KIND: ClassVar[str]

    api_version: str = Field(API_VERSION, pattern=rf"^{re.escape(API_VERSION)}$")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a raw object (a dict, or kopf's ``body``) into the model, once, at the edge.

        Raises ``pydantic.ValidationError`` when the body is not a valid object of this kind.
        """
        return cls.model_validate(_plain(body))
