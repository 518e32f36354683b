"""The `swarmops` command line: version, usage errors, bad settings (exit code 2, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from swarmops import __version__
from swarmops.cli import build_parser, main, settings_from_args

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_version_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out == f"swarmops {__version__}\n"


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--version"])
    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["launch"],
        ["run", "--no-such-flag"],
        ["run", "--namespace"],
        ["run", "-n", "a", "--all-namespaces"],
    ],
)
def test_usage_errors_exit_2_with_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("swarmops")
    assert err.count("\n") == 1
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["run", "-n", "a", "--metrics-port", "99999"], {}, "--metrics-port='99999'"),
        (["run", "-n", "a", "--log-level", "chatty"], {}, "--log-level='chatty'"),
        (["run", "-n", "a"], {"SWARMOPS_HEALTH_PORT": "x"}, "SWARMOPS_HEALTH_PORT='x'"),
        (["run"], {}, "no scope"),
    ],
)
def test_bad_settings_exit_2_before_anything_starts(
    argv: list[str], env: dict[str, str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, environ=env) == 2
    err = capsys.readouterr().err
    assert err.startswith("swarmops run: error: ")
    assert expected in err
    assert err.count("\n") == 1


def test_missing_kubeconfig_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent"
    env = {"HOME": str(tmp_path)}
    assert main(["run", "-n", "a", "--kubeconfig", str(missing)], environ=env) == 2
    err = capsys.readouterr().err
    assert f"cannot read kubeconfig {missing}" in err
    assert "Traceback" not in err


def test_run_flags_map_onto_settings() -> None:
    args = build_parser().parse_args(
        ["run", "-n", "a", "-n", "b", "--log-format", "json", "--workers", "2"]
    )
    settings = settings_from_args(args, {"SWARMOPS_LOG_LEVEL": "warning"})
    assert settings.namespaces == ("a", "b")
    assert settings.log_format == "json"
    assert settings.log_level == "WARNING"
    assert settings.workers == 2


def test_console_script_runs_as_a_process() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "swarmops.cli", "run", "-n", "a", "--health-port", "65536"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert "--health-port='65536'" in result.stderr
    assert "Traceback" not in result.stderr


def test_crds_check_reports_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["crds", "--check", "--out-dir", str(tmp_path)]) == 1
    assert str(tmp_path) in capsys.readouterr().err


def test_crds_writes_then_checks_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--root", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["crds", "--check", "--root", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "crds").iterdir()) == sorted(
        p.name for p in (tmp_path / "helm" / "swarmops" / "crds").iterdir()
    )


def test_repository_crds_are_fresh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--check", "--root", str(REPO_ROOT)]) == 0, capsys.readouterr().err
