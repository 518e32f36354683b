"""The parts of a Pod the process node acts on, parsed once from the API's JSON.

Everything past this edge works on these frozen dataclasses, never on raw dicts.
Unknown fields are ignored; a field of the wrong type raises `PodSpecError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

RestartPolicy = Literal["Always", "OnFailure", "Never"]
DEFAULT_TERMINATION_GRACE_SECONDS = 30


class PodSpecError(ValueError):
    """The pod carries a field the process node cannot read."""


# -- small typed accessors ------------------------------------------------------------------


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodSpecError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PodSpecError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _str(value: Any, where: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise PodSpecError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: Any, where: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise PodSpecError(f"{where}: expected an integer, got {type(value).__name__}")
    return value


def _opt_int(value: Any, where: str) -> int | None:
    return None if value is None else _int(value, where, 0)


def _bool(value: Any, where: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise PodSpecError(f"{where}: expected a boolean, got {type(value).__name__}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(_str(item, f"{where}[{i}]") for i, item in enumerate(_list(value, where)))


def _str_map(value: Any, where: str) -> dict[str, str]:
    return {str(k): _str(v, f"{where}.{k}") for k, v in _obj(value, where).items()}


def _int_or_str(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PodSpecError(f"{where}: expected an integer or a port name")
    return value


# -- env ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRef:
    """A key of a ConfigMap or Secret (`configMapKeyRef` / `secretKeyRef`)."""

    kind: Literal["ConfigMap", "Secret"]
    name: str
    key: str
    optional: bool = False


@dataclass(frozen=True)
class FieldRef:
    field_path: str


@dataclass(frozen=True)
class ResourceFieldRef:
    resource: str
    container: str | None = None
    divisor: str | None = None


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str | None = None
    source: KeyRef | FieldRef | ResourceFieldRef | None = None


@dataclass(frozen=True)
class EnvFrom:
    kind: Literal["ConfigMap", "Secret"]
    name: str
    prefix: str = ""
    optional: bool = False


def _key_ref(raw: Mapping[str, Any], kind: Literal["ConfigMap", "Secret"], where: str) -> KeyRef:
    return KeyRef(
        kind,
        _str(raw.get("name"), f"{where}.name"),
        _str(raw.get("key"), f"{where}.key"),
        _bool(raw.get("optional"), f"{where}.optional"),
    )


def _env_var(raw: Mapping[str, Any], where: str) -> EnvVar:
    name = _str(raw.get("name"), f"{where}.name")
    source: KeyRef | FieldRef | ResourceFieldRef | None = None
    value_from = _obj(raw.get("valueFrom"), f"{where}.valueFrom")
    if "fieldRef" in value_from:
        ref = _obj(value_from["fieldRef"], f"{where}.valueFrom.fieldRef")
        source = FieldRef(_str(ref.get("fieldPath"), f"{where}.fieldPath"))
    elif "resourceFieldRef" in value_from:
        ref = _obj(value_from["resourceFieldRef"], f"{where}.valueFrom.resourceFieldRef")
        divisor = ref.get("divisor")
        source = ResourceFieldRef(
            _str(ref.get("resource"), f"{where}.resource"),
            _opt_str(ref.get("containerName"), f"{where}.containerName"),
            None if divisor is None else str(divisor),
        )
    elif "configMapKeyRef" in value_from:
        source = _key_ref(_obj(value_from["configMapKeyRef"], where), "ConfigMap", where)
    elif "secretKeyRef" in value_from:
        source = _key_ref(_obj(value_from["secretKeyRef"], where), "Secret", where)
    elif value_from:
        raise PodSpecError(f"{where}.valueFrom: unsupported source {sorted(value_from)}")
    value = None if source is not None else _str(raw.get("value"), f"{where}.value")
    return EnvVar(name, value, source)


def _env_from(raw: Mapping[str, Any], where: str) -> EnvFrom:
    prefix = _str(raw.get("prefix"), f"{where}.prefix")
    for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
        if key in raw:
            ref = _obj(raw[key], f"{where}.{key}")
            return EnvFrom(
                kind,  # type: ignore[arg-type]
                _str(ref.get("name"), f"{where}.{key}.name"),
                prefix,
                _bool(ref.get("optional"), f"{where}.{key}.optional"),
            )
    raise PodSpecError(f"{where}: envFrom needs configMapRef or secretRef")


# -- probes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecAction:
    command: tuple[str, ...]


@dataclass(frozen=True)
class TCPSocketAction:
    port: int | str
    host: str | None = None


@dataclass(frozen=True)
class HTTPGetAction:
    port: int | str
    path: str = "/"
    host: str | None = None
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GRPCAction:
    port: int
    service: str | None = None


ProbeAction = ExecAction | TCPSocketAction | HTTPGetAction | GRPCAction


@dataclass(frozen=True)
class Probe:
    action: ProbeAction
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


def _probe(raw: Any, where: str) -> Probe | None:
    if raw is None:
        return None
    spec = _obj(raw, where)
    action: ProbeAction
    if "exec" in spec:
        command = _strings(_obj(spec["exec"], f"{where}.exec").get("command"), f"{where}.exec")
        action = ExecAction(command or ())
    elif "tcpSocket" in spec:
        tcp = _obj(spec["tcpSocket"], f"{where}.tcpSocket")
        action = TCPSocketAction(
            _int_or_str(tcp.get("port"), f"{where}.tcpSocket.port"),
            _opt_str(tcp.get("host"), f"{where}.tcpSocket.host"),
        )
    elif "httpGet" in spec:
        http = _obj(spec["httpGet"], f"{where}.httpGet")
        headers = tuple(
            (
                _str(_obj(h, where).get("name"), f"{where}.httpHeaders.name"),
                _str(_obj(h, where).get("value"), f"{where}.httpHeaders.value"),
            )
            for h in _list(http.get("httpHeaders"), f"{where}.httpGet.httpHeaders")
        )
        action = HTTPGetAction(
            _int_or_str(http.get("port"), f"{where}.httpGet.port"),
            _str(http.get("path"), f"{where}.httpGet.path", "/") or "/",
            _opt_str(http.get("host"), f"{where}.httpGet.host"),
            _str(http.get("scheme"), f"{where}.httpGet.scheme", "HTTP").upper(),
            headers,
        )
    elif "grpc" in spec:
        grpc = _obj(spec["grpc"], f"{where}.grpc")
        action = GRPCAction(
            _int(grpc.get("port"), f"{where}.grpc.port", 0),
            _opt_str(grpc.get("service"), f"{where}.grpc.service"),
        )
    else:
        raise PodSpecError(f"{where}: a probe needs exec, tcpSocket, httpGet or grpc")
    return Probe(
        action,
        initial_delay_seconds=_int(spec.get("initialDelaySeconds"), where, 0),
        period_seconds=max(1, _int(spec.get("periodSeconds"), where, 10)),
        timeout_seconds=max(1, _int(spec.get("timeoutSeconds"), where, 1)),
        success_threshold=max(1, _int(spec.get("successThreshold"), where, 1)),
        failure_threshold=max(1, _int(spec.get("failureThreshold"), where, 3)),
    )


# -- containers and volumes -----------------------------------------------------------------


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass(frozen=True)
class VolumeMount:
    name: str
    mount_path: str
    sub_path: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    command: tuple[str, ...] | None = None
    args: tuple[str, ...] | None = None
    working_dir: str | None = None
    env: tuple[EnvVar, ...] = ()
    env_from: tuple[EnvFrom, ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    volume_mounts: tuple[VolumeMount, ...] = ()
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None
    # Only init containers set it: `Always` makes one a sidecar.
    restart_policy: RestartPolicy | None = None
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    termination_message_policy: str = "File"

    def port_number(self, port: int | str) -> int | None:
        """A probe's port, by number or by the name of a declared port."""
        if isinstance(port, int):
            return port
        for declared in self.ports:
            if declared.name == port:
                return declared.container_port
        return int(port) if port.isdigit() else None


def _restart_policy(value: Any, where: str, default: RestartPolicy | None) -> RestartPolicy | None:
    if value is None:
        return default
    if value not in ("Always", "OnFailure", "Never"):
        raise PodSpecError(f"{where}: unknown restartPolicy {value!r}")
    policy: RestartPolicy = value
    return policy


def _container(raw: Mapping[str, Any], where: str) -> Container:
    resources = {
        kind: _str_map(values, f"{where}.resources.{kind}")
        for kind, values in _obj(raw.get("resources"), f"{where}.resources").items()
        if kind in ("limits", "requests")
    }
    return Container(
        name=_str(raw.get("name"), f"{where}.name"),
        image=_str(raw.get("image"), f"{where}.image"),
        command=_strings(raw.get("command"), f"{where}.command"),
        args=_strings(raw.get("args"), f"{where}.args"),
        working_dir=_opt_str(raw.get("workingDir"), f"{where}.workingDir") or None,
        env=tuple(
            _env_var(_obj(e, where), f"{where}.env[{i}]")
            for i, e in enumerate(_list(raw.get("env"), f"{where}.env"))
        ),
        env_from=tuple(
            _env_from(_obj(e, where), f"{where}.envFrom[{i}]")
            for i, e in enumerate(_list(raw.get("envFrom"), f"{where}.envFrom"))
        ),
        ports=tuple(
            ContainerPort(
                _int(_obj(p, where).get("containerPort"), f"{where}.ports.containerPort", 0),
                _opt_str(_obj(p, where).get("name"), f"{where}.ports.name"),
                _str(_obj(p, where).get("protocol"), f"{where}.ports.protocol", "TCP"),
            )
            for p in _list(raw.get("ports"), f"{where}.ports")
        ),
        volume_mounts=tuple(
            VolumeMount(
                _str(_obj(m, where).get("name"), f"{where}.volumeMounts.name"),
                _str(_obj(m, where).get("mountPath"), f"{where}.volumeMounts.mountPath"),
                _str(_obj(m, where).get("subPath"), f"{where}.volumeMounts.subPath"),
                _bool(_obj(m, where).get("readOnly"), f"{where}.volumeMounts.readOnly"),
            )
            for m in _list(raw.get("volumeMounts"), f"{where}.volumeMounts")
        ),
        readiness_probe=_probe(raw.get("readinessProbe"), f"{where}.readinessProbe"),
        liveness_probe=_probe(raw.get("livenessProbe"), f"{where}.livenessProbe"),
        startup_probe=_probe(raw.get("startupProbe"), f"{where}.startupProbe"),
        restart_policy=_restart_policy(raw.get("restartPolicy"), f"{where}.restartPolicy", None),
        resources=resources,
        termination_message_policy=_str(
            raw.get("terminationMessagePolicy"), f"{where}.terminationMessagePolicy", "File"
        ),
    )


@dataclass(frozen=True)
class KeyToPath:
    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class EmptyDirSource:
    pass


@dataclass(frozen=True)
class ConfigMapSource:
    name: str
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool = False


@dataclass(frozen=True)
class SecretSource:
    name: str
    items: tuple[KeyToPath, ...] = ()
    default_mode: int | None = None
    optional: bool = False


@dataclass(frozen=True)
class DownwardItem:
    path: str
    field_path: str | None = None
    resource: ResourceFieldRef | None = None
    mode: int | None = None


@dataclass(frozen=True)
class DownwardAPISource:
    items: tuple[DownwardItem, ...] = ()
    default_mode: int | None = None


@dataclass(frozen=True)
class ServiceAccountTokenSource:
    path: str
    audience: str | None = None
    expiration_seconds: int = 3607


@dataclass(frozen=True)
class ProjectedSource:
    sources: tuple[
        ConfigMapSource | SecretSource | DownwardAPISource | ServiceAccountTokenSource, ...
    ]
    default_mode: int | None = None


@dataclass(frozen=True)
class PersistentVolumeClaimSource:
    claim_name: str
    read_only: bool = False


@dataclass(frozen=True)
class HostPathSource:
    path: str


@dataclass(frozen=True)
class UnsupportedSource:
    kinds: tuple[str, ...]


VolumeSource = (
    EmptyDirSource
    | ConfigMapSource
    | SecretSource
    | DownwardAPISource
    | ProjectedSource
    | PersistentVolumeClaimSource
    | HostPathSource
    | UnsupportedSource
)


@dataclass(frozen=True)
class Volume:
    name: str
    source: VolumeSource


def _items(raw: Any, where: str) -> tuple[KeyToPath, ...]:
    return tuple(
        KeyToPath(
            _str(_obj(item, where).get("key"), f"{where}.key"),
            _str(_obj(item, where).get("path"), f"{where}.path"),
            _opt_int(_obj(item, where).get("mode"), f"{where}.mode"),
        )
        for item in _list(raw, where)
    )


def _config_map_source(raw: Mapping[str, Any], where: str) -> ConfigMapSource:
    return ConfigMapSource(
        _str(raw.get("name"), f"{where}.name"),
        _items(raw.get("items"), f"{where}.items"),
        _opt_int(raw.get("defaultMode"), f"{where}.defaultMode"),
        _bool(raw.get("optional"), f"{where}.optional"),
    )


def _secret_source(raw: Mapping[str, Any], where: str, name_key: str) -> SecretSource:
    return SecretSource(
        _str(raw.get(name_key), f"{where}.{name_key}"),
        _items(raw.get("items"), f"{where}.items"),
        _opt_int(raw.get("defaultMode"), f"{where}.defaultMode"),
        _bool(raw.get("optional"), f"{where}.optional"),
    )


def _downward_source(raw: Mapping[str, Any], where: str) -> DownwardAPISource:
    items = []
    for item in _list(raw.get("items"), f"{where}.items"):
        spec = _obj(item, where)
        field_ref = _obj(spec.get("fieldRef"), f"{where}.fieldRef")
        resource_raw = _obj(spec.get("resourceFieldRef"), f"{where}.resourceFieldRef")
        resource = None
        if resource_raw:
            divisor = resource_raw.get("divisor")
            resource = ResourceFieldRef(
                _str(resource_raw.get("resource"), f"{where}.resource"),
                _opt_str(resource_raw.get("containerName"), f"{where}.containerName"),
                None if divisor is None else str(divisor),
            )
        items.append(
            DownwardItem(
                _str(spec.get("path"), f"{where}.path"),
                _opt_str(field_ref.get("fieldPath"), f"{where}.fieldPath"),
                resource,
                _opt_int(spec.get("mode"), f"{where}.mode"),
            )
        )
    return DownwardAPISource(tuple(items), _opt_int(raw.get("defaultMode"), where))


def _projected_source(raw: Mapping[str, Any], where: str) -> ProjectedSource | UnsupportedSource:
    sources: list[ConfigMapSource | SecretSource | DownwardAPISource | ServiceAccountTokenSource]
    sources = []
    for i, item in enumerate(_list(raw.get("sources"), f"{where}.sources")):
        spec = _obj(item, where)
        at = f"{where}.sources[{i}]"
        if "configMap" in spec:
            sources.append(_config_map_source(_obj(spec["configMap"], at), f"{at}.configMap"))
        elif "secret" in spec:
            sources.append(_secret_source(_obj(spec["secret"], at), f"{at}.secret", "name"))
        elif "downwardAPI" in spec:
            sources.append(_downward_source(_obj(spec["downwardAPI"], at), f"{at}.downwardAPI"))
        elif "serviceAccountToken" in spec:
            token = _obj(spec["serviceAccountToken"], at)
            sources.append(
                ServiceAccountTokenSource(
                    _str(token.get("path"), f"{at}.path"),
                    _opt_str(token.get("audience"), f"{at}.audience"),
                    _int(token.get("expirationSeconds"), f"{at}.expirationSeconds", 3607),
                )
            )
        else:
            return UnsupportedSource(tuple(f"projected.{kind}" for kind in sorted(spec)))
    return ProjectedSource(tuple(sources), _opt_int(raw.get("defaultMode"), where))


def _volume(raw: Mapping[str, Any], where: str) -> Volume:
    name = _str(raw.get("name"), f"{where}.name")
    source: VolumeSource
    if "emptyDir" in raw:
        source = EmptyDirSource()
    elif "configMap" in raw:
        source = _config_map_source(_obj(raw["configMap"], where), f"{where}.configMap")
    elif "secret" in raw:
        source = _secret_source(_obj(raw["secret"], where), f"{where}.secret", "secretName")
    elif "downwardAPI" in raw:
        source = _downward_source(_obj(raw["downwardAPI"], where), f"{where}.downwardAPI")
    elif "projected" in raw:
        source = _projected_source(_obj(raw["projected"], where), f"{where}.projected")
    elif "persistentVolumeClaim" in raw:
        claim = _obj(raw["persistentVolumeClaim"], where)
        source = PersistentVolumeClaimSource(
            _str(claim.get("claimName"), f"{where}.persistentVolumeClaim.claimName"),
            _bool(claim.get("readOnly"), f"{where}.persistentVolumeClaim.readOnly"),
        )
    elif "hostPath" in raw:
        source = HostPathSource(_str(_obj(raw["hostPath"], where).get("path"), f"{where}.path"))
    else:
        source = UnsupportedSource(tuple(sorted(k for k in raw if k != "name")))
    return Volume(name, source)


# -- the pod --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    resource_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None
    node_name: str = ""
    hostname: str | None = None
    service_account_name: str = "default"
    restart_policy: RestartPolicy = "Always"
    termination_grace_period_seconds: int = DEFAULT_TERMINATION_GRACE_SECONDS
    host_network: bool = False
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    volumes: tuple[Volume, ...] = ()
    readiness_gates: tuple[str, ...] = ()
    phase: str = "Pending"
    pod_ip: str | None = None
    # Conditions as the API has them, so a status patch can keep the ones other
    # writers own (PodScheduled from the scheduler, DisruptionTarget, readiness gates).
    conditions: tuple[Mapping[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def deleting(self) -> bool:
        return self.deletion_timestamp is not None

    def volume(self, name: str) -> Volume | None:
        return next((v for v in self.volumes if v.name == name), None)


def parse_pod(raw: Mapping[str, Any]) -> Pod:
    """Read a Pod as the API serves it (JSON, camelCase) into a `Pod`."""
    metadata = _obj(raw.get("metadata"), "metadata")
    spec = _obj(raw.get("spec"), "spec")
    status = _obj(raw.get("status"), "status")
    restart_policy = _restart_policy(spec.get("restartPolicy"), "spec.restartPolicy", "Always")
    assert restart_policy is not None
    return Pod(
        namespace=_str(metadata.get("namespace"), "metadata.namespace", "default"),
        name=_str(metadata.get("name"), "metadata.name"),
        uid=_str(metadata.get("uid"), "metadata.uid"),
        resource_version=_str(metadata.get("resourceVersion"), "metadata.resourceVersion"),
        labels=_str_map(metadata.get("labels"), "metadata.labels"),
        annotations=_str_map(metadata.get("annotations"), "metadata.annotations"),
        deletion_timestamp=_opt_str(metadata.get("deletionTimestamp"), "deletionTimestamp"),
        deletion_grace_period_seconds=_opt_int(
            metadata.get("deletionGracePeriodSeconds"), "metadata.deletionGracePeriodSeconds"
        ),
        node_name=_str(spec.get("nodeName"), "spec.nodeName"),
        hostname=_opt_str(spec.get("hostname"), "spec.hostname") or None,
        service_account_name=_str(
            spec.get("serviceAccountName"), "spec.serviceAccountName", "default"
        )
        or "default",
        restart_policy=restart_policy,
        termination_grace_period_seconds=_int(
            spec.get("terminationGracePeriodSeconds"),
            "spec.terminationGracePeriodSeconds",
            DEFAULT_TERMINATION_GRACE_SECONDS,
        ),
        host_network=_bool(spec.get("hostNetwork"), "spec.hostNetwork"),
        containers=tuple(
            _container(_obj(c, "spec.containers"), f"spec.containers[{i}]")
            for i, c in enumerate(_list(spec.get("containers"), "spec.containers"))
        ),
        init_containers=tuple(
            _container(_obj(c, "spec.initContainers"), f"spec.initContainers[{i}]")
            for i, c in enumerate(_list(spec.get("initContainers"), "spec.initContainers"))
        ),
        volumes=tuple(
            _volume(_obj(v, "spec.volumes"), f"spec.volumes[{i}]")
            for i, v in enumerate(_list(spec.get("volumes"), "spec.volumes"))
        ),
        readiness_gates=tuple(
            _str(_obj(g, "spec.readinessGates").get("conditionType"), "readinessGates")
            for g in _list(spec.get("readinessGates"), "spec.readinessGates")
        ),
        phase=_str(status.get("phase"), "status.phase", "Pending") or "Pending",
        pod_ip=_opt_str(status.get("podIP"), "status.podIP") or None,
        conditions=tuple(
            _obj(c, "status.conditions")
            for c in _list(status.get("conditions"), "status.conditions")
        ),
    )
