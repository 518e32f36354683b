"""From a container (or an exec probe) to the local argv, environment and working
directory that stand in for it. Pure: files are read through a callback and the
files to write come back in the plan.

Rules beyond the image table (see `images`) and path rewriting (see `expansion`):

* ``redis-server`` always listens on the pod IP: the runner appends
  ``--bind <podIP> --daemonize no`` after the container's arguments, so whatever
  a config file or argument says about ``bind`` (``0.0.0.0`` would take every
  loopback address on the machine) the last word is the pod's address, and the
  server stays in the foreground where the node can supervise it. The port is
  left alone (each pod has its own IP, so every redis may keep 6379). A config
  file given as the first argument is copied, with mount paths rewritten, after
  the image's default ``protected-mode no`` (the official image disables
  protected mode), to ``<run dir>/redis-server.conf``, which redis-server reads
  instead.
* ``redis-cli`` talks to its own pod: without ``-h``, ``-u`` or ``-s`` it gets
  ``-h <podIP>``; ``-h localhost``/``127.0.0.1``/``::1`` becomes the pod IP.
* A command whose program is a file in a volume (a script from a ConfigMap) runs
  a copy of that file with mount paths rewritten.
* Inside ``sh -c`` scripts the image's programs are found on ``PATH`` through
  shims in ``<run dir>/bin`` that apply these same rules.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from swarmops.testbed.procnode.expansion import PathRewriter, expand_with
from swarmops.testbed.procnode.images import (
    ImageProfile,
    LocalPrograms,
    Program,
    ProgramNotFound,
    ResolvedProgram,
    container_argv,
    local_program,
)
from swarmops.testbed.procnode.model import Container

ReadFile = Callable[[str], str | None]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
REDIS_CONF_HEADER = (
    "# Written by the SwarmOps process node: the redis image's defaults, then the\n"
    "# pod's own configuration with mount paths rewritten to local directories.\n"
    "protected-mode no\n"
)


@dataclass(frozen=True)
class LaunchContext:
    """What every launch in one container shares."""

    profile: ImageProfile
    programs: LocalPrograms
    pod_ip: str
    rewriter: PathRewriter
    run_dir: str  # the container's own directory for generated files

    @property
    def shim_dir(self) -> str:
        return posixpath.join(self.run_dir, "bin")


@dataclass(frozen=True)
class Command:
    """A local argv and the generated files it needs (path → content, mode)."""

    program: Program | None
    argv: tuple[str, ...]
    files: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class LaunchPlan:
    command: Command
    env: Mapping[str, str]
    cwd: str


def _redis_server(rest: Sequence[str], ctx: LaunchContext, read_file: ReadFile) -> Command:
    args = list(rest)
    conf = REDIS_CONF_HEADER
    if args and not args[0].startswith("-"):
        config_path = args.pop(0)
        text = read_file(config_path)
        # An unreadable file stays an include: redis-server then reports it itself.
        conf += f"include {config_path}\n" if text is None else ctx.rewriter.rewrite(text)
    generated = posixpath.join(ctx.run_dir, "redis-server.conf")
    argv = (*ctx.programs.argv_prefix(Program.REDIS_SERVER), generated, *args)
    argv += ("--bind", ctx.pod_ip, "--daemonize", "no")
    return Command(Program.REDIS_SERVER, argv, ((generated, conf, 0o600),))


def _redis_cli(rest: Sequence[str], ctx: LaunchContext) -> Command:
    args = list(rest)
    has_target = False
    for index, arg in enumerate(args):
        if arg in ("-u", "-s"):
            has_target = True
        elif arg == "-h":
            has_target = True
            if index + 1 < len(args) and args[index + 1] in LOOPBACK_HOSTS:
                args[index + 1] = ctx.pod_ip
    if not has_target:
        args = ["-h", ctx.pod_ip, *args]
    return Command(Program.REDIS_CLI, (*ctx.programs.argv_prefix(Program.REDIS_CLI), *args))


def _volume_script(
    path: str, rest: Sequence[str], ctx: LaunchContext, read_file: ReadFile
) -> Command:
    text = read_file(path)
    if text is None:
        raise ProgramNotFound(f"executable {path!r} does not exist in its volume")
    copy = posixpath.join(ctx.run_dir, "scripts", posixpath.basename(path))
    return Command(None, (copy, *rest), ((copy, ctx.rewriter.rewrite(text), 0o755),))


def local_command(ctx: LaunchContext, argv: Sequence[str], read_file: ReadFile) -> Command:
    """The local command for an in-image argv whose ``$(VAR)``s are expanded and
    whose mount paths are already rewritten."""
    if argv and any(
        argv[0] == local or argv[0].startswith(local + "/")
        for local in ctx.rewriter.mounts.values()
    ):
        return _volume_script(argv[0], argv[1:], ctx, read_file)
    resolved: ResolvedProgram = local_program(ctx.profile, argv)
    rest = resolved.argv[1:]
    if resolved.program is Program.REDIS_SERVER:
        return _redis_server(rest, ctx, read_file)
    if resolved.program is Program.REDIS_CLI:
        return _redis_cli(rest, ctx)
    return Command(resolved.program, (*ctx.programs.argv_prefix(resolved.program), *rest))


def shim_scripts(ctx: LaunchContext, context_file: str) -> tuple[tuple[str, str, int], ...]:
    """Executables for ``PATH`` that stand in for the image's programs inside shell
    scripts: each hands its arguments to `swarmops.testbed.procnode.shim`, which
    applies `local_command` and execs the result."""
    python = ctx.programs.python
    files = []
    for name, program in sorted(ctx.profile.programs.items()):
        if program in (Program.SHELL, Program.BASH):
            continue
        if program in (Program.REDIS_SERVER, Program.REDIS_CLI):
            body = (
                f'exec "{python}" -m swarmops.testbed.procnode.shim "{context_file}" {name} "$@"\n'
            )
        else:
            prefix = " ".join(f'"{part}"' for part in ctx.programs.argv_prefix(program))
            body = f'exec {prefix} "$@"\n'
        files.append((posixpath.join(ctx.shim_dir, name), "#!/bin/sh\n" + body, 0o755))
    return tuple(files)


def base_env(
    ctx: LaunchContext, hostname: str, home: str, service_env: Mapping[str, str]
) -> dict[str, str]:
    """What the container runtime and kubelet give every container (a real image sets
    PATH and HOME; here they point at local stand-ins). ``POD_IP`` is always set."""
    venv_bin = posixpath.dirname(ctx.programs.python)
    return {
        "PATH": f"{ctx.shim_dir}:{venv_bin}:{SYSTEM_PATH}",
        "HOME": home,
        "HOSTNAME": hostname,
        "LANG": "C.UTF-8",
        "POD_IP": ctx.pod_ip,
        **service_env,
        **ctx.profile.env,
    }


def working_directory(container: Container, ctx: LaunchContext, default_dir: str) -> str:
    """The container's working directory if a volume holds it, else its own directory."""
    wanted = container.working_dir or ctx.profile.working_dir
    if wanted:
        local = ctx.rewriter.local_path(posixpath.normpath(wanted))
        if local is not None:
            return local
    return default_dir


def plan_container(
    container: Container,
    ctx: LaunchContext,
    *,
    container_env: Mapping[str, str],
    service_env: Mapping[str, str],
    hostname: str,
    default_dir: str,
    read_file: ReadFile,
    node_env: Mapping[str, str] | None = None,
) -> LaunchPlan:
    """The launch plan of one container attempt. `node_env` holds variables the node
    adds with local paths in them (never rewritten; the container's own win)."""
    variables = {**service_env, **container_env}
    argv = container_argv(ctx.profile, container.command, container.args)
    argv = tuple(ctx.rewriter.rewrite(expand_with(arg, variables)) for arg in argv)
    command = local_command(ctx, argv, read_file)
    env = base_env(ctx, hostname, default_dir, service_env)
    env.update(node_env or {})
    env.update({name: ctx.rewriter.rewrite(value) for name, value in container_env.items()})
    return LaunchPlan(command, env, working_directory(container, ctx, default_dir))


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def service_account_kubeconfig(server: str, ca_file: str | None, token: str, namespace: str) -> str:
    """A kubeconfig for the pod's service account. Clients look for the token at
    `SERVICE_ACCOUNT_DIR`, an absolute path a local process cannot have; with
    ``KUBECONFIG`` pointing here, in-cluster clients (kubernetes, kopf) fall back
    to it and talk to the real API server as the pod's service account. JSON is
    YAML, so it is written as JSON."""
    cluster: dict[str, str] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = ca_file
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": cluster}],
            "users": [{"name": "service-account", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "in-cluster",
                    "context": {
                        "cluster": "in-cluster",
                        "user": "service-account",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "in-cluster",
        },
        indent=1,
    )


def plan_exec_probe(
    probe_command: Sequence[str],
    ctx: LaunchContext,
    static_env: Mapping[str, str],
    read_file: ReadFile,
) -> Command:
    """An exec probe's command: only literal env values expand (as the kubelet does),
    then the same rewriting and program mapping as the container's command. A
    program the image does not have is an error."""
    argv = tuple(ctx.rewriter.rewrite(expand_with(arg, static_env)) for arg in probe_command)
    return local_command(ctx, argv, read_file)
