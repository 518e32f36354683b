"""The `swarmops` command: run the operator, the GPU node agent or an agent (the agent
runtime), print the version, generate CRDs, run the demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from swarmops import __version__
from swarmops.agent import command as agent_command
from swarmops.commandline import EXIT_USAGE, flags_of, start
from swarmops.gpu import command as gpu_command
from swarmops.settings import Settings, load_settings


class _Parser(argparse.ArgumentParser):
    """argparse, but every usage error is one line on stderr and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="swarmops",
        description="SwarmOps: a Kubernetes operator that runs swarms of AI agents.",
    )
    parser.add_argument("--version", action="version", version=f"swarmops {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run",
        help="run the operator",
        description=(
            "Run the operator until SIGINT/SIGTERM. Every flag can also be set with an "
            "environment variable SWARMOPS_<FLAG> (e.g. SWARMOPS_METRICS_PORT); flags win. "
            "The operator runs standalone: kopf's peering (which needs its own CRDs and "
            "pauses rather than elects) is off, so run exactly one replica."
        ),
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        dest="namespaces",
        action="append",
        metavar="NAME",
        help="watch this namespace (repeatable; a glob such as 'team-*' works; "
        "env: SWARMOPS_NAMESPACE, comma-separated)",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        default=None,
        help="watch every namespace (env: SWARMOPS_ALL_NAMESPACES=true)",
    )
    run.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="kubeconfig file; default: $KUBECONFIG, then the pod's service account, "
        "then ~/.kube/config",
    )
    run.add_argument("--context", metavar="NAME", help="kubeconfig context to use")
    run.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO (default), WARNING, ERROR")
    run.add_argument("--log-format", metavar="FORMAT", help="text (default) or json")
    run.add_argument(
        "--bind-address",
        metavar="IP",
        help="address of the health and metrics servers (default 127.0.0.1; "
        "use 0.0.0.0 in a pod so the kubelet can probe it)",
    )
    run.add_argument(
        "--health-port",
        metavar="PORT",
        help="liveness probe at http://ADDRESS:PORT/healthz (default 8081; 0 turns it off)",
    )
    run.add_argument(
        "--metrics-port",
        metavar="PORT",
        help="Prometheus metrics at /metrics and readiness at /readyz (default 8080; 0: off)",
    )
    run.add_argument(
        "--resync-interval",
        metavar="SECONDS",
        help="re-reconcile every object this often even without events (default 60)",
    )
    run.add_argument("--workers", metavar="N", help="reconciles run at once (default 32)")
    run.add_argument(
        "--gpu-reaction",
        metavar="MODE",
        help="react to GPU health reports (taint, evict, clear): on (default), dry-run "
        "(decide, log and post Events, change nothing), or off",
    )
    run.add_argument(
        "--gpu-clean-reports",
        metavar="N",
        help="clean GPU reports before a quarantine is lifted (default 3)",
    )
    run.add_argument(
        "--gpu-unknown-grace",
        metavar="SECONDS",
        help="how long GPU health may be UNKNOWN before the node is tainted (default 120)",
    )
    run.add_argument(
        "--gpu-max-quarantined-percent",
        metavar="PERCENT",
        help="circuit breaker: most GPU nodes newly quarantined per window (default 50)",
    )
    run.add_argument(
        "--gpu-breaker-window",
        metavar="SECONDS",
        help="the circuit breaker's window (default 300)",
    )
    run.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="Prometheus HTTP API for canary analysis metrics that name no address of "
        "their own, e.g. http://prometheus.monitoring:9090 (default: none)",
    )

    gpu_command.add_parser(commands)
    agent_command.add_parser(commands)

    commands.add_parser("version", help="print the version")

    crds = commands.add_parser(
        "crds",
        help="write the CustomResourceDefinitions generated from the API models",
        description="Write the CRD YAML generated from swarmops.api into crds/ and "
        "helm/swarmops/crds/ under the repository root.",
    )
    crds.add_argument(
        "--root",
        type=Path,
        default=Path.cwd(),
        metavar="DIR",
        help="repository root (default: the current directory)",
    )
    crds.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that are stale or missing",
    )
    crds.add_argument(
        "--out-dir",
        dest="out_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory to write instead (repeatable; default: ROOT/crds and "
        "ROOT/helm/swarmops/crds)",
    )

    # Listed for --help only: main() hands `demo ...` to the demo's own parser.
    commands.add_parser(
        "demo",
        help="bring up the local test bed, install SwarmOps and show the examples",
        add_help=False,
    )
    return parser


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    return load_settings(flags_of(args, Settings), environ)


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    def connect(settings: Settings) -> Callable[[], None]:
        # Imported here: `swarmops version` and friends should not pay for kopf's import.
        from swarmops.runtime import build_services, run_operator  # noqa: PLC0415

        services = build_services(settings, environ)
        return lambda: run_operator(settings, services=services)

    return start("run", lambda: settings_from_args(args, environ), connect)


def _crds(args: argparse.Namespace) -> int:
    # Lazy: the generator pulls in every model and pydantic's schema machinery.
    from swarmops.api import crdgen  # noqa: PLC0415

    out_dirs = list(args.out_dirs or crdgen.default_output_dirs(args.root))
    if args.check:
        stale = crdgen.stale_crds(out_dirs)
        if stale:
            print("stale or missing CRDs (run `swarmops crds`):", file=sys.stderr)
            for path in stale:
                print(f"  {path}", file=sys.stderr)
            return 1
        print("CRDs are up to date.")
        return 0
    changed = crdgen.write_crds(out_dirs)
    for path in changed:
        print(f"wrote {path}")
    if not changed:
        print("CRDs are up to date.")
    return 0


def _demo_main(args: Sequence[str]) -> int:
    # Lazy: the test bed is a development tool, not part of the operator's runtime.
    from swarmops.testbed import demo  # noqa: PLC0415

    return demo.main(args)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        # The demo parses its own flags: argparse's REMAINDER drops leading "--flags".
        return _demo_main(arguments[1:])
    args = build_parser().parse_args(arguments)
    env = os.environ if environ is None else environ
    if args.command == "version":
        print(f"swarmops {__version__}")
        return 0
    if args.command == "run":
        return _run(args, env)
    if args.command == "crds":
        return _crds(args)
    if args.command == "gpu-agent":
        return gpu_command.run(args, env)
    if args.command == "agent":
        return agent_command.run(args, env)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


if __name__ == "__main__":
    sys.exit(main())
