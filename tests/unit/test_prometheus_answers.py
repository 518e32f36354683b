"""What a Prometheus /api/v1/query answer means as a measurement, and the query we send."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmops.analysis.prometheus import (
    ProviderError,
    one_line,
    render_query,
    shown_address,
    value_of,
)


def vector(*values: str) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [
                {"metric": {"revision": f"r{i}"}, "value": [1700000000.5, v]}
                for i, v in enumerate(values)
            ],
        },
    }


def test_one_series_is_its_value() -> None:
    assert value_of(vector("0.25")) == 0.25
    assert value_of(vector("+Inf")) == math.inf


def test_a_scalar_is_its_value() -> None:
    body = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "3"]}}
    assert value_of(body) == 3.0


def test_empty_vector_is_no_data_or_the_given_default() -> None:
    assert value_of(vector()) is None
    assert value_of(vector(), empty=0.0) == 0.0


def test_nan_is_no_data() -> None:
    assert value_of(vector("NaN")) is None


def test_several_series_are_an_error_not_a_choice() -> None:
    with pytest.raises(ProviderError, match="returned 2 series"):
        value_of(vector("0.1", "0.9"))


def test_a_range_vector_is_an_error() -> None:
    body = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    with pytest.raises(ProviderError, match="returned a matrix"):
        value_of(body)


def test_a_promql_error_is_reported_in_one_line() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error:\nunexpected"}
    with pytest.raises(ProviderError) as caught:
        value_of(body)
    assert str(caught.value) == "query failed: bad_data: 1:5: parse error: unexpected"


@pytest.mark.parametrize("body", [[], "x", {"status": "success"}, vector("zero")])
def test_malformed_answers_are_errors(body: Any) -> None:
    with pytest.raises(ProviderError):
        value_of(body)


def test_revision_is_substituted() -> None:
    query = 'sum(errors{revision="{{revision}}"}) / sum(tasks{revision="{{ revision }}"})'
    assert render_query(query, "5d8f9c") == (
        'sum(errors{revision="5d8f9c"}) / sum(tasks{revision="5d8f9c"})'
    )


@pytest.mark.parametrize("revision", ['a"}) or vector(1', "UPPER", "", "a b"])
def test_a_revision_that_is_not_a_dns_label_is_refused(revision: str) -> None:
    with pytest.raises(ProviderError, match="not a DNS label"):
        render_query("x{revision='{{revision}}'}", revision)


def test_shown_addresses_carry_no_credentials() -> None:
    assert shown_address("https://user:s3cret@prom.example:9443/prefix?token=abc") == (
        "https://prom.example:9443/prefix"
    )


@given(st.text())
def test_error_text_is_one_bounded_line(text: str) -> None:
    line = one_line(text)
    assert "\n" not in line and "\r" not in line
    assert len(line) <= 300
