"""The revision hash of a pod template."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from swarmops.core.revision import REVISION_LENGTH, template_revision

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "agent", "team": "a"}},
    "spec": {
        "containers": [{"name": "agent", "image": "agent:1", "args": ["--fast", "--safe"]}],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    },
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


def _shuffled_keys(value: Any, data: st.DataObject) -> Any:
    if isinstance(value, dict):
        keys = data.draw(st.permutations(list(value)))
        return {key: _shuffled_keys(value[key], data) for key in keys}
    if isinstance(value, list):
        return [_shuffled_keys(item, data) for item in value]
    return value


def test_revision_is_short_and_label_safe() -> None:
    revision = template_revision(TEMPLATE)
    assert len(revision) == REVISION_LENGTH
    assert revision.isalnum() and revision.islower()


@given(st.dictionaries(st.text(max_size=5), json_values, max_size=4), st.data())
def test_key_order_does_not_matter(template: dict[str, Any], data: st.DataObject) -> None:
    assert template_revision(_shuffled_keys(template, data)) == template_revision(template)


def test_stable_across_processes_and_releases() -> None:
    # A pinned value: if it changes, every pool would see all its pods as outdated.
    assert template_revision(TEMPLATE) == template_revision(json.loads(json.dumps(TEMPLATE)))
    assert template_revision({"spec": {"containers": []}}) == "f00de3f067"


def test_any_real_change_changes_the_revision() -> None:
    base = template_revision(TEMPLATE)
    changed_image = json.loads(json.dumps(TEMPLATE))
    changed_image["spec"]["containers"][0]["image"] = "agent:2"
    reordered_args = json.loads(json.dumps(TEMPLATE))
    reordered_args["spec"]["containers"][0]["args"].reverse()
    relabelled = json.loads(json.dumps(TEMPLATE))
    relabelled["metadata"]["labels"]["team"] = "b"
    without_empty_dir = json.loads(json.dumps(TEMPLATE))
    without_empty_dir["spec"]["volumes"][0].pop("emptyDir")
    revisions = {
        template_revision(t) for t in (changed_image, reordered_args, relabelled, without_empty_dir)
    }
    assert base not in revisions
    assert len(revisions) == 4


def test_null_fields_mean_absent() -> None:
    with_null = json.loads(json.dumps(TEMPLATE))
    with_null["spec"]["nodeSelector"] = None
    assert template_revision(with_null) == template_revision(TEMPLATE)
