"""Finding cluster credentials: explicit kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from swarmops.kube.auth import ClusterAccess, Credentials, CredentialsError, load_connection_info

CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n").decode()


def kubeconfig(path: Path, *, current: str | None = "dev", **sections: Any) -> Path:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": sections.get(
            "clusters",
            [
                {
                    "name": "c",
                    "cluster": {
                        "server": "https://10.0.0.1:6443",
                        "certificate-authority-data": CA,
                    },
                }
            ],
        ),
        "users": sections.get("users", [{"name": "u", "user": {"token": "secret-token"}}]),
        "contexts": sections.get(
            "contexts",
            [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": "team"}}],
        ),
    }
    if current is not None:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


def test_explicit_kubeconfig(tmp_path: Path) -> None:
    info = load_connection_info(kubeconfig(tmp_path / "config"), None, {})
    assert info.server == "https://10.0.0.1:6443"
    assert info.ca_data == CA
    assert info.token == "secret-token"
    assert info.default_namespace == "team"
    assert info.http_headers() == {"Authorization": "Bearer secret-token"}


def test_relative_paths_resolve_against_the_kubeconfig_file(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "token").write_text("file-token\n")
    path = kubeconfig(
        tmp_path / "config",
        clusters=[
            {
                "name": "c",
                "cluster": {"server": "https://h:1", "certificate-authority": "pki/ca.crt"},
            }
        ],
        users=[
            {
                "name": "u",
                "user": {
                    "client-certificate": "pki/admin.crt",
                    "client-key": "/abs/admin.key",
                    "tokenFile": "token",
                },
            }
        ],
    )
    info = load_connection_info(path, None, {})
    assert info.ca_path == str(tmp_path / "pki" / "ca.crt")
    assert info.certificate_path == str(tmp_path / "pki" / "admin.crt")
    assert info.private_key_path == "/abs/admin.key"
    assert info.token == "file-token"


def test_kubeconfig_env_merges_files_first_one_wins(tmp_path: Path) -> None:
    first = kubeconfig(
        tmp_path / "a",
        current="other",
        contexts=[{"name": "other", "context": {"cluster": "c", "user": "u"}}],
    )
    second = kubeconfig(tmp_path / "b", current="dev")
    info = load_connection_info(None, None, {"KUBECONFIG": f"{first}:{second}"})
    assert info.default_namespace is None  # "other" from the first file wins
    info = load_connection_info(None, "dev", {"KUBECONFIG": f"{first}:{second}"})
    assert info.default_namespace == "team"


def test_in_cluster_service_account(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("swarmops-system")
    (tmp_path / "ca.crt").write_text("ca")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    info = load_connection_info(None, None, env, service_account_dir=tmp_path, home=tmp_path)
    assert info.server == "https://[fd00::1]:443"
    assert info.token == "sa-token"
    assert info.ca_path == str(tmp_path / "ca.crt")
    assert info.default_namespace == "swarmops-system"


def test_home_kubeconfig_is_the_last_resort(tmp_path: Path) -> None:
    (tmp_path / ".kube").mkdir()
    kubeconfig(tmp_path / ".kube" / "config")
    info = load_connection_info(
        None, None, {}, service_account_dir=tmp_path / "none", home=tmp_path
    )
    assert info.token == "secret-token"


@pytest.mark.parametrize(
    ("setup", "context", "message"),
    [
        ({"current": None}, None, "sets no current-context"),
        ({}, "prod", "context 'prod' is not in kubeconfig"),
        (
            {"contexts": [{"name": "dev", "context": {"cluster": "x", "user": "u"}}]},
            None,
            "names cluster 'x'",
        ),
        ({"users": [{"name": "u", "user": {"exec": {"command": "aws"}}}]}, None, "exec plugin"),
        ({"clusters": [{"name": "c", "cluster": {}}]}, None, "has no server"),
    ],
)
def test_bad_kubeconfigs_say_what_is_wrong(
    tmp_path: Path, setup: dict[str, Any], context: str | None, message: str
) -> None:
    with pytest.raises(CredentialsError, match=message):
        load_connection_info(kubeconfig(tmp_path / "config", **setup), context, {})


def test_no_credentials_anywhere(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no cluster credentials"):
        load_connection_info(None, None, {}, service_account_dir=tmp_path, home=tmp_path)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="cannot read kubeconfig"):
        load_connection_info(tmp_path / "absent", None, {})
    (tmp_path / "bad").write_text("{: not yaml")
    with pytest.raises(CredentialsError, match="not valid YAML"):
        load_connection_info(tmp_path / "bad", None, {})


def test_credentials_reload_once_for_concurrent_rejections() -> None:
    loads = 0

    def load() -> ClusterAccess:
        nonlocal loads
        loads += 1
        return ClusterAccess(server="https://h", token=f"token-{loads}")

    async def scenario() -> list[str | None]:
        credentials = Credentials(load)
        first_login = await credentials.login()
        seen = credentials.generation
        # Two requests rejected with the same credentials: one reload, not two.
        await asyncio.gather(
            credentials.reload(seen_generation=seen), credentials.reload(seen_generation=seen)
        )
        relogin = await credentials.login()  # kopf logs in again only after a 401
        return [first_login.token, credentials.current.token, relogin.token]

    assert asyncio.run(scenario()) == ["token-1", "token-3", "token-3"]
    assert loads == 3


def test_the_gpu_agent_does_not_load_kopf() -> None:
    # kopf is ~18 MB of a node agent's memory it never uses; only the operator logs in.
    probe = "import sys, swarmops.gpu.command; print('kopf' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_login_hands_kopf_the_same_credentials() -> None:
    access = ClusterAccess(server="https://h", token="t", default_namespace="ns")
    info = asyncio.run(Credentials(lambda: access).login())
    assert isinstance(info, kopf.ConnectionInfo)
    assert (info.server, info.token, info.default_namespace) == ("https://h", "t", "ns")
