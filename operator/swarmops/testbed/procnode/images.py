"""Which images the process node can run, and how their programs map to local ones.

A container image is never pulled. An image the table knows is "run" by starting
the local program that stands for the image's own (the tag is ignored: the
program installed on this machine is what runs):

==========================  ===========================================================
image                       local program
==========================  ===========================================================
``redis`` (Docker Hub       ``/usr/bin/redis-server`` and friends (Debian's package);
library image: ``redis``,   the image's entrypoint rule is kept: arguments starting
``redis:7``, ``docker.io/   with ``-`` or ending in ``.conf`` run ``redis-server``
library/redis:7.2``, a      with them. Image working directory ``/data``.
mirror's ``*/library/
redis``)
``valkey/valkey``           the same local Redis binaries (``valkey-server`` →
                            ``redis-server``); Valkey-only commands are not there.
``swarmops`` and any        ``<python> -m swarmops`` (the venv's interpreter).
repository ending in
``/swarmops``
anything else               not runnable: the container waits with reason
                            ``ImageNotRunnable``.
==========================  ===========================================================

Inside a runnable image, a command names a program by its in-image name or path
(``redis-server``, ``/usr/local/bin/redis-server``, ``python3``); `local_program`
translates it. ``sh``/``bash`` run the local shell, with the image's programs
reachable on ``PATH`` through small per-container shims.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


class Program(enum.Enum):
    """A program the process node knows how to start."""

    REDIS_SERVER = "redis-server"
    REDIS_CLI = "redis-cli"
    REDIS_SENTINEL = "redis-sentinel"
    REDIS_BENCHMARK = "redis-benchmark"
    REDIS_CHECK_AOF = "redis-check-aof"
    REDIS_CHECK_RDB = "redis-check-rdb"
    PYTHON = "python"
    SWARMOPS = "swarmops"
    SHELL = "sh"
    BASH = "bash"


@dataclass(frozen=True)
class LocalPrograms:
    """Where this machine's stand-ins live."""

    python: str
    redis_server: str = "/usr/bin/redis-server"
    redis_cli: str = "/usr/bin/redis-cli"
    redis_benchmark: str = "/usr/bin/redis-benchmark"
    redis_check_aof: str = "/usr/bin/redis-check-aof"
    redis_check_rdb: str = "/usr/bin/redis-check-rdb"
    shell: str = "/bin/sh"
    bash: str = "/bin/bash"

    def argv_prefix(self, program: Program) -> tuple[str, ...]:
        return {
            Program.REDIS_SERVER: (self.redis_server,),
            Program.REDIS_CLI: (self.redis_cli,),
            Program.REDIS_SENTINEL: (self.redis_server, "--sentinel"),
            Program.REDIS_BENCHMARK: (self.redis_benchmark,),
            Program.REDIS_CHECK_AOF: (self.redis_check_aof,),
            Program.REDIS_CHECK_RDB: (self.redis_check_rdb,),
            Program.PYTHON: (self.python,),
            Program.SWARMOPS: (self.python, "-m", "swarmops"),
            Program.SHELL: (self.shell,),
            Program.BASH: (self.bash,),
        }[program]


class Family(enum.Enum):
    REDIS = "redis"
    SWARMOPS = "swarmops"


_SHELLS: Mapping[str, Program] = {"sh": Program.SHELL, "bash": Program.BASH, "ash": Program.SHELL}
_REDIS_PROGRAMS: Mapping[str, Program] = {
    "redis-server": Program.REDIS_SERVER,
    "redis-cli": Program.REDIS_CLI,
    "redis-sentinel": Program.REDIS_SENTINEL,
    "redis-benchmark": Program.REDIS_BENCHMARK,
    "redis-check-aof": Program.REDIS_CHECK_AOF,
    "redis-check-rdb": Program.REDIS_CHECK_RDB,
}
_VALKEY_PROGRAMS: Mapping[str, Program] = {
    name.replace("redis", "valkey"): program for name, program in _REDIS_PROGRAMS.items()
}
_PYTHONS: Mapping[str, Program] = {
    name: Program.PYTHON for name in ("python", "python3", "python3.11", "python3.12")
}


@dataclass(frozen=True)
class ImageProfile:
    """How one runnable image behaves: its entrypoint, default command, working
    directory, environment, and the programs it contains."""

    family: Family
    reference: str
    entrypoint: tuple[str, ...]
    default_command: tuple[str, ...]
    working_dir: str | None
    programs: Mapping[str, Program]
    env: Mapping[str, str] = field(default_factory=dict)

    def image_id(self) -> str:
        return f"procnode://{self.family.value}"


@dataclass(frozen=True)
class ImageReference:
    registry: str | None
    repository: str
    tag: str | None
    digest: str | None


def parse_image_reference(image: str) -> ImageReference:
    """Split ``[registry/]repository[:tag][@digest]`` the way container tools do: the
    first path component is a registry when it has a dot or a port, or is localhost."""
    rest, _, digest = image.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    tag = None
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
    registry = None
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    return ImageReference(registry, rest.lower(), tag or None, digest or None)


def _redis_profile(reference: str) -> ImageProfile:
    return ImageProfile(
        family=Family.REDIS,
        reference=reference,
        entrypoint=("docker-entrypoint.sh",),
        default_command=("redis-server",),
        working_dir="/data",
        programs={**_REDIS_PROGRAMS, **_VALKEY_PROGRAMS, **_SHELLS},
    )


def _swarmops_profile(reference: str) -> ImageProfile:
    return ImageProfile(
        family=Family.SWARMOPS,
        reference=reference,
        entrypoint=("swarmops",),
        default_command=(),
        working_dir=None,
        programs={"swarmops": Program.SWARMOPS, **_PYTHONS, **_SHELLS},
        env={"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def resolve_image(image: str) -> ImageProfile | None:
    """The profile of a runnable image, or None when the process node cannot run it."""
    if not image.strip():
        return None
    repository = parse_image_reference(image.strip()).repository
    if repository in ("redis", "library/redis") or repository.endswith("/library/redis"):
        return _redis_profile(image)
    if repository in ("valkey/valkey", "valkey") or repository.endswith("/valkey/valkey"):
        return _valkey_profile(image)
    if repository == "swarmops" or repository.endswith("/swarmops"):
        return _swarmops_profile(image)
    return None


def _valkey_profile(reference: str) -> ImageProfile:
    redis = _redis_profile(reference)
    return ImageProfile(
        family=Family.REDIS,
        reference=reference,
        entrypoint=redis.entrypoint,
        default_command=("valkey-server",),
        working_dir=redis.working_dir,
        programs=redis.programs,
    )


def container_argv(
    profile: ImageProfile, command: Sequence[str] | None, args: Sequence[str] | None
) -> tuple[str, ...]:
    """The in-image argv, by the Kubernetes rule: ``command`` replaces the image's
    entrypoint (and drops its default command); ``args`` replaces the default command."""
    if command:
        return (*command, *(args or ()))
    return (*profile.entrypoint, *(profile.default_command if args is None else args))


@dataclass(frozen=True)
class ResolvedProgram:
    program: Program
    argv: tuple[str, ...]  # the in-image argv with argv[0] the program's in-image name


class ProgramNotFound(LookupError):
    """The command names a program this image does not have on the process node."""


def local_program(profile: ImageProfile, argv: Sequence[str]) -> ResolvedProgram:
    """Map an in-image argv to one of the known programs, applying the image's
    entrypoint script where it has one (redis's ``docker-entrypoint.sh``)."""
    if not argv:
        raise ProgramNotFound(f"image {profile.reference} has no command to run")
    name = posixpath.basename(argv[0])
    rest = tuple(argv[1:])
    if name == "docker-entrypoint.sh" and profile.family is Family.REDIS:
        # The official image's entrypoint: a first argument that is a flag or a
        # .conf file means "redis-server with these arguments".
        if not rest or rest[0].startswith("-") or rest[0].endswith(".conf"):
            rest = ("redis-server", *rest)
        return local_program(profile, rest)
    program = profile.programs.get(name)
    if program is None:
        raise ProgramNotFound(
            f"executable {argv[0]!r} is not available for image {profile.reference} on the "
            f"process node (it runs: {', '.join(sorted(profile.programs))})"
        )
    return ResolvedProgram(program, (name, *rest))
