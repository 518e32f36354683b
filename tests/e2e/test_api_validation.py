"""Every object of the invalid corpus is refused by the real apiserver with a message a person
can act on.

Each file in ``invalid/`` holds one object (refused on create), or two documents: the first is
created, the second is the update that must be refused (transition rules). Leading comments
say why it is invalid; every ``# expect: ...`` line is a fragment the apiserver's error must
contain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

CORPUS = Path(__file__).parent / "invalid"
EXPECT_PREFIX = "# expect:"
MODEL_ACCEPTS_PREFIX = "# model-accepts:"


@dataclass(frozen=True)
class InvalidCase:
    path: Path
    documents: list[dict[str, Any]]
    expected: list[str]
    #: Why the Python models accept it (checks that only the apiserver makes), if they do.
    model_accepts: str | None

    @property
    def rejected(self) -> dict[str, Any]:
        return self.documents[-1]

    @property
    def is_update(self) -> bool:
        return len(self.documents) == 2


def load_case(path: Path) -> InvalidCase:
    text = path.read_text(encoding="utf-8")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    expected = [
        line.removeprefix(EXPECT_PREFIX).strip()
        for line in comments
        if line.startswith(EXPECT_PREFIX)
    ]
    accepts = [
        line.removeprefix(MODEL_ACCEPTS_PREFIX).strip()
        for line in comments
        if line.startswith(MODEL_ACCEPTS_PREFIX)
    ]
    documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    return InvalidCase(path, documents, expected, accepts[0] if accepts else None)


CASES = sorted(CORPUS.glob("*.yaml"))


def _apply(testbed: Any, namespace: str, document: dict[str, Any], check: bool) -> Any:
    # Server-side apply with strict field validation, as `kubectl apply --server-side` does.
    return testbed.kubectl(
        "apply",
        "--server-side",
        "--field-manager=swarmops-tests",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(document),
        check=check,
    )


def _stored(testbed: Any, namespace: str, document: dict[str, Any]) -> dict[str, Any] | None:
    result = testbed.kubectl(
        "get",
        document["kind"].lower() + ".swarmops.dev",
        document["metadata"]["name"],
        "-n",
        namespace,
        "-o",
        "json",
        "--ignore-not-found",
        check=False,
    )
    return json.loads(result.stdout) if result.stdout.strip() else None


@pytest.mark.e2e
@pytest.mark.parametrize("path", CASES, ids=lambda path: path.stem)
def test_invalid_object_is_refused_with_a_readable_message(
    path: Path, testbed: Any, crds_installed: Path, namespace: str
) -> None:
    case = load_case(path)
    for accepted in case.documents[:-1]:
        _apply(testbed, namespace, accepted, check=True)
    before = _stored(testbed, namespace, case.rejected)

    result = _apply(testbed, namespace, case.rejected, check=False)

    assert result.returncode != 0, f"{path.name} was accepted:\n{result.stdout}"
    missing = [fragment for fragment in case.expected if fragment not in result.stderr]
    assert not missing, f"{path.name}: {missing} not in the apiserver's answer:\n{result.stderr}"
    after = _stored(testbed, namespace, case.rejected)
    # A refused request changes nothing: no object on create, the old spec on update.
    if before is None:
        assert after is None
    else:
        assert after is not None and after["spec"] == before["spec"]
