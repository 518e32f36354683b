"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback,
configured as a kubeadm cluster would be: RBAC and the Node authorizer on, the
default admission plugins plus NodeRestriction, service-account tokens signed by
the apiserver, each controller with its own service-account credentials."""

from __future__ import annotations

import base64
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from swarmops.testbed.pki import CertificateAuthority, KeyPair, service_account_signing_key
from swarmops.testbed.processes import ManagedProcess, free_port, stop_leftovers, wait_until

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
# The apiserver's own ClusterIP, the first of the range, goes into its certificate.
KUBERNETES_SERVICE_IP = "10.96.0.1"


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: the user and groups RBAC will see."""

    name: str
    user: str
    groups: tuple[str, ...] = ()


ADMIN = ClientIdentity("admin", "swarmops-testbed-admin", ("system:masters",))
CONTROLLER_MANAGER = ClientIdentity("controller-manager", "system:kube-controller-manager")
SCHEDULER = ClientIdentity("scheduler", "system:kube-scheduler")


def kubeconfig_document(server: str, ca: Path, client: KeyPair, user: str) -> dict[str, object]:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "swarmops-testbed",
                "cluster": {"server": server, "certificate-authority-data": b64(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(client.cert),
                    "client-key-data": b64(client.key),
                },
            }
        ],
        "contexts": [
            {"name": "swarmops-testbed", "context": {"cluster": "swarmops-testbed", "user": user}}
        ],
        "current-context": "swarmops-testbed",
    }


@dataclass
class ControlPlane:
    bin_dir: Path
    state_dir: Path
    # Room for benchmarks' bursts: the defaults (400/200) throttle a 1,000-pod fill.
    max_requests_inflight: int = 1000
    max_mutating_requests_inflight: int = 500
    processes: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki_dir = self.state_dir / "pki"
        self.log_dir = self.state_dir / "logs"
        self.apiserver_port = 0
        self.server = ""

    @property
    def admin_kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kubeconfig_for(self, identity: ClientIdentity) -> Path:
        return self.state_dir / f"{identity.name}.kubeconfig"

    def start(self, timeout: float = 120.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stop_leftovers(self.log_dir)
        ca = CertificateAuthority(self.pki_dir)
        service_account_key = service_account_signing_key(self.pki_dir)
        serving = ca.issue(
            "apiserver",
            "kube-apiserver",
            server_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            server_ips=("127.0.0.1", KUBERNETES_SERVICE_IP),
        )
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        for identity in (ADMIN, CONTROLLER_MANAGER, SCHEDULER):
            pair = ca.issue(identity.name, identity.user, organizations=identity.groups)
            document = kubeconfig_document(self.server, ca.pair.cert, pair, identity.user)
            path = self.kubeconfig_for(identity)
            path.write_text(yaml.safe_dump(document))
            path.chmod(0o600)
        self.kubeconfig_for(ADMIN).replace(self.admin_kubeconfig)

        self._start_etcd(timeout)
        self._start_apiserver(ca, serving, service_account_key, timeout)
        self._start_controller_manager(ca, service_account_key, timeout)
        self._start_scheduler(timeout)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def _spawn(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.log_dir)
        process.start()
        self.processes.append(process)
        return process

    def _start_etcd(self, timeout: float) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(self.bin_dir / "etcd"),
                "--name=testbed",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=testbed={peer_url}",
                "--quota-backend-bytes=8589934592",
                "--auto-compaction-retention=1",
                # The test bed's data is thrown away after the run; fsync only costs time.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )
        wait_until(
            lambda: _http_ok(f"{self.etcd_url}/health"),
            timeout=timeout,
            what="etcd to be healthy",
            watched=[etcd],
        )

    def _start_apiserver(
        self,
        ca: CertificateAuthority,
        serving: KeyPair,
        service_account_key: KeyPair,
        timeout: float,
    ) -> None:
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={self.etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.pair.cert}",
                f"--service-account-key-file={service_account_key.cert}",
                f"--service-account-signing-key-file={service_account_key.key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--max-requests-inflight={self.max_requests_inflight}",
                f"--max-mutating-requests-inflight={self.max_mutating_requests_inflight}",
                "--profiling=false",
                f"--cert-dir={self.pki_dir / 'apiserver-generated'}",
                "--v=1",
            ],
        )
        wait_until(
            lambda: self._https_ok("/readyz"),
            timeout=timeout,
            what="kube-apiserver to be ready",
            watched=[apiserver],
        )

    def _start_controller_manager(
        self, ca: CertificateAuthority, service_account_key: KeyPair, timeout: float
    ) -> None:
        self._start_secure_component(
            "kube-controller-manager",
            CONTROLLER_MANAGER,
            [
                f"--kubeconfig={self.kubeconfig_for(CONTROLLER_MANAGER)}",
                f"--root-ca-file={ca.pair.cert}",
                f"--service-account-private-key-file={service_account_key.key}",
                f"--cluster-signing-cert-file={ca.pair.cert}",
                f"--cluster-signing-key-file={ca.pair.key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--leader-elect=false",
                # Garbage collection and namespace deletion of thousands of pods in
                # benchmarks would crawl at the default 20 requests per second.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
            ],
            timeout,
        )

    def _start_scheduler(self, timeout: float) -> None:
        config = self.state_dir / "scheduler-config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    # The default 50 bindings per second would cap pool fill below target.
                    "clientConnection": {
                        "kubeconfig": str(self.kubeconfig_for(SCHEDULER)),
                        "qps": 500,
                        "burst": 1000,
                    },
                    "leaderElection": {"leaderElect": False},
                }
            )
        )
        self._start_secure_component("kube-scheduler", SCHEDULER, [f"--config={config}"], timeout)

    def _start_secure_component(
        self, name: str, identity: ClientIdentity, flags: list[str], timeout: float
    ) -> None:
        """Start a component that serves HTTPS on its own port and checks its callers
        against the apiserver, and wait until its /healthz answers."""
        kubeconfig = self.kubeconfig_for(identity)
        port = free_port()
        process = self._spawn(
            name,
            [
                str(self.bin_dir / name),
                *flags,
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.pki_dir / (name + '-generated')}",
                "--v=1",
            ],
        )
        wait_until(
            lambda: _https_anonymous_ok(f"https://127.0.0.1:{port}/healthz"),
            timeout=timeout,
            what=f"{name} to be healthy",
            watched=[process],
        )

    def _https_ok(self, path: str) -> bool:
        context = ssl.create_default_context(cafile=str(self.pki_dir / "ca.crt"))
        context.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")
        with urllib.request.urlopen(f"{self.server}{path}", context=context, timeout=2) as r:
            return bool(r.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def _https_anonymous_ok(url: str) -> bool:
    # The components serve their health checks with self-signed certificates.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=2) as response:
        return bool(response.status == 200)
