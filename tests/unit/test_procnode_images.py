"""Which images the process node runs, and how in-image commands map to local ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.testbed.procnode.images import (
    Family,
    LocalPrograms,
    Program,
    ProgramNotFound,
    container_argv,
    local_program,
    parse_image_reference,
    resolve_image,
)

PROGRAMS = LocalPrograms(python="/venv/bin/python")


@pytest.mark.parametrize(
    "image",
    [
        "redis",
        "redis:7",
        "redis:7.2-alpine",
        "library/redis:7",
        "docker.io/library/redis:7.2",
        "docker.io/redis",
        "mirror.example.com:5000/library/redis:7@sha256:" + "a" * 64,
        "redis@sha256:" + "b" * 64,
    ],
)
def test_redis_images_run_the_local_redis(image: str) -> None:
    profile = resolve_image(image)
    assert profile is not None
    assert profile.family is Family.REDIS
    assert profile.working_dir == "/data"


@pytest.mark.parametrize(
    "image",
    ["swarmops", "swarmops:dev", "ghcr.io/swarmops/swarmops:0.1.0", "localhost:5000/x/swarmops"],
)
def test_swarmops_images_run_the_venv_python(image: str) -> None:
    profile = resolve_image(image)
    assert profile is not None and profile.family is Family.SWARMOPS
    argv = container_argv(profile, None, ["agent", "--queue", "q"])
    resolved = local_program(profile, argv)
    assert resolved.program is Program.SWARMOPS
    assert PROGRAMS.argv_prefix(resolved.program) + resolved.argv[1:] == (
        "/venv/bin/python",
        "-m",
        "swarmops",
        "agent",
        "--queue",
        "q",
    )


@pytest.mark.parametrize(
    "image",
    [
        "busybox",
        "nginx:1.27",
        "bitnami/redis:7",
        "redis-exporter",
        "ghcr.io/x/swarmops-ui",
        "",
        "  ",
    ],
)
def test_other_images_are_not_runnable(image: str) -> None:
    assert resolve_image(image) is None


def test_valkey_maps_to_the_local_redis_binaries() -> None:
    profile = resolve_image("valkey/valkey:8")
    assert profile is not None
    resolved = local_program(profile, container_argv(profile, None, None))
    assert resolved.program is Program.REDIS_SERVER


def test_image_reference_parsing() -> None:
    ref = parse_image_reference("registry.local:5000/team/redis:7@sha256:abc")
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "registry.local:5000",
        "team/redis",
        "7",
        "sha256:abc",
    )
    plain = parse_image_reference("redis")
    assert (plain.registry, plain.repository, plain.tag) == (None, "redis", None)


class TestKubernetesCommandRule:
    def test_no_command_no_args_runs_entrypoint_and_default_command(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        assert container_argv(profile, None, None) == ("docker-entrypoint.sh", "redis-server")

    def test_args_replace_the_default_command(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        assert container_argv(profile, None, ["--port", "7000"]) == (
            "docker-entrypoint.sh",
            "--port",
            "7000",
        )

    def test_command_replaces_the_entrypoint_and_drops_the_default_command(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        assert container_argv(profile, ["redis-server"], None) == ("redis-server",)
        assert container_argv(profile, ["redis-server"], ["/c.conf"]) == ("redis-server", "/c.conf")


class TestRedisEntrypoint:
    @pytest.mark.parametrize(
        ("args", "expected"),
        [
            (None, ("redis-server",)),
            (["--port", "7000"], ("redis-server", "--port", "7000")),
            (["/etc/redis/redis.conf"], ("redis-server", "/etc/redis/redis.conf")),
            (["redis-server", "--save", ""], ("redis-server", "--save", "")),
            (["redis-cli", "ping"], ("redis-cli", "ping")),
        ],
    )
    def test_docker_entrypoint_rule(
        self, args: list[str] | None, expected: tuple[str, ...]
    ) -> None:
        profile = resolve_image("redis:7")
        assert profile is not None
        assert local_program(profile, container_argv(profile, None, args)).argv == expected

    def test_absolute_in_image_paths_map_by_name(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        resolved = local_program(profile, ["/usr/local/bin/redis-server", "--port", "1"])
        assert resolved.program is Program.REDIS_SERVER
        assert resolved.argv == ("redis-server", "--port", "1")

    def test_sentinel_is_redis_server_in_sentinel_mode(self) -> None:
        assert PROGRAMS.argv_prefix(Program.REDIS_SENTINEL) == (
            "/usr/bin/redis-server",
            "--sentinel",
        )

    def test_unknown_program_fails_with_a_clear_message(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        with pytest.raises(ProgramNotFound, match="'nginx' is not available"):
            local_program(profile, ["nginx", "-g", "daemon off;"])

    def test_python_is_not_in_the_redis_image(self) -> None:
        profile = resolve_image("redis")
        assert profile is not None
        with pytest.raises(ProgramNotFound):
            local_program(profile, ["python3", "-c", "print(1)"])


@given(st.lists(st.text(min_size=1, max_size=8), max_size=5))
def test_args_after_the_program_are_passed_through_unchanged(args: list[str]) -> None:
    profile = resolve_image("swarmops")
    assert profile is not None
    resolved = local_program(profile, ["python3", *args])
    assert resolved.program is Program.PYTHON
    assert resolved.argv[1:] == tuple(args)
