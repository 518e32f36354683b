"""`swarmops demo`: the embedded default.  Brings up the local test bed, installs
the CRDs, starts the operator against it, applies manifests/examples/, waits for the
example swarm to be Ready and shows their status; then keeps everything running until
interrupted (or, with --once, tears it down)."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import ManagedProcess
from swarmops.testbed.procnode.nodespec import POD_PLACEMENT

DEMO_NAMESPACE = "swarmops-demo"
EXAMPLE_SWARM = "research"


def placed_on_process_node(documents: Iterable[Any]) -> list[Any]:
    """The examples with every Redis Cluster (standalone or a swarm's own) placed on the
    test bed's process node: only there do its pods run real redis-server processes, so
    only there can it form and become Ready. The shipped examples carry no test-bed
    placement, because a real cluster has no such node."""
    placed = []
    for original in documents:
        if not isinstance(original, dict):
            continue
        document = dict(original)
        spec = dict(document.get("spec") or {})
        if document.get("kind") == "RedisCluster":
            spec.update(POD_PLACEMENT)
        elif document.get("kind") == "Swarm" and (spec.get("redis") or {}).get("spec"):
            redis = dict(spec["redis"])
            redis["spec"] = {**redis["spec"], **POD_PLACEMENT}
            spec["redis"] = redis
        document["spec"] = spec
        placed.append(document)
    return placed


def example_documents(root: Path) -> list[Any]:
    examples = sorted((root / "manifests" / "examples").glob("*.yaml"))
    return [doc for path in examples for doc in yaml.safe_load_all(path.read_text()) if doc]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="swarmops demo", description=__doc__)
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=repository_root() / ".testbed" / "demo",
        help="where the test bed keeps its data, certificates, kubeconfig and logs",
    )
    parser.add_argument(
        "--once", action="store_true", help="show the status once, then tear everything down"
    )
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=15.0,
        help="how long to let the operator reconcile the other examples before showing status",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=240.0,
        help="how long to wait for the example swarm (its Redis and three pools) to be Ready",
    )
    args = parser.parse_args(argv)

    root = repository_root()
    shutil.rmtree(args.state_dir, ignore_errors=True)
    bed = TestBed(args.state_dir)
    operator: ManagedProcess | None = None
    # SIGTERM ends the demo as Ctrl-C does, so the test bed is always torn down.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        _say(f"starting the test bed in {args.state_dir} ...")
        bed.start()
        _say(f"test bed up in {bed.startup_seconds:.1f}s, kubeconfig {bed.kubeconfig}")
        _say("installing the CRDs")
        bed.kubectl("apply", "--server-side", "-f", str(root / "crds"))
        bed.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "-f", str(root / "crds")
        )
        _say("starting the operator (logs: %s)" % (bed.log_dir / "swarmops-operator.log"))
        operator = ManagedProcess(
            "swarmops-operator",
            [sys.executable, "-m", "swarmops", "run", "--all-namespaces"],
            bed.log_dir,
            env=bed.env(),
        )
        operator.start()
        bed.kubectl("create", "namespace", DEMO_NAMESPACE)
        _say(
            f"applying manifests/examples/ to namespace {DEMO_NAMESPACE} "
            "(Redis placed on the process node, which runs real redis-server processes)"
        )
        documents = placed_on_process_node(example_documents(root))
        print(
            bed.kubectl(
                "apply", "-n", DEMO_NAMESPACE, "-f", "-", input=yaml.safe_dump_all(documents)
            ).stdout
        )
        _say(f"waiting for swarm/{EXAMPLE_SWARM}: Redis first, then its pools in order")
        started = time.monotonic()
        waited = bed.kubectl(
            "wait",
            "-n",
            DEMO_NAMESPACE,
            "--for=condition=Ready",
            f"--timeout={args.ready_timeout:.0f}s",
            f"swarm/{EXAMPLE_SWARM}",
            check=False,
            timeout=args.ready_timeout + 30,
        )
        swarm_ready = waited.returncode == 0
        if swarm_ready:
            _say(f"swarm/{EXAMPLE_SWARM} Ready after {time.monotonic() - started:.1f}s")
        else:
            _say(f"swarm/{EXAMPLE_SWARM} not Ready yet: {waited.stderr.strip()}")
        time.sleep(max(0.0, args.settle_seconds - (time.monotonic() - started)))
        if not operator.running():
            _say("the operator exited:\n" + operator.log_tail())
            return 1
        _show(bed)
        if args.once:
            return 0 if swarm_ready else 1
        _say(
            "everything keeps running; in another shell:\n"
            f"  export KUBECONFIG={bed.kubeconfig} PATH={bed.bin_dir}:$PATH\n"
            "  kubectl get swarmops -A\n"
            "press Ctrl-C to tear it down"
        )
        while operator.running():
            time.sleep(1)
        _say("the operator exited:\n" + operator.log_tail())
        return 1
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as error:
        _say(f"{' '.join(map(str, error.cmd))} failed:\n{error.stderr}")
        return 1
    finally:
        _say("tearing down")
        if operator is not None:
            operator.stop()
        bed.stop()


def _show(bed: TestBed) -> None:
    for args in (
        ("get", "nodes", "-L", "swarmops.dev/node-kind,nvidia.com/gpu.product"),
        ("get", "swarmops", "-A"),
        ("get", "events", "-n", DEMO_NAMESPACE, "--field-selector", "involvedObject.kind=Swarm"),
        ("get", "pods", "-n", DEMO_NAMESPACE, "-o", "wide"),
    ):
        _say("kubectl " + " ".join(args))
        result = bed.kubectl(*args, check=False)
        print(result.stdout or result.stderr, flush=True)


def _say(message: str) -> None:
    print(f"[swarmops demo] {message}", flush=True)
