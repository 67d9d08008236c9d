"""Lock-free Prometheus collectors for the per-message hot path.

prometheus-client's own Counter and Histogram take a lock on every update,
which on a busy event loop costs more than the work being counted. Everything
the runtime counts per message or per tool call happens on the trio thread, so
these collectors keep plain Python numbers and build the metric families only
when the registry is scraped. Same names, labels and exposition as the
library's classes: a scrape cannot tell them apart.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric


class CounterChild:
    """One labelled series of a :class:`FastCounter`."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self.value += amount


class HistogramChild:
    """One labelled series of a :class:`FastHistogram`."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


class _Family:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        # The attribute names prometheus-client's collectors use, for tools that read them.
        self._name = name
        self._labelnames = self.labelnames

    def _key(self, values: tuple[str, ...], named: dict[str, str]) -> tuple[str, ...]:
        if named:
            if values:
                raise ValueError("give label values by position or by name, not both")
            try:
                values = tuple(str(named.pop(label)) for label in self.labelnames)
            except KeyError as missing:
                raise ValueError(f"{self.name}: missing label {missing}") from None
            if named:
                raise ValueError(f"{self.name}: unknown labels {sorted(named)}")
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return values


class FastCounter(_Family):
    """A counter family; ``name`` ends in ``_total`` as with prometheus-client."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames)
        self._children: dict[tuple[str, ...], CounterChild] = {}
        registry.register(self)

    def labels(self, *values: str, **named: str) -> CounterChild:
        """The series with these label values (by position or by name)."""
        if named or len(values) != len(self.labelnames):
            values = self._key(values, named)
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = CounterChild()
        return child

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(list(values), child.value)
        yield family


class FastHistogram(_Family):
    """A histogram family with fixed bucket bounds (``+Inf`` is added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames)
        self.bounds = tuple(float(b) for b in buckets if not math.isinf(b))
        self._children: dict[tuple[str, ...], HistogramChild] = {}
        self._unlabelled = None if labelnames else self.labels()
        registry.register(self)

    def labels(self, *values: str, **named: str) -> HistogramChild:
        """The series with these label values (by position or by name)."""
        if named or len(values) != len(self.labelnames):
            values = self._key(values, named)
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramChild(self.bounds)
        return child

    def observe(self, value: float) -> None:
        """Observe on the unlabelled series (a histogram declared without labels)."""
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels {self.labelnames}: use .labels(...).observe()")
        self._unlabelled.observe(value)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, math.inf), child.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric(list(values), buckets, child.total)
        yield family


def _le(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    return repr(float(bound))
