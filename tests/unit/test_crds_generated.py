"""The checked-in CRDs are exactly what the models generate, in crds/ and in the Helm chart."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from swarmops.api.common import ApiModel, CustomResource, StatusBase
from swarmops.api.crdgen import (
    DEFAULT_OUTPUT_DIRS,
    CrdSchemaError,
    default_output_dirs,
    openapi_schema,
    render_crds,
    stale_crds,
    write_crds,
)
from swarmops.api.registry import KINDS, KindInfo

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_crds_match_the_models() -> None:
    stale = stale_crds(default_output_dirs(REPO_ROOT))
    assert not stale, (
        f"generated CRDs are stale: {[str(path) for path in stale]}; "
        "run `swarmops crds` (or `python -m swarmops.api.crdgen`) and commit the result"
    )


def test_helm_chart_carries_the_same_files_as_crds() -> None:
    plain, chart = (REPO_ROOT / relative for relative in DEFAULT_OUTPUT_DIRS)
    assert sorted(path.name for path in plain.glob("*.yaml")) == sorted(render_crds())
    for path in plain.glob("*.yaml"):
        assert (chart / path.name).read_text() == path.read_text()


def test_rendering_is_deterministic_and_covers_every_kind() -> None:
    first, second = render_crds(), render_crds()
    assert first == second
    assert sorted(first) == sorted(f"swarmops.dev_{info.plural}.yaml" for info in KINDS)


def test_write_then_check_round_trip(tmp_path: Path) -> None:
    out_dirs = [tmp_path / "crds", tmp_path / "chart" / "crds"]
    assert sorted(stale_crds(out_dirs)) == sorted(
        out_dir / name for out_dir in out_dirs for name in render_crds()
    )

    written = write_crds(out_dirs)

    assert len(written) == 2 * len(KINDS)
    assert stale_crds(out_dirs) == []
    assert write_crds(out_dirs) == [], "an up-to-date folder is left alone"


def test_a_hand_edit_or_a_leftover_file_is_stale(tmp_path: Path) -> None:
    out_dir = tmp_path / "crds"
    write_crds([out_dir])
    edited = out_dir / "swarmops.dev_agentpools.yaml"
    edited.write_text(edited.read_text().replace("maximum: 10000", "maximum: 5"))
    leftover = out_dir / "swarmops.dev_oldkinds.yaml"
    leftover.write_text("# a kind that no longer exists\n")
    unrelated = out_dir / "kustomization.yaml"
    unrelated.write_text("resources: []\n")

    assert sorted(stale_crds([out_dir])) == sorted([edited, leftover])

    write_crds([out_dir])
    assert stale_crds([out_dir]) == []
    assert not leftover.exists()
    assert unrelated.exists(), "files that are not ours are never touched"


class _LooseSpec(ApiModel):
    """A spec with a union the generator cannot express structurally."""

    value: int | list[int] = Field(description="Either a number or a list of numbers.")


class _LooseStatus(StatusBase):
    """A status."""


class _Loose(CustomResource):
    """A kind whose spec is not structural."""

    KIND = "Loose"
    kind: Literal["Loose"] = "Loose"
    spec: _LooseSpec
    status: _LooseStatus = Field(default_factory=_LooseStatus)


def test_generation_stops_at_what_a_structural_schema_cannot_hold() -> None:
    loose = KindInfo(model=_Loose, plural="looses", short_names=(), printer_columns=())
    with pytest.raises(CrdSchemaError, match=r"Loose\.spec\.value: 'anyOf'"):
        openapi_schema(loose)


def test_optional_fields_are_nullable_without_a_null_default() -> None:
    pool = next(info for info in KINDS if info.kind == "AgentPool")
    gpu = openapi_schema(pool)["properties"]["spec"]["properties"]["gpu"]
    assert gpu["nullable"] is True
    assert "default" not in gpu
    assert gpu["type"] == "object"
