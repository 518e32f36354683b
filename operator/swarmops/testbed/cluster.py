"""The whole test bed: control plane, kwok nodes and the process-backed node.

with TestBed(state_dir) as bed:
    bed.kubectl("get", "nodes")
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from kubernetes import client, config

from swarmops.testbed.binaries import ensure_binaries
from swarmops.testbed.controlplane import ControlPlane
from swarmops.testbed.kwok import start_kwok
from swarmops.testbed.nodes import DEFAULT_GPU_PRODUCTS, GPUProduct, cpu_node, gpu_node
from swarmops.testbed.processes import ManagedProcess, wait_until
from swarmops.testbed.procnode import ProcessNode

PROCESS_NODE_NAME = "procnode-0"


@dataclass(frozen=True)
class TestBedConfig:
    cpu_nodes: int = 3
    gpu_products: tuple[GPUProduct, ...] = DEFAULT_GPU_PRODUCTS
    gpu_nodes_per_product: int = 1
    process_node: bool = True


@dataclass
class TestBed:
    __test__ = False  # a fixture's type, not a pytest test class

    state_dir: Path
    config: TestBedConfig = field(default_factory=TestBedConfig)

    def __post_init__(self) -> None:
        self.state_dir = self.state_dir.resolve()
        self.bin_dir = Path()
        self.control_plane: ControlPlane | None = None
        self._kwok: ManagedProcess | None = None
        self._process_node: ProcessNode | None = None
        self.cpu_nodes = [f"kwok-cpu-{i}" for i in range(self.config.cpu_nodes)]
        self._gpu_nodes = {
            f"kwok-gpu-{product.family}-{i}": product
            for product in self.config.gpu_products
            for i in range(self.config.gpu_nodes_per_product)
        }
        self.gpu_nodes = list(self._gpu_nodes)
        self.process_node = PROCESS_NODE_NAME if self.config.process_node else ""

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        started = time.monotonic()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.bin_dir = ensure_binaries()
        self.control_plane = ControlPlane(self.bin_dir, self.state_dir)
        self.control_plane.start()
        self._kwok = start_kwok(
            self.bin_dir, self.kubeconfig, self.state_dir, self.control_plane.log_dir
        )
        self._create_nodes()
        if self.config.process_node:
            self._process_node = ProcessNode(
                self.kubeconfig, self.process_node, self.state_dir / "procnode"
            )
            self._process_node.start()
        self._wait_for_nodes_ready()
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        if self._process_node is not None:
            with contextlib.suppress(Exception):
                self._process_node.stop()
            self._process_node = None
        if self._kwok is not None:
            self._kwok.stop()
            self._kwok = None
        if self.control_plane is not None:
            self.control_plane.stop()

    def __enter__(self) -> TestBed:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- access ----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def api_client(self) -> client.ApiClient:
        api_client: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return api_client

    def core_api(self, api_client: client.ApiClient) -> Any:
        # Any: the client takes plain dict bodies, which its type hints do not admit.
        return client.CoreV1Api(api_client)

    def env(self) -> dict[str, str]:
        """The environment for a child process that talks to the test bed."""
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self._run("kubectl", args, input, check, timeout)

    def apply(self, manifest: Mapping[str, Any]) -> None:
        """`kubectl apply` one object given as a mapping."""
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(dict(manifest)))

    def get_json(self, *args: str) -> Any:
        """`kubectl get ARGS -o json`, parsed."""
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def helm(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self._run("helm", args, input, check, timeout)

    def _run(
        self, tool: str, args: tuple[str, ...], input: str | None, check: bool, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.bin_dir / tool), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
        )
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(
                result.returncode, result.args, result.stdout, result.stderr
            )
        return result

    # -- nodes -----------------------------------------------------------------

    def _create_nodes(self) -> None:
        manifests = [cpu_node(name) for name in self.cpu_nodes]
        manifests += [gpu_node(name, product) for name, product in self._gpu_nodes.items()]
        with self.api_client() as api_client:
            core = self.core_api(api_client)
            for manifest in manifests:
                core.create_node(manifest)
                # A create may drop status; kwok's stages read capacity from it.
                core.patch_node_status(manifest["metadata"]["name"], {"status": manifest["status"]})

    def _wait_for_nodes_ready(self) -> None:
        expected = set(self.cpu_nodes) | set(self.gpu_nodes)
        if self.process_node:
            expected.add(self.process_node)
        with self.api_client() as api_client:
            core = self.core_api(api_client)

            def all_ready() -> bool:
                ready = {
                    node.metadata.name
                    for node in core.list_node().items
                    if any(
                        c.type == "Ready" and c.status == "True"
                        for c in (node.status.conditions or [])
                    )
                }
                return expected <= ready

            wait_until(all_ready, timeout=60, what=f"nodes {sorted(expected)} to be Ready")

    def namespace_ready(self, name: str) -> None:
        """Create a namespace and wait for its default service account, without
        which the ServiceAccount admission plugin rejects every pod."""
        with self.api_client() as api_client:
            core = self.core_api(api_client)
            core.create_namespace({"metadata": {"name": name}})
            wait_until(
                lambda: core.read_namespaced_service_account("default", name) is not None,
                timeout=30,
                what=f"the default service account in {name}",
            )
