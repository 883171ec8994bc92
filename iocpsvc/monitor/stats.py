"""
The data monitor's figures (DIOCP's TIocpDataMonitor): a snapshot of a
factory's counters, per-second rates over the last few seconds, and the
table of online connections.

Nothing here runs on the hot path: the contexts count bytes and frames per
read and per write batch; this module adds them up (one pass over the
online contexts) once a second for the rates, and at most once per
C{maxAge} for the monitor's requests, which are served from that snapshot:
a flood of scrapes costs no more passes over the connections.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import LoopingCall

from iocpsvc import counters
from iocpsvc.addresses import describePeer
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory

RATE_WINDOW = 5.0
"""Seconds over which the per-second rates are computed."""


def collect(factory: ConnectionContextFactory) -> dict[str, Any]:
    """
    Every figure of C{factory} (L{iocpsvc.counters.FIGURES}) under its
    C{/stats.json} key, without C{rates}; with C{cluster} when it is in one.
    """
    result = counters.snapshot(factory)
    if factory.cluster is not None:
        result["cluster"] = factory.cluster.stats()
    return result


_RATED = (
    "received_bytes_total",
    "sent_bytes_total",
    "received_frames_total",
    "sent_frames_total",
    "accepted_total",
)


class FactorySource:
    """The figures of one factory in this process, as the monitor reads them."""

    def __init__(self, factory: ConnectionContextFactory) -> None:
        self.factory = factory
        self.reactor = factory.reactor

    def collect(self) -> dict[str, Any]:
        return collect(self.factory)

    def connections(self, sort: str, limit: int, descending: bool | None) -> dict[str, Any]:
        return connections(self.factory, sort, limit, descending)


def statsSource(factoryOrSource: Any) -> Any:
    """
    What the monitor reads: a factory's figures, or any object with
    C{collect()}, C{connections(sort, limit, descending)} (a dict or a
    Deferred of one) and C{reactor} (a worker pool's
    L{iocpsvc.monitor.pool.PoolSource}).
    """
    if isinstance(factoryOrSource, ConnectionContextFactory):
        return FactorySource(factoryOrSource)
    return factoryOrSource


class StatsSampler:
    """
    Samples a factory's counters once a second and derives per-second
    rates over the last L{RATE_WINDOW} seconds.

    @ivar samples: C{(seconds, snapshot)} pairs, oldest first.
    @ivar maxAge: how old, in seconds, the figures L{stats} gives may be.
    """

    def __init__(
        self,
        factory: Any,
        interval: float = 1.0,
        keep: int = 16,
        history: int = 300,
        maxAge: float = 0.5,
    ) -> None:
        """
        @param factory: a L{ConnectionContextFactory}, or a source of
            figures (see L{statsSource}).
        """
        self.source = statsSource(factory)
        self.reactor = self.source.reactor
        self.interval = interval
        self.maxAge = maxAge
        self._stats: dict[str, Any] | None = None
        self._statsAt = float("-inf")
        self._statsGeneration: object = None
        self._refreshing: list[Deferred[None]] | None = None
        self._extras: dict[str, Callable[[], dict[str, Any]]] = {}
        self.samples: deque[tuple[float, dict[str, Any]]] = deque(maxlen=keep)
        # (uptime, online, received bytes/s, sent bytes/s) per sample: the
        # dashboard's charts start from it.
        self.history: deque[tuple[float, int, float, float]] = deque(maxlen=history)
        self._loop: LoopingCall | None = None

    def start(self) -> None:
        """Sample now and then every C{interval} seconds."""
        if self._loop is None:
            self._loop = LoopingCall(self.sample)
            self._loop.clock = self.reactor
            self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def addFigures(self, name: str, figures: Callable[[], dict[str, Any]]) -> None:
        """Add C{figures()} to every snapshot, under C{name} (cheap figures only)."""
        self._extras[name] = figures

    def _collect(self) -> dict[str, Any]:
        snapshot = self.source.collect()
        for name, figures in self._extras.items():
            snapshot[name] = figures()
        return snapshot

    def sample(self) -> dict[str, Any]:
        """Take a snapshot now, keep it, and return it."""
        snapshot = self._collect()
        now = self.reactor.seconds()
        if self.samples:
            taken, previous = self.samples[-1]
            elapsed = now - taken
            if elapsed > 0:
                self.history.append(
                    (
                        snapshot["uptime_seconds"],
                        snapshot["online"],
                        round(
                            (snapshot["received_bytes_total"] - previous["received_bytes_total"]) / elapsed, 1
                        ),
                        round((snapshot["sent_bytes_total"] - previous["sent_bytes_total"]) / elapsed, 1),
                    )
                )
        self.samples.append((now, snapshot))
        self._keep(snapshot, now)
        return snapshot

    def _keep(self, snapshot: dict[str, Any], now: float) -> None:
        """Make C{snapshot}, with its rates, what L{stats} gives until it is C{maxAge} old."""
        current = dict(snapshot)
        current["rates"] = self.rates(current)
        self._stats = current
        self._statsAt = now
        self._statsGeneration = self._generation()

    def _generation(self) -> object:
        """The source's C{generation}, if it tells when its figures change."""
        return getattr(self.source, "generation", None)

    def historyJSON(self) -> dict[str, list[float]]:
        """C{/history.json}: the last minutes, one point per sample."""
        points = list(self.history)
        return {
            "uptime_seconds": [p[0] for p in points],
            "online": [p[1] for p in points],
            "received_bytes_per_second": [p[2] for p in points],
            "sent_bytes_per_second": [p[3] for p in points],
        }

    def rates(self, current: dict[str, Any] | None = None) -> dict[str, float]:
        """
        Per-second rates between the oldest sample within the window and
        C{current} (a fresh snapshot when not given).
        """
        now = self.reactor.seconds()
        if current is None:
            current = self._collect()
        base = None
        for taken, snapshot in self.samples:
            if now - taken <= RATE_WINDOW + self.interval / 2 and now > taken:
                base = (taken, snapshot)
                break
        result: dict[str, float] = {"window_seconds": 0.0}
        for key in _RATED:
            result[key.replace("_total", "_per_second")] = 0.0
        if base is None:
            return result
        elapsed = now - base[0]
        result["window_seconds"] = round(elapsed, 3)
        for key in _RATED:
            result[key.replace("_total", "_per_second")] = round((current[key] - base[1][key]) / elapsed, 3)
        return result

    def stats(self) -> dict[str, Any]:
        """
        C{/stats.json}: the snapshot plus C{rates}, at most C{maxAge}
        seconds old (the same object until then: do not change it), and
        taken again as soon as a source with a C{generation} (a worker
        pool's) has newer figures.
        """
        now = self.reactor.seconds()
        if (
            self._stats is None
            or now - self._statsAt >= self.maxAge
            or self._generation() != self._statsGeneration
        ):
            self._keep(self._collect(), now)
        assert self._stats is not None
        return self._stats

    def isFresh(self) -> bool:
        """Whether the kept stats are younger than C{maxAge}."""
        return self._stats is not None and self.reactor.seconds() - self._statsAt < self.maxAge

    def refreshed(self) -> Deferred[None] | None:
        """
        C{None} when L{stats} is fresh enough to answer from now; else,
        for a source whose figures are asked for (a worker pool's, with
        C{refresh()}), a Deferred that fires when they have been asked
        again: the figures of a pool are then as fresh as one process's.
        Requests that come while the source is being asked wait for the
        same answer.
        """
        refresh = getattr(self.source, "refresh", None)
        if refresh is None or self.isFresh():
            return None
        waiter: Deferred[None] = Deferred()
        if self._refreshing is None:
            self._refreshing = []

            def done(_: object) -> None:
                waiters, self._refreshing = self._refreshing or [], None
                # Whatever came, the next stats() collects again.
                self._statsAt = float("-inf")
                for each in waiters:
                    each.callback(None)

            # maybeDeferred: a refresh that raises at once is an answer
            # too, or every later request would wait on it for ever.
            maybeDeferred(refresh).addBoth(done)
        if self._refreshing is not None:
            self._refreshing.append(waiter)
        else:
            waiter.callback(None)  # the source answered at once
        return waiter


SORT_KEYS = ("id", "idle", "connected_at", "bytes_in", "bytes_out", "frames_in", "frames_out")

_ROW_FIELDS = {"id": "id", "idle": "idle_seconds", "connected_at": "connected_at"}


def connectionSortKey(sort: str) -> Callable[[dict[str, Any]], Any]:
    """The sort key of rows of C{/connections.json} (to merge workers' rows)."""
    field = _ROW_FIELDS.get(sort, sort)
    return lambda row: row[field]


def describeConnection(context: ConnectionContext, now: float, wallOffset: float) -> dict[str, Any]:
    """One row of C{/connections.json}."""
    return {
        "id": context.contextId,
        "peer": describePeer(context.peer),
        "connected_at": round(context.connectedAt + wallOffset, 3),
        "idle_seconds": round(now - context.lastActivity, 3),
        "bytes_in": context.bytesReceived,
        "bytes_out": context.bytesSent,
        "frames_in": context.framesReceived,
        "frames_out": context.framesSent,
        "pending_write_bytes": context.pendingWriteBytes,
    }


def connections(
    factory: ConnectionContextFactory, sort: str = "id", limit: int = 100, descending: bool | None = None
) -> dict[str, Any]:
    """
    C{/connections.json}: the online connections sorted by C{sort}, at most
    C{limit} of them (the top C{limit} found with a heap, not a full sort).
    C{idle}, C{bytes_*} and C{frames_*} sort largest first unless told.
    """
    if sort not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
    if descending is None:
        descending = sort not in ("id", "connected_at")
    now = factory.reactor.seconds()
    # connectedAt is reactor time; the JSON gives wall-clock seconds.
    wallOffset = time.time() - now
    keys = {
        "id": lambda c: c.contextId,
        "idle": lambda c: now - c.lastActivity,
        "connected_at": lambda c: c.connectedAt,
        "bytes_in": lambda c: c.bytesReceived,
        "bytes_out": lambda c: c.bytesSent,
        "frames_in": lambda c: c.framesReceived,
        "frames_out": lambda c: c.framesSent,
    }
    pick = heapq.nlargest if descending else heapq.nsmallest
    chosen = pick(limit, factory.online.values(), key=keys[sort])
    return {
        "online": len(factory.online),
        "sort": sort,
        "order": "desc" if descending else "asc",
        "limit": limit,
        "connections": [describeConnection(c, now, wallOffset) for c in chosen],
    }


SUMMARY_LAYOUT = (
    "online",
    "peak_online",
    "accepted_total",
    "refused_total",
    "received_frames_total",
    "received_bytes_total",
    "sent_frames_total",
    "sent_bytes_total",
    "pending_write_bytes",
    "decode_errors_total",
    "closed_total",
)
"""The figures the summary line shows in its own layout (the traffic as rates)."""


def summaryLine(stats: dict[str, Any]) -> str:
    """
    The one-line summary logged every C{--stats-interval} seconds: the
    figures of L{SUMMARY_LAYOUT}, then every other figure of the table that
    is not zero.
    """
    rates = stats.get("rates", {})
    closed = ", ".join(f"{k} {v}" for k, v in sorted(stats["closed_total"].items()) if v) or "none"
    others = counters.summaryFigures(stats)
    return (
        f"online {stats['online']} (peak {stats['peak_online']}); accepted {stats['accepted_total']}, "
        f"refused {stats['refused_total']}; in {rates.get('received_frames_per_second', 0):.0f} frames/s "
        f"{rates.get('received_bytes_per_second', 0) / 1024:.1f} KiB/s, out "
        f"{rates.get('sent_frames_per_second', 0):.0f} frames/s "
        f"{rates.get('sent_bytes_per_second', 0) / 1024:.1f} KiB/s; pending write "
        f"{stats['pending_write_bytes']} bytes; decode errors {stats['decode_errors_total']}; "
        f"closed: {closed}" + (f"; {others}" if others else "")
    )
