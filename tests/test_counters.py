"""
Tests for L{iocpsvc.counters}: the one table of figures, and that every
place that shows figures (C{/stats.json}, C{/metrics}, the summary line,
the workers' totals) shows every figure of it.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc import counters
from iocpsvc.apps import EchoContext
from iocpsvc.counters import CLOSED, FIGURES, Counters
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.stats import SUMMARY_LAYOUT, collect, summaryLine


def busyFactory() -> ConnectionContextFactory:
    """A factory whose every counter is set, each to its own value."""
    factory = ConnectionContextFactory(EchoContext, reactor=Clock())
    for value, name in enumerate(Counters.__slots__, start=7):
        if name != "closedTotal":
            setattr(factory.counters, name, value)
    factory.counters.closedTotal["peer"] = 3
    return factory


class TableTests(SynchronousTestCase):
    """The table itself."""

    def test_everyCounterIsAFigure(self) -> None:
        """Every attribute of Counters is read by a figure (closedTotal is the labelled one)."""
        self.assertEqual(set(counters.counterAttributes()), set(Counters.__slots__) - {"closedTotal"})

    def test_keysAndMetricsAreUnique(self) -> None:
        """No two figures share a key or a metric name."""
        keys = [figure.key for figure in FIGURES]
        metrics = [figure.metric for figure in FIGURES if figure.metric is not None]
        self.assertEqual(len(keys), len(set(keys)))
        self.assertEqual(len(metrics), len(set(metrics)))
        self.assertNotIn(CLOSED, keys)

    def test_countersEndInTotal(self) -> None:
        """Counter keys end in _total, as Prometheus names their samples; gauges do not."""
        for figure in FIGURES:
            self.assertEqual(figure.key.endswith("_total"), figure.kind == counters.COUNTER, figure.key)


class EveryPlaceShowsEveryFigureTests(SynchronousTestCase):
    """A figure added to the table appears everywhere, or a test here fails."""

    def test_statsJSON(self) -> None:
        """/stats.json has every figure, with the factory's values."""
        factory = busyFactory()
        stats = collect(factory)
        self.assertTrue({figure.key for figure in FIGURES} | {CLOSED} <= set(stats))
        self.assertEqual(stats["decode_errors_total"], factory.counters.decodeErrors)
        self.assertEqual(stats[CLOSED]["peer"], 3)

    def test_metrics(self) -> None:
        """/metrics has every figure that has a metric name, with its value."""
        factory = busyFactory()
        stats = collect(factory)
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(metricsText(lambda: stats).decode())
            for sample in family.samples
            if not sample.labels
        }
        for figure in FIGURES:
            if figure.metric is None:
                continue
            name = figure.metric + ("_total" if figure.kind == counters.COUNTER else "")
            self.assertIn(name, samples)
            self.assertEqual(samples[name], stats[figure.key], name)

    def test_summaryLine(self) -> None:
        """The summary line shows every figure: in its layout, or by its words when not zero."""
        stats = {figure.key: index for index, figure in enumerate(FIGURES, start=1)}
        line = summaryLine({**stats, CLOSED: {"peer": 3}, "rates": {}})
        for figure in FIGURES:
            if figure.key in SUMMARY_LAYOUT:
                continue
            self.assertIsNotNone(figure.summary, figure.key)
            self.assertIn(f"{figure.summary} ", line)
        self.assertIn(f"decode errors {stats['decode_errors_total']}", line)
