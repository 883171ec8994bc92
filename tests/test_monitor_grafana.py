"""
Tests for C{docs/grafana-dashboard.json}, the Grafana dashboard of the
monitor's C{/metrics} (L{iocpsvc.monitor.prometheus}): an importable
dashboard whose every query names series that a real rendering of
C{/metrics} has, and whose panels C{docs/monitoring.rst} describes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.apps import EchoContext
from iocpsvc.cluster.redis import RedisBus
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.config import ServerConfig
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.monitor.about import ServerDescription
from iocpsvc.monitor.pool import PoolSource
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.web import MonitorService
from tests.fakeworkers import FakeWorker, clockedPool

DOCS = Path(__file__).resolve().parent.parent / "docs"
DASHBOARD = DOCS / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"\biocpsvc_[a-z0-9_]+")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Added by Prometheus to every series it scrapes.
TARGET_LABELS = {"instance", "job"}


def renderedSeries() -> dict[str, set[str]]:
    """
    Every series name of C{/metrics} -> its label names, over a real
    rendering of one process in a cluster (with its monitor and what is
    running) and one of the parent of two workers.
    """
    clock = Clock()
    factory = ConnectionContextFactory(EchoContext, reactor=clock)
    config = ServerConfig(
        ports=("tcp:0",), contextClass=EchoContext, codec=parseCodecSpec("length"), limits=ServerLimits()
    )
    monitor = MonitorService(
        factory, statsInterval=0, reactor=clock, about=ServerDescription(config, config.limits, clock, list)
    )
    monitor.sampler.addFigures("cluster", RedisBus("redis://127.0.0.1:1", 5, reactor=clock).stats)
    pool = clockedPool()
    pool.workers = {1: FakeWorker(1, 10), 2: FakeWorker(2, 11)}  # type: ignore[dict-item]
    pool.snapshots = {1: {"online": 1}, 2: {"online": 2}}
    series: dict[str, set[str]] = {}
    for text in (metricsText(monitor.sampler.stats), metricsText(PoolSource(pool).collect)):
        for family in text_string_to_metric_families(text.decode()):
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return series


class GrafanaDashboardTests(SynchronousTestCase):
    """The dashboard JSON against the real /metrics."""

    def setUp(self) -> None:
        self.dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
        self.panels = [panel for panel in self.dashboard["panels"] if panel["type"] != "row"]

    def test_importable(self) -> None:
        """
        What Grafana's import needs: a schema version, the Prometheus data
        source as an input every panel and query uses, unique panel ids,
        and panels within the 24-column grid.
        """
        dashboard = self.dashboard
        self.assertGreaterEqual(dashboard["schemaVersion"], 36)
        self.assertEqual(
            [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]],
            [("DS_PROMETHEUS", "datasource", "prometheus")],
        )
        source = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        ids = [panel["id"] for panel in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertGreaterEqual(len(self.panels), 10)
        for panel in self.panels:
            self.assertEqual(panel["datasource"], source, panel["title"])
            self.assertTrue(panel["targets"], panel["title"])
            for query in panel["targets"]:
                self.assertEqual(query["datasource"], source, panel["title"])
            grid = panel["gridPos"]
            self.assertLessEqual(grid["x"] + grid["w"], 24, panel["title"])
        for variable in dashboard["templating"]["list"]:
            self.assertEqual(variable["datasource"], source)

    def test_everyMetricExists(self) -> None:
        """Every series a query names is in a real /metrics rendering, and so is each label a legend shows."""
        series = renderedSeries()
        queries = [
            (p["title"], q["expr"], q.get("legendFormat", "")) for p in self.panels for q in p["targets"]
        ]
        queries += [
            ("variable " + v["name"], v["definition"], "") for v in self.dashboard["templating"]["list"]
        ]
        used: set[str] = set()
        for title, expression, legend in queries:
            names = METRIC_NAME.findall(expression)
            self.assertTrue(names, f"{title}: {expression}")
            for name in names:
                self.assertIn(name, series, f"{title}: {name} is not in /metrics")
            used.update(names)
            labels = set().union(*(series[name] for name in names)) | TARGET_LABELS
            for label in LEGEND_LABEL.findall(legend):
                self.assertIn(label, labels, f"{title}: legend label {label} not on {names}")
        # The headline series are all on the dashboard.
        for wanted in (
            "iocpsvc_connections_online",
            "iocpsvc_connections_accepted_total",
            "iocpsvc_connections_closed_total",
            "iocpsvc_received_frames_total",
            "iocpsvc_sent_bytes_total",
            "iocpsvc_decode_errors_total",
            "iocpsvc_pending_write_bytes",
            "iocpsvc_worker_up",
            "iocpsvc_cluster_connected",
            "iocpsvc_build_info",
        ):
            self.assertIn(wanted, used)

    def test_rateOfCountersOnly(self) -> None:
        """rate() and increase() are taken of counters (_total), never of gauges."""
        for panel in self.panels:
            for query in panel["targets"]:
                for name in re.findall(r"(?:rate|increase)\(\s*(iocpsvc_\w+)", query["expr"]):
                    self.assertTrue(name.endswith("_total"), f"{panel['title']}: rate of {name}")

    def test_documented(self) -> None:
        """docs/monitoring.rst names every panel of the dashboard."""
        text = (DOCS / "monitoring.rst").read_text(encoding="utf-8")
        for panel in self.panels:
            self.assertIn(panel["title"], text)

    def test_queriesOfMetricsThatAreGone(self) -> None:
        """The check itself: a query of a series /metrics does not have is caught."""
        series = renderedSeries()
        self.assertNotIn("iocpsvc_connections_total", series)
        self.assertNotIn("iocpsvc_received_bytes", series)  # a counter's samples end in _total
