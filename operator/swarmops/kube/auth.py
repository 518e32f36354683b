"""Cluster credentials: loaded once, in one place, for kopf and for our own client.

The operator holds one `Credentials`. kopf's login handler returns its
`ConnectionInfo`, and `KubeClient` builds its session from the same object, so both
talk to the same server as the same user. A 401 on either side reloads it (bound
service-account tokens rotate).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(Exception):
    """No usable credentials; the message says what was tried and why it failed."""


@dataclass(frozen=True)
class _Entry:
    """One kubeconfig map entry, remembering its file to resolve relative paths."""

    body: dict[str, Any]
    origin: Path


def _resolve(path: str | None, origin: Path) -> str | None:
    if not path:
        return None
    expanded = Path(os.path.expanduser(path))
    return str(expanded if expanded.is_absolute() else origin.parent / expanded)


def _read_kubeconfig_files(paths: list[Path]) -> tuple[str | None, dict[str, dict[str, _Entry]]]:
    """Merge kubeconfig files the way kubectl does: the first file to define a name wins."""
    current_context: str | None = None
    sections: dict[str, dict[str, _Entry]] = {"contexts": {}, "clusters": {}, "users": {}}
    singular = {"contexts": "context", "clusters": "cluster", "users": "user"}
    for path in paths:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as error:
            raise CredentialsError(f"cannot read kubeconfig {path}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise CredentialsError(f"kubeconfig {path} is not valid YAML: {error}") from None
        if not isinstance(config, dict):
            raise CredentialsError(f"kubeconfig {path} is not a mapping")
        current_context = current_context or config.get("current-context") or None
        for section, key in singular.items():
            for item in config.get(section) or []:
                if isinstance(item, dict) and item.get("name") not in sections[section]:
                    sections[section][str(item.get("name"))] = _Entry(item.get(key) or {}, path)
    return current_context, sections


def connection_from_kubeconfig(paths: list[Path], context: str | None) -> kopf.ConnectionInfo:
    current, sections = _read_kubeconfig_files(paths)
    shown = os.pathsep.join(str(path) for path in paths)
    name = context or current
    if not name:
        raise CredentialsError(f"kubeconfig {shown} sets no current-context; give --context")
    if name not in sections["contexts"]:
        raise CredentialsError(f"context {name!r} is not in kubeconfig {shown}")
    ctx = sections["contexts"][name].body
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if cluster_name not in sections["clusters"]:
        raise CredentialsError(f"context {name!r} names cluster {cluster_name!r}, not in {shown}")
    cluster = sections["clusters"][str(cluster_name)]
    user = sections["users"].get(str(user_name), _Entry({}, cluster.origin))
    if "exec" in user.body or "auth-provider" in user.body:
        raise CredentialsError(
            f"user {user_name!r} authenticates through an exec plugin or auth provider, "
            "which swarmops does not run; use a token, token file or client certificate"
        )
    server = cluster.body.get("server")
    if not server:
        raise CredentialsError(f"cluster {cluster_name!r} in {shown} has no server")
    token = user.body.get("token")
    token_file = _resolve(user.body.get("tokenFile"), user.origin)
    if not token and token_file:
        token = _read_token(Path(token_file))
    return kopf.ConnectionInfo(
        server=str(server),
        ca_path=_resolve(cluster.body.get("certificate-authority"), cluster.origin),
        ca_data=cluster.body.get("certificate-authority-data"),
        insecure=bool(cluster.body.get("insecure-skip-tls-verify", False)),
        certificate_path=_resolve(user.body.get("client-certificate"), user.origin),
        certificate_data=user.body.get("client-certificate-data"),
        private_key_path=_resolve(user.body.get("client-key"), user.origin),
        private_key_data=user.body.get("client-key-data"),
        username=user.body.get("username"),
        password=user.body.get("password"),
        token=token,
        default_namespace=ctx.get("namespace"),
        proxy_url=cluster.body.get("proxy-url"),
    )


def _read_token(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise CredentialsError(f"cannot read token file {path}: {error.strerror}") from None


def connection_in_cluster(
    environ: Mapping[str, str], service_account_dir: Path = SERVICE_ACCOUNT_DIR
) -> kopf.ConnectionInfo:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise CredentialsError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    namespace_file = service_account_dir / "namespace"
    namespace = (
        namespace_file.read_text(encoding="utf-8").strip() if namespace_file.exists() else None
    )
    ca_file = service_account_dir / "ca.crt"
    return kopf.ConnectionInfo(
        server=f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}",
        ca_path=str(ca_file) if ca_file.exists() else None,
        token=_read_token(service_account_dir / "token"),
        default_namespace=namespace,
    )


def load_connection_info(
    kubeconfig: Path | None,
    context: str | None,
    environ: Mapping[str, str],
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    home: Path | None = None,
) -> kopf.ConnectionInfo:
    """Find credentials as controller-runtime does.

    In order: an explicit kubeconfig (--kubeconfig), `$KUBECONFIG`, the pod's service
    account (in-cluster), `~/.kube/config`.
    """
    if kubeconfig is not None:
        return connection_from_kubeconfig([kubeconfig], context)
    listed = [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return connection_from_kubeconfig(listed, context)
    if environ.get("KUBERNETES_SERVICE_HOST") and (service_account_dir / "token").exists():
        return connection_in_cluster(environ, service_account_dir)
    default = (home if home is not None else Path.home()) / ".kube" / "config"
    if default.exists():
        return connection_from_kubeconfig([default], context)
    raise CredentialsError(
        "no cluster credentials: give --kubeconfig, set KUBECONFIG, run in a pod with a "
        "service account, or create ~/.kube/config"
    )


class Credentials:
    """The operator's current `ConnectionInfo`, reloadable when the apiserver rejects it."""

    def __init__(self, load: Callable[[], kopf.ConnectionInfo]) -> None:
        self._load = load
        self._current = load()  # fail fast, before the operator starts anything
        self._generation = 0
        self._lock = asyncio.Lock()
        self._given_to_kopf = False

    @property
    def current(self) -> kopf.ConnectionInfo:
        return self._current

    @property
    def generation(self) -> int:
        """Bumped on every reload, so concurrent 401s trigger only one reload."""
        return self._generation

    async def login(self) -> kopf.ConnectionInfo:
        """For kopf's login handler: what was loaded at first, fresh credentials after.

        kopf logs in again only when the apiserver rejected the credentials (401),
        so a re-login reloads them (a rotated service-account token).
        """
        if not self._given_to_kopf:
            self._given_to_kopf = True
            return self._current
        return await self.reload()

    async def reload(self, *, seen_generation: int | None = None) -> kopf.ConnectionInfo:
        async with self._lock:
            if seen_generation is not None and seen_generation != self._generation:
                return self._current  # someone else already reloaded since the caller looked
            self._current = await asyncio.to_thread(self._load)
            self._generation += 1
            return self._current
