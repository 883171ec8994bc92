"""
The data monitor over HTTP (C{twisted.web}), on its own endpoint::

    GET /                  the live dashboard (a self-contained page)
    GET /stats.json        counters, rates, uptime
    GET /metrics           Prometheus text exposition
    GET /connections.json  online connections (?sort=idle&limit=100&order=desc)
    GET /history.json      the last minutes of online and throughput, for charts
    GET /about.json        what is running: version, reactor, listeners, codec,
                           context, limits, workers, cluster node

L{MonitorService} also logs a one-line summary every C{statsInterval}
seconds.  Requests are answered from a snapshot of the counters taken at
most every half second (L{iocpsvc.monitor.stats.StatsSampler}), rendered
once per snapshot, so a flood of scrapes costs the socket server no pass
over its connections.  The HTTP server is hardened like the socket service
(L{iocpsvc.monitor.site}: a connection cap, a whole-request deadline, no
bodies); the endpoint binds to loopback by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib.resources import files
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from iocpsvc.accept import guardedReactor
from iocpsvc.machine import reactorOrGlobal
from iocpsvc.monitor.about import ServerDescription
from iocpsvc.monitor.site import MonitorLimits, MonitorSite
from iocpsvc.monitor.stats import SORT_KEYS, StatsSampler, statsSource, summaryLine
from iocpsvc.service import exitOneLine, listenOrRaise

DEFAULT_MONITOR = "tcp:9984:interface=127.0.0.1"
MAX_CONNECTIONS_LISTED = 1000

_log = Logger(namespace="iocpsvc.monitor")


def _json(request: Request, value: Any, code: int = 200) -> bytes:
    return _jsonBody(request, json.dumps(value, separators=(",", ":")).encode("utf-8"), code)


def _jsonBody(request: Request, body: bytes, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return body


class _MonitorResource(Resource):
    """
    A leaf of the monitor whose C{HEAD} is its C{GET} without the body,
    said in C{Content-Length}.  (Twisted's own way, C{GET} and the body
    dropped by the request, writes an info line to the log each time: a
    health check by C{HEAD} would fill the log.)
    """

    isLeaf = True

    def render_HEAD(self, request: Request) -> bytes:
        body = self.render_GET(request)  # type: ignore[attr-defined]
        if body is NOT_DONE_YET:
            return NOT_DONE_YET  # what is written to a HEAD is dropped
        request.setHeader(b"content-length", b"%d" % len(body))
        return b""


class _RenderedSnapshot:
    """
    The bytes of one rendering of the sampler's current snapshot, made again
    only when the snapshot changes (at most every C{maxAge} seconds).
    """

    def __init__(self, sampler: StatsSampler, render: Any) -> None:
        self.sampler = sampler
        self._render = render
        self._source: object = None
        self._body = b""

    def body(self) -> bytes:
        stats = self.sampler.stats()
        if stats is not self._source:
            self._body = self._render(stats)
            self._source = stats
        return self._body


def _whenFresh(request: Request, sampler: StatsSampler, answer: Callable[[], bytes]) -> bytes:
    """
    C{answer()} now, or, when the sampler's source is being asked for
    fresher figures (a worker pool's), once they have come.
    """
    waiting = sampler.refreshed()
    if waiting is None:
        return answer()
    return _answerLater(request, waiting.addCallback(lambda _: answer()))


def _answerLater(request: Request, body: Deferred[bytes]) -> bytes:
    """Finish C{request} with C{body} when it comes, unless the client has gone."""
    gone: list[object] = []
    request.notifyFinish().addErrback(gone.append)

    def answered(data: bytes) -> None:
        if not gone:
            # As an answer made at once has it (not chunked; HEAD says it).
            request.setHeader(b"content-length", b"%d" % len(data))
            if request.method != b"HEAD":
                request.write(data)
            request.finish()

    body.addCallback(answered)
    return NOT_DONE_YET  # type: ignore[return-value]


class StatsResource(_MonitorResource):
    def __init__(self, sampler: StatsSampler) -> None:
        super().__init__()
        self.sampler = sampler
        self._rendered = _RenderedSnapshot(
            sampler, lambda stats: json.dumps(stats, separators=(",", ":")).encode("utf-8")
        )

    def render_GET(self, request: Request) -> bytes:
        return _whenFresh(request, self.sampler, lambda: _jsonBody(request, self._rendered.body()))


class HistoryResource(_MonitorResource):
    def __init__(self, sampler: StatsSampler) -> None:
        super().__init__()
        self.sampler = sampler

    def render_GET(self, request: Request) -> bytes:
        return _json(request, self.sampler.historyJSON())


def _metricsText(stats: dict[str, Any]) -> bytes:
    """C{stats} in Prometheus text; C{prometheus_client} is imported with the first scrape."""
    from iocpsvc.monitor.prometheus import metricsText

    return metricsText(lambda: stats)


class MetricsResource(_MonitorResource):
    def __init__(self, sampler: StatsSampler) -> None:
        super().__init__()
        self.sampler = sampler
        self._rendered = _RenderedSnapshot(sampler, _metricsText)

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        return _whenFresh(request, self.sampler, self._rendered.body)


class ConnectionsResource(_MonitorResource):
    """
    C{/connections.json}.  A listing is kept for C{maxAge} seconds and
    served again to the same query (at most C{CACHED} queries at once), so
    a flood of requests does not sort the connections once each.
    """

    CACHED = 16

    def __init__(self, source: Any, maxAge: float = 0.5) -> None:
        super().__init__()
        self.source = source
        self.maxAge = maxAge
        self._cache: dict[tuple[str, int, bool | None], bytes] = {}
        self._cachedAt = float("-inf")

    def _listing(self, sort: str, limit: int, descending: bool | None) -> Any:
        now = self.source.reactor.seconds()
        if now - self._cachedAt >= self.maxAge:
            self._cache.clear()
            self._cachedAt = now
        key = (sort, limit, descending)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        listing = self.source.connections(sort, limit, descending)
        if isinstance(listing, Deferred):
            return listing  # the workers' answers: not kept
        body = json.dumps(listing, separators=(",", ":")).encode("utf-8")
        if len(self._cache) < self.CACHED:
            self._cache[key] = body
        return body

    def render_GET(self, request: Request) -> bytes:
        args = request.args or {}

        def arg(name: str, default: str) -> str:
            values = args.get(name.encode(), [])
            return values[0].decode("utf-8", "replace") if values else default

        sort = arg("sort", "id")
        order = arg("order", "")
        try:
            limit = int(arg("limit", "100"))
        except ValueError:
            return _json(request, {"error": "limit must be an integer"}, 400)
        if sort not in SORT_KEYS:
            return _json(request, {"error": f"sort must be one of {', '.join(SORT_KEYS)}"}, 400)
        if order not in ("", "asc", "desc"):
            return _json(request, {"error": "order must be asc or desc"}, 400)
        limit = max(0, min(limit, MAX_CONNECTIONS_LISTED))
        descending = None if not order else order == "desc"
        listing = self._listing(sort, limit, descending)
        if not isinstance(listing, Deferred):
            return _jsonBody(request, listing)

        # Worker processes answer later: finish the request when they have.
        return _answerLater(
            request,
            listing.addCallbacks(
                lambda value: _json(request, value),
                lambda failure: _json(request, {"error": str(failure.value)}, 500),
            ),
        )


class AboutResource(_MonitorResource):
    """C{/about.json}: what is running (L{iocpsvc.monitor.about.ServerDescription})."""

    def __init__(self, describe: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.describe = describe

    def render_GET(self, request: Request) -> bytes:
        return _json(request, self.describe())


class DashboardResource(_MonitorResource):
    def __init__(self) -> None:
        super().__init__()
        # The page ships in the package: no CDN, nothing fetched from outside.
        self.page = files("iocpsvc.monitor").joinpath("dashboard.html").read_bytes()

    def render_GET(self, request: Request) -> bytes:
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain")
            return b"not found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return self.page


class MonitorRoot(Resource):
    """The monitor's URL space."""

    def __init__(
        self, source: Any, sampler: StatsSampler, about: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        """
        @param about: what is running, for C{/about.json} (the server's
            description, L{iocpsvc.monitor.about.ServerDescription.describe});
            C{/about.json} is 404 without it.
        """
        super().__init__()
        self.dashboard = DashboardResource()
        if about is not None:
            self.putChild(b"about.json", AboutResource(about))
        self.putChild(b"stats.json", StatsResource(sampler))
        self.putChild(b"metrics", MetricsResource(sampler))
        self.putChild(b"connections.json", ConnectionsResource(statsSource(source), sampler.maxAge))
        self.putChild(b"history.json", HistoryResource(sampler))

    def getChild(self, path: bytes, request: Request) -> Resource:
        return self.dashboard


def makeSite(
    factory: Any,
    sampler: StatsSampler,
    limits: MonitorLimits | None = None,
    about: Callable[[], dict[str, Any]] | None = None,
) -> MonitorSite:
    """
    The monitor's C{twisted.web} site; its own figures join every snapshot,
    and so does C{about()} (what is running), under C{server}.
    """
    site = MonitorSite(MonitorRoot(factory, sampler, about), sampler.reactor, limits)
    sampler.addFigures("monitor", site.figures)
    if about is not None:
        sampler.addFigures("server", about)
    return site


def _url(address: Any) -> str:
    host = getattr(address, "host", None)
    if host is None:
        return repr(address) + " "
    return f"http://[{host}]:{address.port}/" if ":" in host else f"http://{host}:{address.port}/"


class MonitorService(MultiService):
    """
    Serves the monitor of C{factory} (a L{ConnectionContextFactory}, or
    the L{iocpsvc.monitor.pool.PoolSource} of a worker pool: see
    L{iocpsvc.monitor.stats.statsSource}) on C{description} and logs a
    summary every C{statsInterval} seconds (0: never).

    @ivar sampler: the L{StatsSampler} behind C{/stats.json}.
    @ivar site: the L{MonitorSite} (its connection cap and counters).
    @ivar ports: the listening port, once listening.
    """

    def __init__(
        self,
        factory: Any,
        description: str = DEFAULT_MONITOR,
        statsInterval: float = 60.0,
        reactor: Any = None,
        limits: MonitorLimits | None = None,
        about: ServerDescription | None = None,
    ) -> None:
        """
        @param limits: the monitor's own limits (its connection cap, request
            deadline and request rate); L{MonitorLimits}'s defaults when not
            given.
        @param about: what is running, for C{/about.json}, the C{server}
            part of C{/stats.json} and the dashboard's panel (the monitor's
            own URL is added to it).
        """
        super().__init__()
        self.reactor = reactor = reactorOrGlobal(reactor)
        self.factory = factory
        self.description = description
        self.statsInterval = statsInterval
        self.sampler = StatsSampler(factory)
        self.about = about
        self.site = makeSite(factory, self.sampler, limits, self.describe if about is not None else None)
        # Listening ports that refuse past the cap in the accept's own turn.
        self.endpoint = endpoints.serverFromString(guardedReactor(reactor), description)
        self.ports: list[Any] = []
        self._summary: LoopingCall | None = None

    def describe(self) -> dict[str, Any]:
        """What is running (C{about}'s description), with the monitor's URL once it listens."""
        assert self.about is not None
        description = self.about.describe()
        if self.ports:
            description["monitor"] = _url(self.ports[0].getHost())
        return description

    @property
    def port(self) -> Any:
        """The listening port, once listening."""
        return self.ports[0] if self.ports else None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        super().startService()
        self._listen()
        self.sampler.start()
        if self.statsInterval > 0:
            self._summary = LoopingCall(self.logSummary)
            self._summary.clock = self.reactor
            self._summary.start(self.statsInterval, now=False)

    exitOnListenError = False
    """Set by C{twistd iocpsvc}: a busy monitor port is one line, not a traceback."""

    def _listen(self) -> None:
        if self.ports:
            return
        try:
            listening = listenOrRaise([self.endpoint], self.site, self.ports)
        except (CannotListenError, OSError) as e:
            if not self.exitOnListenError:
                raise
            raise exitOneLine("--monitor", [self.description], e) from None
        listening.addCallback(
            lambda _: _log.info(
                "iocpsvc monitor on {url} (dashboard), {url}stats.json, {url}metrics, {url}connections.json",
                url=_url(self.ports[0].getHost()),
            )
        )

    def logSummary(self) -> None:
        """Log the one-line stats summary now."""
        _log.info("iocpsvc stats: {summary}", summary=summaryLine(self.sampler.stats()))

    def stopService(self) -> Any:
        if self._summary is not None and self._summary.running:
            self._summary.stop()
        self._summary = None
        self.sampler.stop()
        super().stopService()
        ports, self.ports = self.ports, []
        return gatherResults([maybeDeferred(p.stopListening) for p in ports])
