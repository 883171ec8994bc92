"""
The monitor's HTTP server, hardened like the socket service it watches.

The monitor is an attack surface of its own (an operator may expose it for
Prometheus), so it is held to the same rules as the service::

    a connection cap         at most C{maxConnections} connections at once;
                             more are closed at accept, in the same reactor
                             turn (L{iocpsvc.accept}), and counted
    a deadline per request   a request must be in whole within
                             C{requestTimeout} seconds of the connection (or
                             of the previous response): a header line every
                             few seconds does not reset it
    small requests           a request line and headers of at most 8 KiB,
                             at most 32 headers
    no bodies                any method but GET and HEAD, and any request
                             with a body, is answered 405 or 413 and closed
                             before a byte of the body is read: nothing is
                             buffered or spooled to disk
    no access log            a request is counted, not logged, at any level
                             (an open dashboard would otherwise write two
                             lines a second, a flood one per request); a
                             kept-alive connection closed idle likewise, and
                             a HEAD request (the resources answer it
                             themselves: L{iocpsvc.monitor.web})
    one request at a time    the requests a client sends without waiting
                             (pipelined) are handled one per reactor turn,
                             at most C{maxQueuedBytes} of them waiting; all
                             connections together are served at most
                             C{maxRequestRate} requests a second (a request
                             over the rate waits its turn): a flood costs
                             the socket service a bounded share of the
                             reactor

This module is the one that knows the internals of C{twisted.web}'s HTTP
channel it builds on (the request's method before the request object has
it, the body decoder chosen from the headers).

Its figures (L{MonitorSite.figures}) appear in C{/stats.json} under
C{monitor} and in C{/metrics} as C{iocpsvc_monitor_*}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Site
from zope.interface import implementer

from iocpsvc.accept import Refuse
from iocpsvc.interfaces import IAcceptGate
from iocpsvc.logs import RateLimitedLog

_log = Logger(namespace="iocpsvc.monitor")

REQUEST_BURST = 20
MAX_QUEUED_BYTES = 32 * 1024
"""Bytes of requests a connection may send ahead of the one being served."""
_END_OF_HEAD = b"\r\n\r\n"


@dataclass(frozen=True)
class MonitorLimits:
    """
    The monitor's own limits (see the module docstring).

    @ivar maxConnections: connections served at once; more are refused at
        accept.  A scraper, a dashboard or two and an operator need a few.
    @ivar requestTimeout: seconds a request may take to arrive in whole,
        from the connection or from the previous response.
    @ivar maxRequestRate: requests a second served, all connections
        together (with a burst of L{REQUEST_BURST}); more wait their turn.
    """

    maxConnections: int = 16
    requestTimeout: float = 10.0
    maxRequestRate: float = 100.0

    def __post_init__(self) -> None:
        if self.maxConnections < 1:
            raise ValueError("maxConnections must be at least 1")
        if self.requestTimeout <= 0 or self.maxRequestRate <= 0:
            raise ValueError("requestTimeout and maxRequestRate must be > 0")


_ALLOWED = (b"GET", b"HEAD")


def _response(code: int, phrase: str, body: str, extra: bytes = b"") -> bytes:
    """A whole HTTP/1.1 response that closes the connection."""
    content = body.encode("ascii")
    return (
        f"HTTP/1.1 {code} {phrase}\r\n".encode("ascii")
        + extra
        + b"Content-Type: text/plain\r\nConnection: close\r\n"
        + f"Content-Length: {len(content)}\r\n\r\n".encode("ascii")
        + content
    )


_TOO_MANY_QUEUED = _response(429, "Too Many Requests", "too many requests sent ahead of the answers\n")
_METHOD_NOT_ALLOWED = _response(405, "Method Not Allowed", "only GET and HEAD\n", b"Allow: GET, HEAD\r\n")
_BODY_NOT_ALLOWED = _response(413, "Content Too Large", "requests to the monitor have no body\n")


class MonitorChannel(HTTPChannel):
    """
    Twisted's HTTP/1.1 channel with a whole-request deadline, small request
    limits, and refusal of bodies before they are read.
    """

    # Request line and each header line; all of them together; how many.
    MAX_LENGTH = 8192
    totalHeadersSize = 8192
    maxHeaders = 32
    # After the deadline, a client that does not take its close is aborted.
    abortTimeout = 2

    site: MonitorSite
    _refused = False
    # Received bytes not handed to the parser yet: the request being read,
    # and any sent ahead of it.
    _queued = b""
    # A request handed to the parser has not been answered yet.
    _serving = False
    # The next request's turn, when it waits for one.
    _turn: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channelOpened()

    def dataReceived(self, data: bytes) -> None:
        # Not HTTPChannel's: it resets the timeout on every read, so a
        # header line every few seconds would hold the connection forever.
        # The timeout runs from the connection (or the last response) to
        # the request's last byte.  And the parser gets one request at a
        # time (see _next).
        if self._refused:
            return
        queued = self._queued + data
        if len(queued) > MAX_QUEUED_BYTES + self.totalHeadersSize:
            self._refuse(_TOO_MANY_QUEUED, "requests sent ahead past the limit")
            return
        self._queued = queued
        if not self._serving and self._turn is None:
            self._next()

    def _next(self, reserved: bool = False) -> None:
        """
        Hand the parser the next whole request head (requests have no
        body), once the site's rate lets it; what follows stays queued.
        """
        self._turn = None
        queued = self._queued
        end = queued.find(_END_OF_HEAD)
        if end < 0:
            if len(queued) > self.totalHeadersSize:
                # No end within the limit: the parser answers 400.
                self._queued = b""
                super(HTTPChannel, self).dataReceived(queued)
            return
        if not reserved:
            wait = self.site.takeTurn()
            if wait > 0:
                self._turn = self.site.reactor.callLater(wait, self._next, True)
                return
        head, self._queued = queued[: end + 4], queued[end + 4 :]
        self._serving = True
        super(HTTPChannel, self).dataReceived(head)

    def requestDone(self, request: Any) -> None:
        super().requestDone(request)
        self._serving = False
        if self._queued and self._turn is None and not self._refused:
            # The next pipelined request in a later turn: a client that
            # sends many at once does not hold the reactor for all of them.
            self._turn = self.site.reactor.callLater(0, self._next)

    def rawDataReceived(self, data: bytes) -> None:
        if self._refused:
            return
        super().rawDataReceived(data)

    def allHeadersReceived(self) -> None:
        command = self._command
        if command not in _ALLOWED:
            self._refuse(_METHOD_NOT_ALLOWED, f"method {command.decode('ascii', 'replace')!r}")
            return
        if self.length or self._transferDecoder is not None:
            self._refuse(_BODY_NOT_ALLOWED, "a request body")
            return
        super().allHeadersReceived()

    def _refuse(self, response: bytes, what: str) -> None:
        """Answer and close, reading nothing more (the body is never read)."""
        self._refused = True
        self.length = None  # not 0: the channel must not go on to the request
        self.setTimeout(None)
        transport = self.transport
        if transport is None:
            return
        transport.pauseProducing()  # type: ignore[attr-defined]
        self.site.requestRejected(transport.getPeer(), what)
        transport.write(response)
        transport.loseConnection()

    def timeoutConnection(self) -> None:
        # Not HTTPChannel's (a log line per connection, then a graceful
        # close that a client not reading can stretch): counted, logged
        # rate-limited, aborted.
        transport = self.transport
        if transport is None:
            return
        # Nothing of a request arrived: a browser's or scraper's kept-alive
        # connection it did not use again, not a slow client.
        idle = not self._queued and not self._serving
        self.site.requestTimedOut(transport.getPeer(), idle)
        transport.abortConnection()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._turn is not None and self._turn.active():
            self._turn.cancel()
        self._turn = None
        super().connectionLost(reason)
        self.site.channelClosed()


@implementer(IAcceptGate)
class MonitorSite(Site):
    """
    The monitor's C{twisted.web} site: a connection cap, counters, no
    access log (see the module docstring).

    @ivar limits: the L{MonitorLimits} in force.
    @ivar online: connections open now.
    @ivar requests: requests answered (200, 400 and 404 alike).
    @ivar refused: connections refused at accept for the cap.
    @ivar timedOut: connections closed for not sending a whole request in
        time.
    @ivar rejected: requests refused for their method or their body, or
        for being sent too far ahead.
    @ivar throttled: requests that waited for their turn under
        C{maxRequestRate}.
    """

    protocol = MonitorChannel  # type: ignore[assignment]
    noisy = False
    displayTracebacks = False

    def __init__(self, resource: Any, reactor: Any, limits: MonitorLimits | None = None) -> None:
        limits = limits if limits is not None else MonitorLimits()
        super().__init__(resource, timeout=limits.requestTimeout, reactor=reactor)
        self.limits = limits
        self.online = 0
        self.requests = 0
        self.refused = 0
        self.timedOut = 0
        self.rejected = 0
        self.throttled = 0
        # A token bucket: a token a request; it may go below zero, which
        # is how long the next request waits for its turn.
        self._tokens = float(REQUEST_BURST)
        self._tokensAt = reactor.seconds()
        self.rateLimitedLog = RateLimitedLog(_log, reactor.seconds)

    # -- IAcceptGate -------------------------------------------------------------

    def admit(self, address: IAddress | None, proxied: bool) -> bool:
        """Under the cap: serve it; else count and log the refusal."""
        if self.online < self.limits.maxConnections:
            return True
        self.refused += 1
        self.rateLimitedLog.warn(
            "monitor: refused {peer}: {maxConnections} connections open (--monitor-max-connections)",
            peer=str(address),
            maxConnections=self.limits.maxConnections,
        )
        return False

    def acceptFailed(self, error: str, closed: int) -> None:
        self.refused += closed
        self.rateLimitedLog.warn(
            "monitor: accept failed: {error}; closed {closed} waiting connections", error=error, closed=closed
        )

    def buildProtocol(self, addr: IAddress | None) -> Any:
        # Judged here too, for ports that do not judge at accept (the IOCP
        # reactor's): such a connection is closed a turn later.
        if not self.admit(addr, False):
            return Refuse()
        return super().buildProtocol(addr)

    # -- what the channels report --------------------------------------------------

    def takeTurn(self) -> float:
        """
        A request wants to be served: 0 if it may go now, else the seconds
        it waits for its turn (which is then kept for it).
        """
        now = self.reactor.seconds()
        rate = self.limits.maxRequestRate
        elapsed = max(0.0, now - self._tokensAt)  # a clock set back gives nothing
        self._tokens = min(float(REQUEST_BURST), self._tokens + elapsed * rate) - 1
        self._tokensAt = now
        if self._tokens >= 0:
            return 0.0
        self.throttled += 1
        return -self._tokens / rate

    def channelOpened(self) -> None:
        self.online += 1

    def channelClosed(self) -> None:
        self.online -= 1

    def requestRejected(self, peer: object, what: str) -> None:
        self.rejected += 1
        self.rateLimitedLog.warn("monitor: refused a request from {peer}: {what}", peer=str(peer), what=what)

    def requestTimedOut(self, peer: object, idle: bool = False) -> None:
        """
        A connection is closed for not sending a whole request in time:
        counted, and logged (rate-limited) when part of a request had come.
        A kept-alive connection left C{idle} is not logged: an open
        dashboard leaves one every few seconds.  (Not even at debug level:
        C{twistd} writes debug events to its log too.)
        """
        self.timedOut += 1
        if idle:
            return
        self.rateLimitedLog.info(
            "monitor: closing {peer}: no whole request within {seconds}s",
            peer=str(peer),
            seconds=self.timeOut,
        )

    def log(self, request: Any) -> None:
        """
        Count the request; no access log line (see the module docstring).
        This replaces C{twisted.web}'s access log, which writes a line a
        request into the server's log: two a second for each open dashboard.
        """
        self.requests += 1

    def figures(self) -> dict[str, int]:
        """The monitor's own counters, for C{/stats.json} and C{/metrics}."""
        return {
            "online": self.online,
            "max_connections": self.limits.maxConnections,
            "requests_total": self.requests,
            "refused_total": self.refused,
            "timed_out_total": self.timedOut,
            "rejected_total": self.rejected,
            "throttled_total": self.throttled,
        }
