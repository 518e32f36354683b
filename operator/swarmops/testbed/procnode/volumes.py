"""Volumes as local directories.

=========================  ===================================================
volume                     local directory
=========================  ===================================================
emptyDir                   ``<pod dir>/volumes/<volume>`` (kept across container
                           restarts, gone with the pod)
configMap, secret,         ``<pod dir>/volumes/<volume>``, written once when the
downwardAPI, projected     pod starts (not refreshed while it runs); a projected
                           ``serviceAccountToken`` comes from the TokenRequest API
persistentVolumeClaim      ``<state dir>/pvcs/<namespace>/<claim>`` (outlives pods,
                           so a StatefulSet's data survives pod deletion)
hostPath                   ``<state dir>/hostpath/<path>`` (shared by the node's pods)
anything else              the pod's containers wait with reason
                           ``VolumeNotSupported``
=========================  ===================================================
"""

from __future__ import annotations

import base64
import os
import posixpath
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from swarmops.testbed.procnode.env import (
    ContainerConfigError,
    PodFields,
    field_value,
    resource_value,
)
from swarmops.testbed.procnode.model import (
    ConfigMapSource,
    Container,
    DownwardAPISource,
    EmptyDirSource,
    HostPathSource,
    KeyToPath,
    PersistentVolumeClaimSource,
    Pod,
    ProjectedSource,
    SecretSource,
    ServiceAccountTokenSource,
    UnsupportedSource,
    VolumeSource,
)

DEFAULT_MODE = 0o644


class VolumeError(Exception):
    """A volume cannot be materialised. `permanent` errors (an unsupported volume
    type) are not retried."""

    def __init__(self, reason: str, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class FileToWrite:
    path: str  # relative to the volume's directory
    content: bytes
    mode: int


def safe_relative_path(path: str) -> str:
    """A key-to-path target: relative and never escaping its volume."""
    normalised = posixpath.normpath(path)
    if path.startswith("/") or normalised == ".." or normalised.startswith("../") or not path:
        raise VolumeError("FailedMount", f"invalid path {path!r} in a volume item")
    return normalised


def key_files(
    kind: str,
    name: str,
    data: Mapping[str, bytes] | None,
    items: Sequence[KeyToPath],
    *,
    default_mode: int | None,
    optional: bool,
) -> list[FileToWrite]:
    """The files a ConfigMap or Secret volume (or projection) holds: every key, or
    just the listed items at their paths."""
    mode = DEFAULT_MODE if default_mode is None else default_mode
    if data is None:
        if optional:
            return []
        raise VolumeError("FailedMount", f'{kind.lower()} "{name}" not found')
    if not items:
        return [FileToWrite(safe_relative_path(k), v, mode) for k, v in sorted(data.items())]
    files = []
    for item in items:
        if item.key not in data:
            if optional:
                continue
            raise VolumeError("FailedMount", f"couldn't find key {item.key} in {kind} {name}")
        files.append(
            FileToWrite(
                safe_relative_path(item.path),
                data[item.key],
                mode if item.mode is None else item.mode,
            )
        )
    return files


def downward_files(
    source: DownwardAPISource, fields: PodFields, container: Container | None
) -> list[FileToWrite]:
    mode = DEFAULT_MODE if source.default_mode is None else source.default_mode
    files = []
    for item in source.items:
        if item.field_path is not None:
            value = field_value(item.field_path, fields)
        elif item.resource is not None:
            owner = container or (fields.pod.containers[0] if fields.pod.containers else None)
            if owner is None:
                raise ContainerConfigError("resourceFieldRef needs a container")
            value = resource_value(item.resource, fields.pod, owner)
        else:
            continue
        files.append(
            FileToWrite(
                safe_relative_path(item.path),
                value.encode(),
                mode if item.mode is None else item.mode,
            )
        )
    return files


def write_files(directory: Path, files: Sequence[FileToWrite]) -> None:
    for file in files:
        target = directory / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.content)
        target.chmod(file.mode & 0o777)


def config_map_data(raw: Mapping[str, object]) -> dict[str, bytes]:
    data = {str(k): str(v).encode() for k, v in dict(raw.get("data") or {}).items()}  # type: ignore[call-overload]
    binary = dict(raw.get("binaryData") or {})  # type: ignore[call-overload]
    data.update({str(k): base64.b64decode(str(v)) for k, v in binary.items()})
    return data


def secret_data(raw: Mapping[str, object]) -> dict[str, bytes]:
    data = dict(raw.get("data") or {})  # type: ignore[call-overload]
    return {str(k): base64.b64decode(str(v)) for k, v in data.items()}


Fetch = Callable[[str, str], Mapping[str, bytes] | None]
RequestToken = Callable[[ServiceAccountTokenSource], str]


@dataclass(frozen=True)
class VolumeSources:
    """The I/O the materialiser needs, so that it runs against the real API in the
    node and against plain data in tests."""

    config_map: Fetch  # (namespace, name) -> data, None when missing
    secret: Fetch
    token: RequestToken


def _projected_files(
    source: ProjectedSource, pod: Pod, fields: PodFields, io: VolumeSources
) -> list[FileToWrite]:
    files: list[FileToWrite] = []
    for part in source.sources:
        if isinstance(part, ConfigMapSource):
            data = io.config_map(pod.namespace, part.name)
            mode = part.default_mode if part.default_mode is not None else source.default_mode
            files += key_files(
                "ConfigMap", part.name, data, part.items, default_mode=mode, optional=part.optional
            )
        elif isinstance(part, SecretSource):
            data = io.secret(pod.namespace, part.name)
            mode = part.default_mode if part.default_mode is not None else source.default_mode
            files += key_files(
                "Secret", part.name, data, part.items, default_mode=mode, optional=part.optional
            )
        elif isinstance(part, DownwardAPISource):
            inherited = DownwardAPISource(part.items, part.default_mode or source.default_mode)
            files += downward_files(inherited, fields, None)
        else:
            token = io.token(part)
            mode = 0o600 if source.default_mode is None else source.default_mode
            files.append(FileToWrite(safe_relative_path(part.path), token.encode(), mode))
    return files


def materialise(
    pod: Pod, fields: PodFields, pod_dir: Path, state_dir: Path, io: VolumeSources
) -> dict[str, Path]:
    """Create every volume of the pod; returns volume name → local directory."""
    local: dict[str, Path] = {}
    for volume in pod.volumes:
        source: VolumeSource = volume.source
        directory = pod_dir / "volumes" / volume.name
        if isinstance(source, UnsupportedSource):
            raise VolumeError(
                "VolumeNotSupported",
                f"volume {volume.name!r}: the process node cannot provide "
                f"{'/'.join(source.kinds) or 'this kind of'} volumes",
                permanent=True,
            )
        if isinstance(source, PersistentVolumeClaimSource):
            directory = state_dir / "pvcs" / pod.namespace / source.claim_name
            directory.mkdir(parents=True, exist_ok=True)
        elif isinstance(source, HostPathSource):
            directory = state_dir / "hostpath" / source.path.lstrip("/")
            directory.mkdir(parents=True, exist_ok=True)
        elif isinstance(source, EmptyDirSource):
            directory.mkdir(parents=True, exist_ok=True)
        else:
            if isinstance(source, ConfigMapSource):
                data = io.config_map(pod.namespace, source.name)
                files = key_files(
                    "ConfigMap",
                    source.name,
                    data,
                    source.items,
                    default_mode=source.default_mode,
                    optional=source.optional,
                )
            elif isinstance(source, SecretSource):
                data = io.secret(pod.namespace, source.name)
                files = key_files(
                    "Secret",
                    source.name,
                    data,
                    source.items,
                    default_mode=source.default_mode,
                    optional=source.optional,
                )
            elif isinstance(source, DownwardAPISource):
                files = downward_files(source, fields, None)
            else:
                files = _projected_files(source, pod, fields, io)
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            write_files(directory, files)
        local[volume.name] = directory
    return local


def container_mounts(container: Container, volumes: Mapping[str, Path]) -> list[tuple[str, str]]:
    """(mountPath, local path) for each of the container's mounts; a missing
    sub-path is created as a directory, as the kubelet does."""
    mounts = []
    for mount in container.volume_mounts:
        base = volumes.get(mount.name)
        if base is None:
            raise VolumeError(
                "FailedMount", f"container {container.name}: no volume named {mount.name!r}"
            )
        target = base
        if mount.sub_path:
            target = base / safe_relative_path(mount.sub_path)
            if not target.exists():
                target.mkdir(parents=True)
        mounts.append((mount.mount_path, os.fspath(target)))
    return mounts
