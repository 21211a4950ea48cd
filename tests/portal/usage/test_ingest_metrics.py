"""Ingestion observes every stored event's lag in one update per bucket; the histogram reads as if each event had
been observed on its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from portal.usage import metrics
from portal.usage.services.ingest import _observe_lags

LAGS = [0.0, -3.5, 0.2, 1.0, 1.0000001, 4.9, 5.0, 59.0, 3600.0, 86400.5, 40 * 86400.0, 7.25]


def _samples(registry: CollectorRegistry) -> list[tuple[str, dict[str, str], float]]:
    return sorted(
        (
            (sample.name, sample.labels, sample.value)
            for family in registry.collect()
            for sample in family.samples
            if not sample.name.endswith("_created")
        ),
        key=lambda sample: (sample[0], sorted(sample[1].items())),
    )


def test_lags_observed_together_read_as_observed_one_by_one() -> None:
    one_by_one, together = CollectorRegistry(), CollectorRegistry()
    buckets = metrics.INGEST_LAG._upper_bounds[:-1]  # the portal's own bounds (+Inf is added again)
    single = Histogram("lag", "lag", ["endpoint"], registry=one_by_one, buckets=buckets).labels("otlp")
    bulk = Histogram("lag", "lag", ["endpoint"], registry=together, buckets=buckets).labels("otlp")
    for lag in LAGS:
        single.observe(max(lag, 0.0))
    _observe_lags(bulk, list(LAGS))
    _observe_lags(bulk, [])
    assert _samples(together) == _samples(one_by_one)
    counts = {sample[1]["le"]: sample[2] for sample in _samples(together) if sample[0] == "lag_bucket"}
    assert (counts["1.0"], counts["5.0"], counts["+Inf"]) == (4, 7, len(LAGS))
