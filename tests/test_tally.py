"""The lock-free tallies expose exactly what prometheus_client's own metrics would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.tally import TallyCounter, TallyGauge, TallyHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0)
# Below, on and between the bounds, and past the last one (the +Inf bucket).
OBSERVED = (0.0, 0.0005, 0.001, 0.005, 0.01, 0.1, 0.5, 1.0, 3.0)


def exposition(counter_type: type, histogram_type: type) -> bytes:
    registry = CollectorRegistry()
    plain = counter_type("demo_plain", "A counter.", registry=registry)
    labelled = counter_type("demo_labelled", "By code.", ["handler", "code"], registry=registry)
    latency = histogram_type("demo_latency", "Seconds.", registry=registry, buckets=BUCKETS)
    duration = histogram_type("demo_duration", "By handler.", ["handler"], registry=registry)
    plain.inc()
    plain.inc(41)
    labelled.labels("publish", "202").inc()
    labelled.labels("publish", "202").inc(2)
    labelled.labels("stream", "200").inc()
    for value in OBSERVED:
        latency.observe(value)
        duration.labels("publish").observe(value * 10)
    duration.labels("stream").observe(0.2)
    return generate_latest(registry)


def test_exposition_is_prometheus_clients() -> None:
    ours = exposition(TallyCounter, TallyHistogram)
    assert ours == exposition(Counter, Histogram)
    assert b'demo_latency_bucket{le="0.001"} 3.0' in ours  # "less than or equal"


def test_unlabelled_series_exist_before_any_count() -> None:
    registry = CollectorRegistry()
    TallyCounter("demo_zero", "Nothing yet.", registry=registry)
    TallyHistogram("demo_empty", "Nothing yet.", registry=registry)
    assert registry.get_sample_value("demo_zero_total") == 0
    assert registry.get_sample_value("demo_empty_count") == 0
    assert registry.get_sample_value("demo_empty_bucket", {"le": "+Inf"}) == 0


def test_wrong_label_count_is_refused() -> None:
    counter = TallyCounter("demo_labelled", "By code.", ["handler", "code"])
    with pytest.raises(ValueError, match="handler"):
        counter.labels("publish")


def test_a_name_is_registered_once() -> None:
    registry = CollectorRegistry()
    TallyCounter("demo_twice", "First.", registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        Counter("demo_twice", "Second.", registry=registry)


def gauges(gauge_type: type) -> bytes:
    registry = CollectorRegistry()
    plain = gauge_type("demo_open", "Open now.", registry=registry)
    labelled = gauge_type("demo_by_kind", "By kind.", ["kind"], registry=registry)
    gauge_type("demo_untouched", "Never set.", registry=registry)
    plain.inc()
    plain.inc(5)
    plain.dec(2)
    labelled.labels("a").set(7)
    labelled.labels("b").inc()
    labelled.labels("b").dec(3)
    return generate_latest(registry)


def test_gauge_exposition_is_prometheus_clients() -> None:
    ours = gauges(TallyGauge)
    assert ours == gauges(Gauge)
    assert b"demo_open 4.0" in ours
    assert b'demo_by_kind{kind="b"} -2.0' in ours
