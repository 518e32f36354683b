"""Volumes as local directories (file contents, modes, paths)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from swarmops.testbed.procnode.env import PodFields
from swarmops.testbed.procnode.model import KeyToPath, ServiceAccountTokenSource, parse_pod
from swarmops.testbed.procnode.volumes import (
    VolumeError,
    VolumeSources,
    config_map_data,
    container_mounts,
    key_files,
    materialise,
    safe_relative_path,
    secret_data,
)


def test_all_keys_or_listed_items() -> None:
    data = {"a": b"1", "b": b"2"}
    assert [
        (f.path, f.content, f.mode)
        for f in key_files("ConfigMap", "c", data, (), default_mode=None, optional=False)
    ] == [
        ("a", b"1", 0o644),
        ("b", b"2", 0o644),
    ]
    files = key_files(
        "Secret",
        "s",
        data,
        (KeyToPath("b", "dir/b.txt", 0o400),),
        default_mode=0o600,
        optional=False,
    )
    assert [(f.path, f.mode) for f in files] == [("dir/b.txt", 0o400)]


def test_missing_objects_and_keys() -> None:
    assert key_files("Secret", "s", None, (), default_mode=None, optional=True) == []
    with pytest.raises(VolumeError, match='secret "s" not found'):
        key_files("Secret", "s", None, (), default_mode=None, optional=False)
    with pytest.raises(VolumeError, match="couldn't find key x"):
        key_files("ConfigMap", "c", {}, (KeyToPath("x", "x"),), default_mode=None, optional=False)


@pytest.mark.parametrize("path", ["/etc/passwd", "../up", "a/../../up", ""])
def test_item_paths_may_not_escape_the_volume(path: str) -> None:
    with pytest.raises(VolumeError):
        safe_relative_path(path)


@given(st.from_regex(r"[a-z0-9_.-]{1,8}(/[a-z0-9_-]{1,8}){0,3}", fullmatch=True))
def test_plain_relative_paths_stay_inside(path: str) -> None:
    assume(path.split("/", maxsplit=1)[0] not in (".", ".."))
    assert not safe_relative_path(path).startswith("..")


def test_api_data_decoding() -> None:
    assert config_map_data({"data": {"k": "v"}, "binaryData": {"b": "AAE="}}) == {
        "k": b"v",
        "b": b"\x00\x01",
    }
    assert secret_data({"data": {"p": "cGFzcw=="}}) == {"p": b"pass"}


def pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]] | None = None) -> Any:
    return parse_pod(
        {
            "metadata": {"name": "p", "namespace": "ns", "uid": "uid-7"},
            "spec": {
                "containers": [{"name": "c", "image": "redis", "volumeMounts": mounts or []}],
                "volumes": volumes,
            },
        }
    )


SOURCES = VolumeSources(
    config_map=lambda ns, name: {"redis.conf": b"port 7000\n"} if name == "conf" else None,
    secret=lambda ns, name: {"password": b"pw"} if name == "auth" else None,
    token=lambda source: f"token-for-{source.path}",
)


def test_materialise_writes_every_volume(tmp_path: Path) -> None:
    spec = pod(
        [
            {"name": "conf", "configMap": {"name": "conf"}},
            {"name": "auth", "secret": {"secretName": "auth", "defaultMode": 0o400}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data-p"}},
            {
                "name": "sa",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token"}},
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {"fieldPath": "metadata.namespace"},
                                    }
                                ]
                            }
                        },
                    ]
                },
            },
        ]
    )
    pod_dir, state_dir = tmp_path / "pods" / "ns" / "p", tmp_path
    volumes = materialise(
        spec, PodFields(spec, "127.77.0.2", "127.77.0.1"), pod_dir, state_dir, SOURCES
    )
    assert (volumes["conf"] / "redis.conf").read_text() == "port 7000\n"
    assert (volumes["auth"] / "password").stat().st_mode & 0o777 == 0o400
    assert volumes["scratch"] == pod_dir / "volumes" / "scratch" and volumes["scratch"].is_dir()
    assert volumes["data"] == state_dir / "pvcs" / "ns" / "data-p"
    assert (volumes["sa"] / "token").read_text() == "token-for-token"
    assert (volumes["sa"] / "token").stat().st_mode & 0o777 == 0o600
    assert (volumes["sa"] / "namespace").read_text() == "ns"


def test_unsupported_volume_is_permanent(tmp_path: Path) -> None:
    spec = pod([{"name": "remote", "nfs": {"server": "x", "path": "/"}}])
    with pytest.raises(VolumeError) as raised:
        materialise(spec, PodFields(spec, "ip", "host"), tmp_path / "p", tmp_path, SOURCES)
    assert raised.value.permanent and raised.value.reason == "VolumeNotSupported"


def test_missing_config_map_is_retried(tmp_path: Path) -> None:
    spec = pod([{"name": "gone", "configMap": {"name": "absent"}}])
    with pytest.raises(VolumeError) as raised:
        materialise(spec, PodFields(spec, "ip", "host"), tmp_path / "p", tmp_path, SOURCES)
    assert not raised.value.permanent


def test_mounts_and_sub_paths(tmp_path: Path) -> None:
    spec = pod(
        [{"name": "conf", "emptyDir": {}}],
        [
            {"name": "conf", "mountPath": "/etc/redis"},
            {"name": "conf", "mountPath": "/x", "subPath": "sub/dir"},
        ],
    )
    mounts = container_mounts(spec.containers[0], {"conf": tmp_path / "conf"})
    assert mounts == [
        ("/etc/redis", str(tmp_path / "conf")),
        ("/x", str(tmp_path / "conf" / "sub" / "dir")),
    ]
    assert (tmp_path / "conf" / "sub" / "dir").is_dir()
    with pytest.raises(VolumeError, match="no volume named"):
        container_mounts(spec.containers[0], {})


def test_token_source_type() -> None:
    assert ServiceAccountTokenSource("token").expiration_seconds == 3607
