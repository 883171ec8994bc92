"""
The monitor's figures as Prometheus metrics (text exposition through
C{prometheus_client}), from the same snapshot as C{/stats.json}: the
factory's from the one table (L{iocpsvc.counters.FIGURES}), then the
cluster bus's, what is running (C{iocpsvc_build_info}), the monitor's own
and the workers'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from iocpsvc.counters import CLOSED, CLOSED_METRIC, COUNTER, FIGURES

# The cluster bus's figures (the snapshot's "cluster" part), only when this
# node is in a cluster; a figure the bus does not report is left out.
CLUSTER_GAUGES = (
    ("iocpsvc_cluster_connected", "Whether messages reach the other nodes (1) or not (0).", "connected"),
    ("iocpsvc_cluster_node_id", "This node's id in its cluster.", "node_id"),
    (
        "iocpsvc_cluster_node_id_claimed",
        "Whether this node holds its node id (0: another node claims it, or the bus is down).",
        "node_id_claimed",
    ),
    (
        "iocpsvc_cluster_pending_bytes",
        "Bytes waiting for Redis to read them (capped: beyond, publishes are dropped).",
        "pending_bytes",
    ),
)
CLUSTER_COUNTERS = (
    ("iocpsvc_cluster_published", "Messages published to the other nodes.", "published_total"),
    ("iocpsvc_cluster_received", "Messages from other nodes delivered here.", "received_total"),
    (
        "iocpsvc_cluster_dropped",
        "Publishes not known to have reached the bus: made while down, over its buffer, refused, "
        "or unanswered when its link failed.",
        "dropped_total",
    ),
    (
        "iocpsvc_cluster_overflow",
        "Publishes dropped because too many bytes waited for Redis to read them.",
        "overflow_total",
    ),
    ("iocpsvc_cluster_reconnects", "Times the bus came back after being lost.", "reconnects_total"),
    ("iocpsvc_cluster_malformed", "Messages received that were not cluster messages.", "malformed_total"),
    (
        "iocpsvc_cluster_unrouted",
        "Directed messages no node was subscribed to receive.",
        "unrouted_total",
    ),
)


# The monitor's own HTTP server (the snapshot's "monitor" part).
MONITOR_GAUGES = (
    ("iocpsvc_monitor_connections_online", "Connections to the monitor open now.", "online"),
    (
        "iocpsvc_monitor_connections_max",
        "Connections the monitor serves at once (--monitor-max-connections).",
        "max_connections",
    ),
)
MONITOR_COUNTERS = (
    ("iocpsvc_monitor_requests", "Requests the monitor answered.", "requests_total"),
    (
        "iocpsvc_monitor_connections_refused",
        "Connections to the monitor refused at accept (over its cap, or no descriptor left).",
        "refused_total",
    ),
    (
        "iocpsvc_monitor_timed_out",
        "Monitor connections closed for not sending a whole request in time.",
        "timed_out_total",
    ),
    (
        "iocpsvc_monitor_rejected",
        "Monitor requests refused for their method or body (405, 413), unread, or sent too far ahead (429).",
        "rejected_total",
    ),
    (
        "iocpsvc_monitor_throttled",
        "Monitor requests that waited for their turn under the request rate.",
        "throttled_total",
    ),
)


# What is running (the snapshot's "server" part, L{iocpsvc.monitor.about}).
BUILD_INFO = ("iocpsvc_build", "What is running: iocpsvc's version, its reactor, codec and context.")
BUILD_INFO_LABELS = ("version", "reactor", "codec", "context", "python", "twisted")
START_TIME = ("iocpsvc_start_time_seconds", "When the server started, in seconds since the epoch.")


def serverMetrics(server: dict[str, Any]) -> Iterator[Metric]:
    """C{iocpsvc_build_info} (value 1, what is running in its labels) and the start time."""
    name, documentation = BUILD_INFO
    yield InfoMetricFamily(
        name,
        documentation,
        value={label: str(server[label]) for label in BUILD_INFO_LABELS if label in server},
    )
    if "started_at_seconds" in server:
        yield GaugeMetricFamily(START_TIME[0], START_TIME[1], value=server["started_at_seconds"])


class FactoryCollector:
    """A C{prometheus_client} collector reading a stats snapshot per scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        # Every figure of the one table that is a metric.
        for figure in FIGURES:
            if figure.metric is None:
                continue
            family = CounterMetricFamily if figure.kind == COUNTER else GaugeMetricFamily
            yield family(figure.metric, figure.help, value=stats[figure.key])
        name, documentation = CLOSED_METRIC
        closed = CounterMetricFamily(name, documentation, labels=["reason"])
        for reason, count in sorted(stats[CLOSED].items()):
            closed.add_metric([reason], count)
        yield closed
        cluster = stats.get("cluster")
        if cluster is not None:
            yield from clusterMetrics(cluster)
        server = stats.get("server")
        if server is not None:
            yield from serverMetrics(server)
        monitor = stats.get("monitor")
        if monitor is not None:
            for name, documentation, key in MONITOR_GAUGES:
                yield GaugeMetricFamily(name, documentation, value=monitor[key])
            for name, documentation, key in MONITOR_COUNTERS:
                yield CounterMetricFamily(name, documentation, value=monitor[key])
        rows = stats.get("workers")
        if rows is not None:
            yield from workerMetrics(
                rows, stats.get("worker_restarts_total", 0), stats.get("worker_relay_dropped_total", 0)
            )


# The parent of worker processes: one series per worker, labelled by its slot.
WORKER_SERIES = (
    ("iocpsvc_worker_connections_online", "Connections online in this worker.", "online", False),
    ("iocpsvc_worker_connections_accepted", "Connections this worker accepted.", "accepted_total", True),
    ("iocpsvc_worker_received_frames", "Objects this worker decoded.", "received_frames_total", True),
    ("iocpsvc_worker_sent_frames", "Objects this worker wrote.", "sent_frames_total", True),
    ("iocpsvc_worker_up", "Whether this worker process is running (1) or not (0).", "alive", False),
    (
        "iocpsvc_worker_responsive",
        "Whether this worker answered the parent's last question in time (1) or not (0).",
        "responsive",
        False,
    ),
)


def workerMetrics(rows: list[dict[str, Any]], restarts: int, relayDropped: int = 0) -> Iterator[Metric]:
    """
    Per-worker series (label C{worker}: the slot, which keeps its number
    across restarts; a restarted worker's counters start again from 0).
    """
    for name, documentation, key, counter in WORKER_SERIES:
        family: Metric = (
            CounterMetricFamily(name, documentation, labels=["worker"])
            if counter
            else GaugeMetricFamily(name, documentation, labels=["worker"])
        )
        for row in rows:
            family.add_metric([str(row["worker"])], float(row[key]))  # type: ignore[attr-defined]
        yield family
    yield CounterMetricFamily("iocpsvc_worker_restarts", "Workers restarted after dying.", value=restarts)
    yield CounterMetricFamily(
        "iocpsvc_worker_relay_dropped",
        "Messages between workers dropped: the worker they were for was not reading.",
        value=relayDropped,
    )


def clusterMetrics(cluster: dict[str, Any]) -> Iterator[Metric]:
    """The metrics of a cluster bus's C{stats()}."""
    for name, documentation, key in CLUSTER_GAUGES:
        if key in cluster:
            yield GaugeMetricFamily(name, documentation, value=float(cluster[key]))
    for name, documentation, key in CLUSTER_COUNTERS:
        if key in cluster:
            yield CounterMetricFamily(name, documentation, value=cluster[key])


def metricsText(snapshot: Callable[[], dict[str, Any]]) -> bytes:
    """The text exposition of the metrics (a private registry per call)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FactoryCollector(snapshot))
    return generate_latest(registry)
