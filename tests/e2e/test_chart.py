"""The Helm chart: the plain-YAML install is its rendering, and a real `helm install`
grants the operator exactly what it needs and nothing cluster-wide it does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from swarmops.testbed import fakenvml
from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.gpuagent import AgentProcess, clear_node, published, read_node
from swarmops.testbed.processes import wait_until

CHART = repository_root() / "helm" / "swarmops"


@pytest.mark.e2e
def test_install_manifest_is_the_rendered_chart(testbed: TestBed) -> None:
    rendered = subprocess.run(
        ["bash", str(repository_root() / "hack" / "render-install.sh")],
        check=True,
        capture_output=True,
        text=True,
        cwd="/",
        env={**testbed.env(), "RENDER_TO_STDOUT": "1"},
    )
    assert rendered.returncode == 0
    committed = (repository_root() / "manifests" / "install.yaml").read_text()
    assert committed == rendered.stdout, "manifests/install.yaml is stale: run `make generate`"


@pytest.mark.e2e
def test_chart_lints(testbed: TestBed) -> None:
    result = testbed.helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _can(testbed: TestBed, subject: str, verb: str, resource: str, namespace: str) -> bool:
    """Ask the real apiserver whether `subject` may; `resource/subresource` goes in
    --subresource, since kubectl reads TYPE/NAME and would ask about an object."""
    kind, _, sub = resource.partition("/")
    args = ["auth", "can-i", verb, kind, f"--as={subject}", "-n", namespace]
    if sub:
        args.append(f"--subresource={sub}")
    return testbed.kubectl(*args, check=False).stdout.strip() == "yes"


@pytest.mark.e2e
def test_namespaced_install_grants_least_privilege(testbed: TestBed, namespace: str) -> None:
    release = "swarmops"
    testbed.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--wait=false",
    )
    try:
        operator = f"system:serviceaccount:{namespace}:{release}"
        for verb, resource in [
            ("create", "pods"),
            ("delete", "pods"),
            ("watch", "agentpools.swarmops.dev"),
            ("patch", "agentpools.swarmops.dev/status"),
            ("patch", "agentclaims.swarmops.dev/status"),
            ("create", "events"),
            # Each pool's PodDisruptionBudget: created, corrected, watched.
            ("create", "poddisruptionbudgets.policy"),
            ("patch", "poddisruptionbudgets.policy"),
            ("watch", "poddisruptionbudgets.policy"),
            # Nodes are cluster-scoped: read cluster-wide, to check GPU requests.
            ("list", "nodes"),
            ("watch", "nodes"),
            # RedisClusters: StatefulSets watched, applied, deleted when a shard goes;
            # Services, ConfigMaps, NetworkPolicies applied; the password read or made.
            ("watch", "statefulsets.apps"),
            ("patch", "statefulsets.apps"),
            ("delete", "statefulsets.apps"),
            ("patch", "services"),
            ("patch", "configmaps"),
            ("patch", "networkpolicies.networking.k8s.io"),
            ("get", "secrets"),
            ("create", "secrets"),
            # Swarms: their AgentPools and RedisCluster applied, the RedisCluster deleted
            # last; PriorityClasses (cluster-scoped) kept per pool priority.
            ("patch", "swarms.swarmops.dev/status"),
            ("create", "agentpools.swarmops.dev"),
            ("create", "redisclusters.swarmops.dev"),
            ("delete", "redisclusters.swarmops.dev"),
            ("create", "priorityclasses.scheduling.k8s.io"),
            ("patch", "priorityclasses.scheduling.k8s.io"),
        ]:
            assert _can(testbed, operator, verb, resource, namespace), f"cannot {verb} {resource}"
        for verb, resource, where in [
            # Secrets are read one by name, never listed, watched or changed.
            ("list", "secrets", namespace),
            ("watch", "secrets", namespace),
            ("update", "secrets", namespace),
            ("delete", "secrets", namespace),
            ("get", "secrets", "default"),
            ("delete", "services", namespace),
            ("delete", "configmaps", namespace),
            ("create", "statefulsets.apps", "default"),
            ("create", "pods", "default"),
            ("list", "agentpools.swarmops.dev", "default"),
            ("delete", "agentpools.swarmops.dev", namespace),
            # Budgets go with their pool, by garbage collection; nobody else's are touched.
            ("delete", "poddisruptionbudgets.policy", namespace),
            ("create", "poddisruptionbudgets.policy", "default"),
            ("delete", "nodes", namespace),
            ("patch", "nodes", namespace),
            ("update", "nodes", namespace),
            ("patch", "nodes/status", namespace),
            ("list", "pods", "default"),
            ("create", "clusterroles", namespace),
            ("delete", "priorityclasses.scheduling.k8s.io", namespace),
            ("list", "priorityclasses.scheduling.k8s.io", namespace),
        ]:
            assert not _can(testbed, operator, verb, resource, where), f"may {verb} {resource}"
        deployment = testbed.kubectl(
            "get", "deployment", release, "-n", namespace, "-o", "jsonpath={.spec.template.spec}"
        ).stdout
        assert '"runAsNonRoot":true' in deployment
        assert '"readOnlyRootFilesystem":true' in deployment
        assert f"--namespace={namespace}" in deployment
    finally:
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)


def _token_kubeconfig(testbed: TestBed, token: str, path: Path) -> Path:
    """A kubeconfig for the test bed's apiserver that authenticates with `token`."""
    config = yaml.safe_load(testbed.kubeconfig.read_text())
    config["users"] = [{"name": "token", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "token"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.e2e
def test_gpu_agent_install_is_restricted_and_may_touch_only_its_own_node(
    testbed: TestBed, namespace: str, tmp_path: Path
) -> None:
    """The agent's DaemonSet passes Pod Security "restricted", its RBAC is get/patch on
    nodes and patch on nodes/status, and its admission policy keeps a token bound to a pod
    on one node away from every other node and from anything but its own annotation."""
    release, hopper, ampere = "swarmops", "kwok-gpu-hopper-0", "kwok-gpu-ampere-0"
    restricted = "pod-security.kubernetes.io/enforce=restricted"
    testbed.kubectl("label", "namespace", namespace, restricted)
    # The chart names the NVIDIA container runtime's class; admission wants it to exist.
    runtime_class = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass"}
    runtime_class |= {"metadata": {"name": "nvidia"}, "handler": "nvidia"}
    testbed.kubectl("apply", "-f", "-", input=yaml.safe_dump(runtime_class))
    testbed.helm(
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        f"watchNamespaces={{{namespace}}}",
        "--set",
        "gpuAgent.enabled=true",
        "--wait=false",
    )
    agent_sa = f"{release}-gpu-agent"
    try:
        subject = f"system:serviceaccount:{namespace}:{agent_sa}"
        for verb, resource in [("get", "nodes"), ("patch", "nodes"), ("patch", "nodes/status")]:
            allowed = _can(testbed, subject, verb, resource, namespace)
            assert allowed, f"cannot {verb} {resource}"
        for verb, resource in [
            ("list", "nodes"),
            ("watch", "nodes"),
            ("update", "nodes"),
            ("delete", "nodes"),
            ("get", "pods"),
            ("create", "pods/eviction"),
            ("get", "secrets"),
            ("create", "events"),
        ]:
            allowed = _can(testbed, subject, verb, resource, namespace)
            assert not allowed, f"may {verb} {resource}"

        # The DaemonSet controller puts an agent pod on each GPU node (kwok "runs" it).
        def agent_pod_on(node: str) -> str:
            pods = testbed.kubectl(
                "get",
                "pods",
                "-n",
                namespace,
                "-l",
                "app.kubernetes.io/component=gpu-agent",
                "--field-selector",
                f"spec.nodeName={node}",
                "-o",
                "name",
            ).stdout.split()
            assert pods, f"no agent pod on {node}"
            return pods[0].removeprefix("pod/")

        wait_until(
            lambda: bool(agent_pod_on(hopper)) and bool(agent_pod_on(ampere)),
            timeout=60,
            what="an agent pod on each GPU node (restricted Pod Security admits them)",
        )
        token = testbed.kubectl(
            "create",
            "token",
            agent_sa,
            "-n",
            namespace,
            "--bound-object-kind=Pod",
            f"--bound-object-name={agent_pod_on(hopper)}",
        ).stdout.strip()
        kubeconfig = _token_kubeconfig(testbed, token, tmp_path / "agent-kubeconfig")

        def as_agent(*args: str) -> subprocess.CompletedProcess[str]:
            return testbed.kubectl(f"--kubeconfig={kubeconfig}", *args, check=False)

        report = "swarmops.dev/gpu-health-report={}"
        own = as_agent("annotate", "node", hopper, report, "--overwrite")
        assert own.returncode == 0, own.stderr
        other = as_agent("annotate", "node", ampere, report, "--overwrite")
        assert "only change the node its pod runs on" in other.stderr
        label = as_agent("label", "node", hopper, "swarmops.dev/gpu-health=ok")
        assert "may not change a node's labels" in label.stderr
        taint = as_agent("taint", "node", hopper, "swarmops.dev/gpu-unhealthy=x:NoSchedule")
        assert "may not change a node's labels, taints or spec" in taint.stderr
        foreign = as_agent("annotate", "node", hopper, "example.com/other=1")
        assert "only change the annotation" in foreign.stderr

        # The real agent, with that token, publishes on its own node.
        agent = AgentProcess(
            kubeconfig,
            hopper,
            tmp_path / "agent",
            fakenvml.healthy_node(8),
            library_dir=fakenvml.ensure_library(),
        )
        try:
            with testbed.api_client() as api_client:
                core = testbed.core_api(api_client)

                def healthy() -> bool:
                    condition, report = published(read_node(core, hopper))
                    return bool(condition and condition["status"] == "True" and report)

                wait_until(healthy, timeout=60, what=f"the agent's report:\n{agent.log()}")
        finally:
            agent.stop()
            with testbed.api_client() as api_client:
                clear_node(testbed.core_api(api_client), hopper)
    finally:
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)


@pytest.mark.e2e
def test_gpu_reaction_grants_node_patch_and_evictions_only_when_on(
    testbed: TestBed, namespace: str
) -> None:
    release = "swarmops"
    operator = f"system:serviceaccount:{namespace}:{release}"
    base = ["--namespace", namespace, "--set", f"watchNamespaces={{{namespace}}}", "--wait=false"]
    testbed.helm("install", release, str(CHART), *base)
    try:
        # The default is dry-run: the operator decides and tells, and may change no node.
        assert not _can(testbed, operator, "patch", "nodes", namespace)
        assert not _can(testbed, operator, "create", "pods/eviction", namespace)
        testbed.helm("upgrade", release, str(CHART), *base, "--set", "gpuHealth.reaction=on")
        for verb, resource, where in [
            ("patch", "nodes", namespace),
            ("create", "pods/eviction", namespace),
            ("create", "events", "default"),  # events about nodes live there
        ]:
            assert _can(testbed, operator, verb, resource, where), f"cannot {verb} {resource}"
        for verb, resource, where in [
            ("update", "nodes", namespace),
            ("delete", "nodes", namespace),
            ("patch", "nodes/status", namespace),
            ("create", "pods/eviction", "default"),
            ("get", "pods", "default"),
        ]:
            assert not _can(testbed, operator, verb, resource, where), f"may {verb} {resource}"
    finally:
        testbed.helm("uninstall", release, "--namespace", namespace, check=False)


def _operator_args(testbed: TestBed, *sets: str) -> list[str]:
    flags = [arg for value in sets for arg in ("--set", value)]
    rendered = testbed.helm("template", "swarmops", str(CHART), *flags).stdout
    deployment = next(
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"
    )
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


@pytest.mark.e2e
def test_prometheus_url_value_reaches_the_operator(testbed: TestBed) -> None:
    assert not any(a.startswith("--prometheus-url") for a in _operator_args(testbed))
    url = "http://prometheus-operated.monitoring:9090"
    assert f"--prometheus-url={url}" in _operator_args(testbed, f"prometheus.url={url}")
