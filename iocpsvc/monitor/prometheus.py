"""
The monitor's figures as Prometheus metrics (text exposition through
C{prometheus_client}), read from the factory when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

# (metric name without _total, help, key in the stats snapshot)
COUNTERS = (
    ("iocpsvc_connections_accepted", "Connections accepted.", "accepted_total"),
    ("iocpsvc_connections_refused", "Connections refused at accept.", "refused_total"),
    ("iocpsvc_received_bytes", "Bytes received.", "received_bytes_total"),
    ("iocpsvc_sent_bytes", "Bytes handed to transports.", "sent_bytes_total"),
    ("iocpsvc_received_frames", "Objects decoded.", "received_frames_total"),
    ("iocpsvc_sent_frames", "Objects written.", "sent_frames_total"),
    ("iocpsvc_decode_errors", "Connections closed for a decode error.", "decode_errors_total"),
    ("iocpsvc_handler_errors", "Exceptions raised by application code.", "handler_errors_total"),
)
GAUGES = (
    ("iocpsvc_connections_online", "Connections online now.", "online"),
    ("iocpsvc_connections_peak", "The most connections online at once.", "peak_online"),
    (
        "iocpsvc_pending_write_bytes",
        "Bytes written and not yet sent, over all connections.",
        "pending_write_bytes",
    ),
    ("iocpsvc_uptime_seconds", "Seconds since the factory was created.", "uptime_seconds"),
)


class FactoryCollector:
    """A C{prometheus_client} collector reading a stats snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        for name, documentation, key in GAUGES:
            yield GaugeMetricFamily(name, documentation, value=stats[key])
        for name, documentation, key in COUNTERS:
            yield CounterMetricFamily(name, documentation, value=stats[key])
        closed = CounterMetricFamily(
            "iocpsvc_connections_closed", "Connections closed, by reason.", labels=["reason"]
        )
        for reason, count in sorted(stats["closed_total"].items()):
            closed.add_metric([reason], count)
        yield closed


def metricsText(snapshot: Callable[[], dict[str, Any]]) -> bytes:
    """The text exposition of the metrics (a private registry per call)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactoryCollector(snapshot))
    return generate_latest(registry)
