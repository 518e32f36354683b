"""From a container spec to the local command, environment and working directory."""

from __future__ import annotations

from typing import Any

import pytest

from swarmops.testbed.procnode.expansion import PathRewriter
from swarmops.testbed.procnode.images import LocalPrograms, Program, ProgramNotFound, resolve_image
from swarmops.testbed.procnode.launch import (
    LaunchContext,
    plan_container,
    plan_exec_probe,
    shim_scripts,
)
from swarmops.testbed.procnode.model import Container, parse_pod

POD_IP = "127.77.0.5"
PROGRAMS = LocalPrograms(python="/venv/bin/python")


def context(image: str = "redis:7", mounts: list[tuple[str, str]] | None = None) -> LaunchContext:
    profile = resolve_image(image)
    assert profile is not None
    return LaunchContext(profile, PROGRAMS, POD_IP, PathRewriter(mounts or []), "/run/c")


def container(**fields: Any) -> Container:
    raw = {"metadata": {"name": "p", "uid": "u"}, "spec": {"containers": [{"name": "c", **fields}]}}
    return parse_pod(raw).containers[0]


def plan(
    spec: Container,
    ctx: LaunchContext,
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> Any:
    return plan_container(
        spec,
        ctx,
        container_env=env or {},
        service_env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"},
        hostname="p",
        default_dir="/run/c/root",
        read_file=(files or {}).get,
    )


class TestRedisServer:
    def test_default_command_listens_on_the_pod_ip(self) -> None:
        result = plan(container(image="redis:7"), context())
        assert result.command.program is Program.REDIS_SERVER
        assert result.command.argv == (
            "/usr/bin/redis-server",
            "/run/c/redis-server.conf",
            "--bind",
            POD_IP,
            "--daemonize",
            "no",
        )
        ((path, conf, mode),) = result.command.files
        assert path == "/run/c/redis-server.conf" and mode == 0o600
        assert "protected-mode no" in conf

    def test_bind_comes_last_so_it_overrides_the_users(self) -> None:
        result = plan(
            container(image="redis", args=["--bind", "0.0.0.0", "--port", "7000"]), context()
        )
        argv = result.command.argv
        assert argv[2:6] == ("--bind", "0.0.0.0", "--port", "7000")
        assert argv[-4:] == ("--bind", POD_IP, "--daemonize", "no")

    def test_config_file_from_a_volume_is_copied_with_paths_rewritten(self) -> None:
        ctx = context(mounts=[("/etc/redis", "/vol/conf"), ("/data", "/vol/data")])
        conf = "port 7000\ndir /data\ncluster-config-file /data/nodes.conf\nprotected-mode yes\n"
        result = plan(
            container(
                image="redis",
                command=["redis-server"],
                args=["/etc/redis/redis.conf", "--maxmemory", "10mb"],
            ),
            ctx,
            files={"/vol/conf/redis.conf": conf},
        )
        assert result.command.argv[1:4] == ("/run/c/redis-server.conf", "--maxmemory", "10mb")
        ((_, generated, _),) = result.command.files
        # The image default comes first, so the user's own protected-mode wins.
        assert generated.index("protected-mode no") < generated.index("protected-mode yes")
        assert "dir /vol/data\n" in generated
        assert "cluster-config-file /vol/data/nodes.conf" in generated
        assert result.cwd == "/vol/data"  # the image's WORKDIR /data is a volume here

    def test_unreadable_config_file_is_included_for_redis_to_report(self) -> None:
        result = plan(container(image="redis", args=["/missing.conf"]), context())
        ((_, generated, _),) = result.command.files
        assert "include /missing.conf" in generated

    def test_working_directory_without_a_volume_is_the_containers_own(self) -> None:
        assert plan(container(image="redis"), context()).cwd == "/run/c/root"


class TestVariablesAndPaths:
    def test_args_expand_container_variables_then_rewrite_paths(self) -> None:
        ctx = context("swarmops", mounts=[("/config", "/vol/config")])
        spec = container(
            image="swarmops", args=["agent", "--config=$(CONF_DIR)/agent.yaml", "--ip", "$(POD_IP)"]
        )
        result = plan(spec, ctx, env={"CONF_DIR": "/config", "POD_IP": POD_IP})
        assert result.command.argv == (
            "/venv/bin/python",
            "-m",
            "swarmops",
            "agent",
            "--config=/vol/config/agent.yaml",
            "--ip",
            POD_IP,
        )

    def test_environment_has_base_variables_and_rewritten_values(self) -> None:
        ctx = context("swarmops", mounts=[("/secrets", "/vol/s")])
        result = plan(
            container(image="swarmops"),
            ctx,
            env={"TOKEN_FILE": "/secrets/token", "HOME": "/home/me"},
        )
        env = result.env
        assert env["POD_IP"] == POD_IP
        assert env["TOKEN_FILE"] == "/vol/s/token"
        assert env["HOME"] == "/home/me"  # the container's own value wins
        assert env["PATH"].startswith("/run/c/bin:/venv/bin:")
        assert env["KUBERNETES_SERVICE_PORT"] == "6443"
        assert env["PYTHONUNBUFFERED"] == "1"

    def test_program_the_image_lacks_is_an_error(self) -> None:
        with pytest.raises(ProgramNotFound):
            plan(container(image="redis", command=["nginx"]), context())

    def test_script_from_a_volume_runs_as_a_rewritten_copy(self) -> None:
        ctx = context(mounts=[("/scripts", "/vol/scripts"), ("/data", "/vol/data")])
        result = plan(
            container(image="redis", command=["/scripts/start.sh"], args=["x"]),
            ctx,
            files={"/vol/scripts/start.sh": "#!/bin/sh\nexec redis-server --dir /data\n"},
        )
        assert result.command.argv == ("/run/c/scripts/start.sh", "x")
        ((path, text, mode),) = result.command.files
        assert path == "/run/c/scripts/start.sh" and mode == 0o755
        assert "--dir /vol/data" in text

    def test_shell_scripts_get_rewritten_text_and_the_shell(self) -> None:
        ctx = context(mounts=[("/data", "/vol/data")])
        result = plan(
            container(image="redis", command=["sh", "-c"], args=["redis-server --dir /data"]), ctx
        )
        assert result.command.argv == ("/bin/sh", "-c", "redis-server --dir /vol/data")


class TestRedisCli:
    @pytest.mark.parametrize(
        ("probe", "expected"),
        [
            (["redis-cli", "ping"], ("-h", POD_IP, "ping")),
            (["redis-cli", "-h", "localhost", "ping"], ("-h", POD_IP, "ping")),
            (["redis-cli", "-h", "10.1.2.3", "ping"], ("-h", "10.1.2.3", "ping")),
            (["redis-cli", "-u", "redis://x:1", "ping"], ("-u", "redis://x:1", "ping")),
        ],
    )
    def test_exec_probe_talks_to_its_own_pod(
        self, probe: list[str], expected: tuple[str, ...]
    ) -> None:
        command = plan_exec_probe(probe, context(), {}, {}.get)
        assert command.argv == ("/usr/bin/redis-cli", *expected)

    def test_exec_probe_expands_only_static_variables(self) -> None:
        command = plan_exec_probe(
            ["redis-cli", "-a", "$(PASS)", "$(OTHER)"], context(), {"PASS": "pw"}, {}.get
        )
        assert command.argv[-3:] == ("-a", "pw", "$(OTHER)")


def test_shims_cover_the_images_programs_but_not_shells() -> None:
    files = {
        path.rsplit("/", 1)[1]: text
        for path, text, _ in shim_scripts(context(), "/run/c/context.json")
    }
    assert "redis-server" in files and "redis-cli" in files and "valkey-server" in files
    assert "sh" not in files and "bash" not in files
    assert "swarmops.testbed.procnode.shim" in files["redis-server"]
    assert files["redis-benchmark"] == '#!/bin/sh\nexec "/usr/bin/redis-benchmark" "$@"\n'
