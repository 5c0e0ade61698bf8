"""Counters, gauges and histograms for the hot paths: plain numbers, exported by prometheus_client.

prometheus_client's metrics may be shared by threads, so every ``inc``,
``set`` and ``observe`` checks its arguments and takes a lock: about 2 µs of a
publish, which touches five of them; a stream's opening and closing touch
another six. Everything that counts a message, a request or a stream runs on the
IOLoop's thread, so these keep plain numbers, and hand prometheus_client
finished metric families when the registry is collected (a custom collector,
as prometheus_client documents for values kept elsewhere). The exposition is
the same as prometheus_client's own ``Counter``, ``Gauge`` and ``Histogram``
with ``_created`` series disabled.

Only for the IOLoop's thread: ``value += n`` from two threads can lose counts.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import ClassVar, Self

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

#: prometheus_client's default buckets (``+Inf`` is always added).
DEFAULT_BUCKETS = tuple(b for b in Histogram.DEFAULT_BUCKETS if b != float("inf"))


class _Tally:
    """What counters and histograms share: a name, labels and the collector protocol.

    ``labels(...)`` gives the child of one label set (look it up once and keep
    it, as with prometheus_client); an unlabelled tally counts in itself.
    """

    __slots__ = ("_children", "documentation", "labelnames", "name")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry | None,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], Self] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> Self:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        if self.labelnames:
            for values, child in self._children.items():
                child._add_to(family, values)
        else:
            self._add_to(family, ())
        yield family

    def _family(self) -> Metric:
        raise NotImplementedError

    def _child(self) -> Self:
        raise NotImplementedError

    def _add_to(self, family: Metric, values: Sequence[str]) -> None:
        raise NotImplementedError


class _Number(_Tally):
    """One plain number per label set: what counters and gauges share."""

    __slots__ = ("value",)
    _family_type: ClassVar[type[CounterMetricFamily] | type[GaugeMetricFamily]]

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.value = 0.0
        super().__init__(name, documentation, labelnames, registry)

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def _family(self) -> Metric:
        return self._family_type(self.name, self.documentation, labels=self.labelnames)

    def _child(self) -> Self:
        return type(self)(self.name, self.documentation)

    def _add_to(self, family: Metric, values: Sequence[str]) -> None:
        assert isinstance(family, (CounterMetricFamily, GaugeMetricFamily))
        family.add_metric(values, self.value)


class TallyCounter(_Number):
    """A counter: ``inc`` adds to a plain number."""

    __slots__ = ()
    _family_type = CounterMetricFamily


class TallyGauge(_Number):
    """A gauge: ``set``, ``inc`` and ``dec`` change a plain number."""

    __slots__ = ()
    _family_type = GaugeMetricFamily

    def set(self, value: float) -> None:
        self.value = value

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class TallyHistogram(_Tally):
    """A histogram: ``observe`` adds one to its bucket's plain count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        #: Upper bounds, ascending, without ``+Inf``.
        self.bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        #: Observations per bucket (not cumulative); the last one is ``+Inf``'s.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        super().__init__(name, documentation, labelnames, registry)

    def observe(self, value: float) -> None:
        # Buckets are "less than or equal": the first bound not below the value.
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def _family(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def _child(self) -> TallyHistogram:
        return TallyHistogram(self.name, self.documentation, buckets=self.bounds)

    def _add_to(self, family: Metric, values: Sequence[str]) -> None:
        assert isinstance(family, HistogramMetricFamily)
        bounds = [floatToGoString(b) for b in self.bounds] + ["+Inf"]  # type: ignore[no-untyped-call]
        family.add_metric(values, list(zip(bounds, accumulate(self.counts), strict=True)), self.sum)
