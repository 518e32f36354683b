"""`swarmops demo`: the embedded default.  Brings up the local test bed, installs
the CRDs, starts the operator against it, applies manifests/examples/ and shows
their status; then keeps everything running until interrupted (or, with --once,
tears it down)."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from swarmops.testbed.binaries import repository_root
from swarmops.testbed.cluster import TestBed
from swarmops.testbed.processes import ManagedProcess

DEMO_NAMESPACE = "swarmops-demo"


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
        help="how long to let the operator reconcile the examples before showing status",
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
        _say(f"applying manifests/examples/ to namespace {DEMO_NAMESPACE}")
        print(
            bed.kubectl(
                "apply", "-n", DEMO_NAMESPACE, "-f", str(root / "manifests" / "examples")
            ).stdout
        )
        time.sleep(args.settle_seconds)
        if not operator.running():
            _say("the operator exited:\n" + operator.log_tail())
            return 1
        _show(bed)
        if args.once:
            return 0
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
        ("get", "pods", "-n", DEMO_NAMESPACE, "-o", "wide"),
    ):
        _say("kubectl " + " ".join(args))
        result = bed.kubectl(*args, check=False)
        print(result.stdout or result.stderr, flush=True)


def _say(message: str) -> None:
    print(f"[swarmops demo] {message}", flush=True)
