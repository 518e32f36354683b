"""Measuring an analysis metric with Prometheus: one instant query through the HTTP API
(GET /api/v1/query), and its sampleQuery beside it.

What an answer means (`swarmops.core.analysis` judges it):

* A scalar, or a vector of exactly one series: its value is the measurement.
* An empty vector, or NaN: no data (the canary's series does not exist yet); the metric waits.
  For the sampleQuery, an empty vector means zero samples.
* A vector of several series is an error: the query must say how to make them one number
  (sum, avg, max ...), and the operator will not pick one for it.
* Prometheus unreachable, slow (timeoutSeconds), an HTTP error, a PromQL error, a range vector
  or a string: a provider error, one line in `Measurement.error`. Addresses in messages lose
  any user:password part, and response bodies are cut short.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from swarmops.api.agentpool import AnalysisMetric
from swarmops.api.common import DNS_LABEL_PATTERN
from swarmops.core.analysis import Measurement
from swarmops.metrics import Metrics

QUERY_PATH: Final = "/api/v1/query"
#: `{{revision}}`, spaces inside the braces allowed, as in Argo's and Flagger's templates.
REVISION_PLACEHOLDER: Final = re.compile(r"\{\{\s*revision\s*\}\}")
_REVISION_RE: Final = re.compile(DNS_LABEL_PATTERN)
#: Longest error text kept from a response; Prometheus' parse errors are short.
ERROR_TEXT_LIMIT: Final = 300


class ProviderError(Exception):
    """Prometheus gave no usable answer; the message is one line, without secrets."""


def render_query(query: str, revision: str) -> str:
    """The query with `{{revision}}` replaced. The revision is a template hash, a DNS label;
    anything else is refused rather than spliced into PromQL."""
    if not _REVISION_RE.match(revision):
        raise ProviderError(f"revision {revision!r} is not a DNS label")
    return REVISION_PLACEHOLDER.sub(revision, query)


def shown_address(address: str) -> str:
    """The address as it may appear in status and Events: no credentials, query or fragment."""
    parts = urlsplit(address)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def one_line(text: str, limit: int = ERROR_TEXT_LIMIT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _sample_value(sample: Any) -> float:
    # Prometheus sends [<unix time>, "<value>"]; the value is a string ("NaN", "+Inf" too).
    if not isinstance(sample, list) or len(sample) != 2:
        raise ProviderError(f"unexpected sample {one_line(repr(sample), 80)}")
    try:
        return float(sample[1])
    except (TypeError, ValueError):
        raise ProviderError(f"unexpected sample value {one_line(repr(sample[1]), 80)}") from None


def value_of(body: Any, *, empty: float | None = None) -> float | None:
    """The number in a successful /api/v1/query answer; `empty` for an empty vector; None for
    NaN (no data). Raises ProviderError for answers that are not one number."""
    if not isinstance(body, dict):
        raise ProviderError("the answer is not a JSON object")
    if body.get("status") != "success":
        kind = body.get("errorType") or "error"
        raise ProviderError(f"query failed: {kind}: {one_line(str(body.get('error', '')))}")
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError("the answer has no data")
    result_type = data.get("resultType")
    result = data.get("result")
    if result_type == "scalar":
        number = _sample_value(result)
    elif result_type == "vector" and isinstance(result, list):
        if not result:
            return empty
        if len(result) > 1:
            raise ProviderError(
                f"the query returned {len(result)} series; it must return one number "
                "(aggregate them, e.g. with sum() or avg())"
            )
        series = result[0]
        number = _sample_value(series.get("value") if isinstance(series, dict) else None)
    else:
        raise ProviderError(
            f"the query returned a {result_type}; it must return a scalar or one series "
            "(an instant vector)"
        )
    return None if math.isnan(number) else number


class PrometheusProvider:
    """Runs analysis queries against Prometheus; one HTTP session for the operator."""

    def __init__(
        self,
        *,
        default_address: str | None,
        timeout_seconds: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.default_address = default_address.rstrip("/") if default_address else None
        self.timeout_seconds = timeout_seconds
        self._metrics = metrics
        self._session: aiohttp.ClientSession | None = None

    async def measure(self, metric: AnalysisMetric, *, revision: str, now: datetime) -> Measurement:
        """Measure the metric for `revision` once. Never raises for what Prometheus does:
        failures come back as `Measurement.error`."""
        started = time.perf_counter()
        measurement = await self._take(metric, revision=revision, now=now)
        if self._metrics is not None:
            result = (
                "error"
                if measurement.error is not None
                else "no_data"
                if measurement.value is None
                else "answered"
            )
            self._metrics.analysis_measurements.labels(result).inc()
            self._metrics.analysis_measurement_seconds.observe(time.perf_counter() - started)
        return measurement

    async def _take(self, metric: AnalysisMetric, *, revision: str, now: datetime) -> Measurement:
        try:
            address = self._address(metric)
            queries = [self._query(address, render_query(metric.prometheus.query, revision))]
            if metric.sample_query is not None:
                sample_query = render_query(metric.sample_query, revision)
                queries.append(self._query(address, sample_query, empty=0.0))
            answers = await asyncio.gather(*queries)
        except ProviderError as error:
            return Measurement(at=now, value=None, error=str(error))
        samples = answers[1] if len(answers) > 1 else None
        return Measurement(at=now, value=answers[0], samples=samples)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _address(self, metric: AnalysisMetric) -> str:
        address = metric.prometheus.address or self.default_address
        if not address:
            raise ProviderError(
                "no Prometheus address: set prometheus.address on the metric, or the "
                "operator's --prometheus-url (chart value prometheus.url)"
            )
        return address.rstrip("/")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
                # The address is configuration; a proxy from the environment must not
                # silently reroute (or fail) analysis queries.
                trust_env=False,
            )
        return self._session

    async def _query(self, address: str, query: str, *, empty: float | None = None) -> float | None:
        where = shown_address(address)
        try:
            async with self._client().get(address + QUERY_PATH, params={"query": query}) as reply:
                text = await reply.text()
                try:
                    body = await reply.json(content_type=None)
                except ValueError:
                    raise ProviderError(
                        f"HTTP {reply.status} from Prometheus at {where}: {one_line(text)}"
                    ) from None
                if reply.status >= 400 and not isinstance(body, dict):
                    raise ProviderError(f"HTTP {reply.status} from Prometheus at {where}")
                return value_of(body, empty=empty)
        except TimeoutError:
            raise ProviderError(
                f"Prometheus at {where} did not answer within {self.timeout_seconds:g}s"
            ) from None
        except aiohttp.ClientError as error:
            raise ProviderError(
                f"Prometheus at {where} unreachable: {one_line(_reason(error))}"
            ) from None


_USERINFO: Final = re.compile(r"//[^/@\s]*@")


def _reason(error: aiohttp.ClientError) -> str:
    # ClientConnectorError's text repeats the URL (credentials included); its OS error does not.
    if isinstance(error, aiohttp.ClientConnectorError):
        return error.strerror or type(error).__name__
    return _USERINFO.sub("//", f"{type(error).__name__}: {error}")
