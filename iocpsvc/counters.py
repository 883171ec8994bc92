"""
Every figure a server keeps, defined once: its counters (events since
start) and gauges (how things are now).

L{FIGURES} is the one table.  Each L{Figure} names where its value comes
from, its key in C{/stats.json}, its Prometheus metric and help text, its
kind, how the parent of worker processes adds it up, and its words in the
summary line.  C{/stats.json} (L{iocpsvc.monitor.stats.collect}),
C{/metrics} (L{iocpsvc.monitor.prometheus}), the summary line and the
workers' totals are all generated from it; a test checks that none of them
lacks a figure of the table.

L{Counters} holds the event counters themselves: one per factory, added to
by the factory and by its contexts (through their host, L{iocpsvc.interfaces.IContextHost}).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from iocpsvc import errors

COUNTER: Literal["counter"] = "counter"
GAUGE: Literal["gauge"] = "gauge"


class Counters:
    """
    The event counters of one factory (a plain record: the hot path adds to
    its attributes directly).

    @ivar acceptedTotal: connections accepted (that got a context).
    @ivar refusedTotal: connections refused at accept (limit, filter,
        C{acceptPeer}, or making the context raised), or closed there for
        want of a descriptor; behind
        C{haproxy:}, also those whose PROXY header names a client the
        filter refuses.  With C{acceptedTotal}: every connection that
        reached the listening socket.
    @ivar acceptErrors: times a listening socket could not accept.
    @ivar decodeErrors: connections closed for a decode error.
    @ivar handlerErrors: exceptions raised by application code.
    @ivar truncatedFrames: connections that ended with received bytes
        never delivered.
    @ivar discardedFrames: oversized frames skipped by discard-mode codecs,
        over closed connections.
    @ivar writeBlockedTotal: times a connection passed the write high water
        mark.
    @ivar backlogPausedTotal: times a connection's reading paused behind a
        slow handler.
    @ivar closeTimeouts: closing connections aborted by a timeout.
    @ivar proxyHeaderErrors: connections behind C{haproxy:} closed for an
        invalid PROXY header.
    @ivar proxyHeaderTimeouts: connections behind C{haproxy:} closed for
        sending no complete PROXY header in time.
    @ivar directSends: replies sent straight to the socket from the turn
        that made them.
    @ivar peakOnline: the most connections online at once.
    @ivar closedTotal: close reason -> connections closed for it (every
        reason of L{iocpsvc.errors.CLOSE_REASONS} from the start).
    """

    __slots__ = (
        "acceptedTotal",
        "refusedTotal",
        "acceptErrors",
        "decodeErrors",
        "handlerErrors",
        "truncatedFrames",
        "discardedFrames",
        "writeBlockedTotal",
        "backlogPausedTotal",
        "closeTimeouts",
        "proxyHeaderErrors",
        "proxyHeaderTimeouts",
        "directSends",
        "peakOnline",
        "closedTotal",
    )

    def __init__(self) -> None:
        self.acceptedTotal = 0
        self.refusedTotal = 0
        self.acceptErrors = 0
        self.decodeErrors = 0
        self.handlerErrors = 0
        self.truncatedFrames = 0
        self.discardedFrames = 0
        self.writeBlockedTotal = 0
        self.backlogPausedTotal = 0
        self.closeTimeouts = 0
        self.proxyHeaderErrors = 0
        self.proxyHeaderTimeouts = 0
        self.directSends = 0
        self.peakOnline = 0
        self.closedTotal: dict[str, int] = dict.fromkeys(errors.CLOSE_REASONS, 0)


# How the parent of worker processes adds a figure up over its workers:
# "sum" (dead workers' counts kept, so counters never go back), "live sum"
# (over the live workers only: gauges), or None (the parent's own: its
# uptime, its peak of the workers' online sum).
Over = Literal["sum", "live sum", None]


@dataclass(frozen=True)
class Figure:
    """
    One figure of the table.

    @ivar key: its key in C{/stats.json}.
    @ivar metric: its Prometheus name (counters without C{_total}, which
        the exposition adds), or C{None} when it is not a metric.
    @ivar help: its Prometheus help text, one sentence.
    @ivar kind: L{COUNTER} or L{GAUGE}.
    @ivar read: its value, from a factory and the factory's one-pass
        C{totals()}.
    @ivar overWorkers: how the parent of workers adds it up (see L{Over}).
    @ivar summary: its words in the summary line; C{None}: the line's own
        layout shows it.
    """

    key: str
    metric: str | None
    help: str
    kind: Literal["counter", "gauge"]
    read: Callable[[Any, dict[str, int]], float]
    overWorkers: Over = "sum"
    summary: str | None = None


def _counter(attribute: str) -> Callable[[Any, dict[str, int]], float]:
    def read(factory: Any, totals: dict[str, int]) -> float:
        value: float = getattr(factory.counters, attribute)
        return value

    read.attribute = attribute  # type: ignore[attr-defined]
    return read


def _total(name: str) -> Callable[[Any, dict[str, int]], float]:
    return lambda factory, totals: totals[name]


FIGURES: tuple[Figure, ...] = (
    Figure(
        "online",
        "iocpsvc_connections_online",
        "Connections online now.",
        GAUGE,
        lambda f, t: len(f.online),
        "live sum",
    ),
    Figure(
        "peak_online",
        "iocpsvc_connections_peak",
        "The most connections online at once.",
        GAUGE,
        _counter("peakOnline"),
        None,
    ),
    Figure(
        "accepted_total",
        "iocpsvc_connections_accepted",
        "Connections accepted.",
        COUNTER,
        _counter("acceptedTotal"),
    ),
    Figure(
        "refused_total",
        "iocpsvc_connections_refused",
        "Connections refused at accept (limit, filter, or no descriptor left).",
        COUNTER,
        _counter("refusedTotal"),
    ),
    Figure(
        "accept_errors_total",
        "iocpsvc_accept_errors",
        "Times a listening socket could not accept (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
        COUNTER,
        _counter("acceptErrors"),
        summary="accept errors",
    ),
    Figure(
        "received_bytes_total",
        "iocpsvc_received_bytes",
        "Bytes received.",
        COUNTER,
        _total("receivedBytes"),
    ),
    Figure(
        "sent_bytes_total",
        "iocpsvc_sent_bytes",
        "Bytes handed to transports.",
        COUNTER,
        _total("sentBytes"),
    ),
    Figure(
        "received_frames_total",
        "iocpsvc_received_frames",
        "Objects decoded.",
        COUNTER,
        _total("receivedFrames"),
    ),
    Figure(
        "sent_frames_total",
        "iocpsvc_sent_frames",
        "Objects written.",
        COUNTER,
        _total("sentFrames"),
    ),
    Figure(
        "decode_errors_total",
        "iocpsvc_decode_errors",
        "Connections closed for a decode error.",
        COUNTER,
        _counter("decodeErrors"),
    ),
    Figure(
        "handler_errors_total",
        "iocpsvc_handler_errors",
        "Exceptions raised by application code.",
        COUNTER,
        _counter("handlerErrors"),
        summary="handler errors",
    ),
    Figure(
        "truncated_frames_total",
        "iocpsvc_truncated_frames",
        "Connections that ended with received bytes never delivered (a partial frame).",
        COUNTER,
        _counter("truncatedFrames"),
        summary="truncated frames",
    ),
    Figure(
        "discarded_frames_total",
        "iocpsvc_discarded_frames",
        "Oversized frames skipped by discard-mode codecs, over closed connections.",
        COUNTER,
        _counter("discardedFrames"),
        summary="discarded frames",
    ),
    Figure(
        "write_blocked_total",
        "iocpsvc_write_blocked",
        "Times a connection passed the write high water mark (reading paused until it drained).",
        COUNTER,
        _counter("writeBlockedTotal"),
        summary="write blocked",
    ),
    Figure(
        "backlog_paused_total",
        "iocpsvc_backlog_paused",
        "Times a connection's reading paused behind a slow handler.",
        COUNTER,
        _counter("backlogPausedTotal"),
        summary="backlog paused",
    ),
    Figure(
        "close_timeouts_total",
        "iocpsvc_close_timeouts",
        "Closing connections aborted by the close or shutdown timeout.",
        COUNTER,
        _counter("closeTimeouts"),
        summary="close timeouts",
    ),
    Figure(
        "direct_sends_total",
        "iocpsvc_direct_sends",
        "Replies sent straight to the socket from the reactor turn that made them.",
        COUNTER,
        _counter("directSends"),
        summary="direct sends",
    ),
    Figure(
        "awaiting_proxy_header",
        "iocpsvc_connections_awaiting_proxy_header",
        "Connections behind haproxy: still waiting for their PROXY header.",
        GAUGE,
        lambda f, t: f.awaitingProxyHeader,
        "live sum",
        summary="awaiting PROXY header",
    ),
    Figure(
        "proxy_header_errors_total",
        "iocpsvc_proxy_header_errors",
        "Connections behind haproxy: closed for an invalid PROXY header.",
        COUNTER,
        _counter("proxyHeaderErrors"),
        summary="PROXY header errors",
    ),
    Figure(
        "proxy_header_timeouts_total",
        "iocpsvc_proxy_header_timeouts",
        "Connections behind haproxy: closed for sending no PROXY header in time.",
        COUNTER,
        _counter("proxyHeaderTimeouts"),
        summary="PROXY header timeouts",
    ),
    Figure(
        "pending_write_bytes",
        "iocpsvc_pending_write_bytes",
        "Bytes written and not yet sent, over all connections.",
        GAUGE,
        _total("pendingWriteBytes"),
        "live sum",
    ),
    Figure(
        "uptime_seconds",
        "iocpsvc_uptime_seconds",
        "Seconds since the factory was created.",
        GAUGE,
        lambda f, t: round(f.reactor.seconds() - f.startedAt, 3),
        None,
        summary="uptime (s)",
    ),
    Figure(
        "node_id",
        None,
        "This node's id in its cluster (0: none).",
        GAUGE,
        lambda f, t: f.nodeId,
        None,
        summary="node",
    ),
)
"""The table (see the module docstring); C{closed_total}, by reason, is beside it."""

CLOSED = "closed_total"
"""The key of the per-reason close counts (a labelled Prometheus counter)."""

CLOSED_METRIC = ("iocpsvc_connections_closed", "Connections closed, by reason.")


def figure(key: str) -> Figure:
    """The figure whose C{/stats.json} key is C{key}."""
    for candidate in FIGURES:
        if candidate.key == key:
            return candidate
    raise KeyError(key)


def counterAttributes() -> Iterable[str]:
    """The L{Counters} attributes the table reads."""
    for candidate in FIGURES:
        attribute = getattr(candidate.read, "attribute", None)
        if attribute is not None:
            yield attribute


def snapshot(factory: Any) -> dict[str, Any]:
    """
    Every figure of C{factory} under its C{/stats.json} key, and
    C{closed_total}; the traffic totals from one pass (C{totals()}).
    """
    totals = factory.totals()
    result: dict[str, Any] = {candidate.key: candidate.read(factory, totals) for candidate in FIGURES}
    result[CLOSED] = dict(factory.counters.closedTotal)
    return result


def summaryFigures(stats: dict[str, Any]) -> str:
    """
    The figures of C{stats} the summary line's own layout leaves out, those
    that are not zero: C{"handler errors 2, write blocked 14"}.
    """
    return ", ".join(
        f"{candidate.summary} {stats[candidate.key]}"
        for candidate in FIGURES
        if candidate.summary is not None and stats.get(candidate.key)
    )
