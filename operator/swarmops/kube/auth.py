"""Cluster credentials: loaded once, in one place, for kopf and for our own client.

The operator holds one `Credentials`. kopf's login handler returns it as a
`kopf.ConnectionInfo`, and `KubeClient` builds its session from the same
`ClusterAccess`, so both talk to the same server as the same user. A 401 on either
side reloads it (bound service-account tokens rotate). `ClusterAccess` is our own
type so that the GPU node agent, which uses `KubeClient` but not kopf, never loads
kopf (about 18 MB of its memory).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import yaml

if TYPE_CHECKING:
    import kopf

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class CredentialsError(Exception):
    """No usable credentials; the message says what was tried and why it failed."""


@dataclass(frozen=True)
class ClusterAccess:
    """Where the apiserver is and who we are to it (the fields of a kubeconfig entry).

    `*_data` fields hold what a kubeconfig holds: base64 of PEM (raw PEM is accepted too)."""

    server: str
    ca_path: str | None = None
    ca_data: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    certificate_data: str | None = None
    private_key_path: str | None = None
    private_key_data: str | None = None
    username: str | None = None
    password: str | None = None
    token: str | None = None
    default_namespace: str | None = None
    proxy_url: str | None = None
    trust_env: bool = False

    def http_headers(self) -> dict[str, str]:
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.username and self.password:
            return {"Authorization": aiohttp.BasicAuth(self.username, self.password).encode()}
        return {}

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=self.ca_path, cadata=_pem(self.ca_data) if self.ca_data else None
        )
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        # Python's ssl loads client keys only from files: data from a kubeconfig goes
        # through private (0600) temporary files that live only while it is loaded.
        with contextlib.ExitStack() as stack:
            certificate = self.certificate_path or _temporary(stack, self.certificate_data)
            key = self.private_key_path or _temporary(stack, self.private_key_data)
            if certificate and key:
                context.load_cert_chain(certfile=certificate, keyfile=key)
        return context

    def to_kopf(self) -> kopf.ConnectionInfo:
        """The same credentials as kopf's `ConnectionInfo`, for its login handler."""
        import kopf  # noqa: PLC0415  (only the operator logs kopf in)

        return kopf.ConnectionInfo(**asdict(self))


def _pem(data: str) -> str:
    if data.lstrip().startswith("-----BEGIN"):
        return data
    return base64.b64decode(data).decode("ascii")


def _temporary(stack: contextlib.ExitStack, data: str | None) -> str | None:
    if not data:
        return None
    file = stack.enter_context(tempfile.NamedTemporaryFile(buffering=0))  # noqa: SIM115
    file.write(_pem(data).encode("ascii"))
    return file.name


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


def connection_from_kubeconfig(paths: list[Path], context: str | None) -> ClusterAccess:
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
    return ClusterAccess(
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
) -> ClusterAccess:
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise CredentialsError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    namespace_file = service_account_dir / "namespace"
    namespace = (
        namespace_file.read_text(encoding="utf-8").strip() if namespace_file.exists() else None
    )
    ca_file = service_account_dir / "ca.crt"
    return ClusterAccess(
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
) -> ClusterAccess:
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
    """The current `ClusterAccess`, reloadable when the apiserver rejects it."""

    def __init__(self, load: Callable[[], ClusterAccess]) -> None:
        self._load = load
        self._current = load()  # fail fast, before the operator starts anything
        self._generation = 0
        self._lock = asyncio.Lock()
        self._given_to_kopf = False

    @property
    def current(self) -> ClusterAccess:
        return self._current

    @property
    def generation(self) -> int:
        """Bumped on every reload, so concurrent 401s trigger only one reload."""
        return self._generation

    async def login(self) -> kopf.ConnectionInfo:
        """For kopf's login handler: what was loaded at first, fresh credentials after,
        as a `kopf.ConnectionInfo`.

        kopf logs in again only when the apiserver rejected the credentials (401),
        so a re-login reloads them (a rotated service-account token).
        """
        if not self._given_to_kopf:
            self._given_to_kopf = True
            return self._current.to_kopf()
        return (await self.reload()).to_kopf()

    async def reload(self, *, seen_generation: int | None = None) -> ClusterAccess:
        async with self._lock:
            if seen_generation is not None and seen_generation != self._generation:
                return self._current  # someone else already reloaded since the caller looked
            self._current = await asyncio.to_thread(self._load)
            self._generation += 1
            return self._current
