"""operator/ holds the package but must never be a package: it would shadow the stdlib."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_operator_directory_is_not_a_package() -> None:
    assert (REPO_ROOT / "operator" / "swarmops").is_dir()
    assert not (REPO_ROOT / "operator" / "__init__.py").exists()


def test_import_operator_from_repo_root_is_the_stdlib() -> None:
    # `python -c` puts the current directory first on sys.path: exactly the shadowing risk.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, sys; print(operator.__file__); "
            "print(operator.itemgetter(1)([0, 42]))",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, item = result.stdout.split()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(module_file).resolve().is_relative_to(stdlib)
    assert item == "42"


def test_swarmops_imports_from_repo_root() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import operator, swarmops; print(swarmops.__file__)"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(result.stdout.strip()).resolve().is_relative_to(REPO_ROOT / "operator")
