"""
The twistd plugin's options: C{twistd -n iocpsvc [options]}.

This is the only module that knows about command-line options: it parses
and checks them into a frozen L{ServerConfig}, and L{makeService} hands
that to the assembly (L{iocpsvc.assembly}), which builds the services.
"""

from __future__ import annotations

import os
import platform
import textwrap
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.python import reflect, usage

import twisted
from iocpsvc._version import __version__
from iocpsvc.addresses import endpointProblem, listenerKind, parseNetwork
from iocpsvc.apps import BUILTIN_CONTEXTS
from iocpsvc.assembly import buildService
from iocpsvc.cluster import checkNodeId
from iocpsvc.codecs import availableCodecs, parseCodecSpec
from iocpsvc.config import WORKER_SOCKET_MODES, ServerConfig, parseWorkerOf
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import CodecSpecError
from iocpsvc.factory import agreeWithContext
from iocpsvc.limits import ServerLimits
from iocpsvc.machine import availableCores
from iocpsvc.units import parseDuration, parseSize

DEFAULT_PORT = "tcp:9983"
DEFAULT_CODEC = "length"
DEFAULT_MAX_FRAME_LENGTH = "1MiB"


def resolveContext(name: str) -> type[ConnectionContext]:
    """
    A built-in context name (C{echo}, C{chat}) or the dotted name of a
    L{ConnectionContext} subclass.

    @raise usage.UsageError: neither.
    """
    if name in BUILTIN_CONTEXTS:
        return BUILTIN_CONTEXTS[name]
    if "." not in name:
        known = ", ".join(sorted(BUILTIN_CONTEXTS))
        raise usage.UsageError(
            f"--context: unknown context {name!r} (built-in: {known}; or a "
            f"dotted name such as mypackage.module.MyContext)"
        )
    try:
        found = reflect.namedAny(name)
    except Exception as e:
        raise usage.UsageError(f"--context: cannot import {name!r}: {e}") from None
    if not (isinstance(found, type) and issubclass(found, ConnectionContext)):
        raise usage.UsageError(f"--context: {name!r} is not a ConnectionContext subclass")
    return found


# The option groups of --help, in order; every option is in one of them
# (tests.test_tap checks), except the hidden ones.
HELP_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Listen", ("listen", "port", "no-keepalive", "proxy-header-timeout")),
    ("Codec and context", ("codec", "context", "max-frame-length", "codecs")),
    (
        "Limits",
        (
            "max-connections",
            "allow",
            "deny",
            "idle-timeout",
            "write-high-water",
            "max-pending-write",
            "max-pending-objects",
            "max-pending-object-bytes",
            "close-timeout",
            "shutdown-timeout",
        ),
    ),
    ("Workers", ("workers", "worker-sockets", "worker-timeout")),
    ("Monitor", ("monitor", "monitor-max-connections", "monitor-timeout", "stats-interval")),
    ("Cluster", ("cluster", "node-id")),
    ("Other", ("version", "help")),
)

HIDDEN_OPTIONS = ("worker-of",)
"""Options set by iocpsvc itself (the parent for its workers), not in --help."""

# What each option's value is, in --help (--listen=DESC).
_METAVARS = {
    "listen": "DESC",
    "port": "DESC",
    "codec": "SPEC",
    "context": "NAME",
    "monitor": "DESC",
    "cluster": "URL",
    "allow": "CIDR",
    "deny": "CIDR",
    "worker-sockets": "MODE",
    "workers": "N",
    "node-id": "ID",
}
_SIZES = ("max-frame-length", "write-high-water", "max-pending-write", "max-pending-object-bytes")
_DURATIONS = (
    "shutdown-timeout",
    "idle-timeout",
    "monitor-timeout",
    "stats-interval",
    "close-timeout",
    "proxy-header-timeout",
    "worker-timeout",
)


class Options(usage.Options):
    """Options of C{twistd iocpsvc}."""

    synopsis = "[options]"
    longdesc = (
        "Run an IOCP-style socket server: each connection gets a context, a "
        "decoder splits the stream into objects, an encoder turns replies "
        "back into bytes.  With no options: an echo server on tcp:9983 with "
        "the length codec (4-byte big-endian length prefix).  Sizes take "
        "units (65536, 64KiB, 1MiB), durations too (30, 1.5s, 250ms, 5m, 1h)."
    )

    optParameters: list[list[Any]] = [
        [
            "codec",
            "c",
            None,
            "A framer and optional object codecs joined by '+', e.g. length, "
            "length:size=2:order=little+json, line:max=8192+text, netstring, fixed:size=16, "
            "diocp, hpsocket:flag=0x155; --codecs lists them [default: length, or the context's own].",
        ],
        [
            "context",
            None,
            "echo",
            "The context class: a built-in name (echo, chat) or a dotted name.",
        ],
        [
            "max-frame-length",
            None,
            None,
            "Largest frame accepted; a codec spec's own max= wins [default: the codec's own: "
            "1MiB for length, line, netstring; 10MiB diocp; 256KiB hpsocket].",
        ],
        [
            "shutdown-timeout",
            None,
            "10s",
            "How long connections may flush on stop before they are aborted.",
        ],
        [
            "max-connections",
            None,
            None,
            "Connections online at once; more are closed at accept "
            "[default: the open-files limit (raised to its hard limit at start) less 64].",
        ],
        [
            "idle-timeout",
            None,
            "5m",
            "Close a connection that has received nothing for this long (0 = off).",
        ],
        [
            "write-high-water",
            None,
            "64KiB",
            "Stop reading from a client while more than this waits to be sent to it.",
        ],
        [
            "max-pending-write",
            None,
            None,
            "Close a client (slow-client) with more than this waiting to be sent to it "
            "[default: the codec's largest frame plus 1MiB, at least 4MiB].",
        ],
        [
            "max-pending-objects",
            None,
            "128",
            "Pause reading from a client with more objects than this waiting behind a slow handler.",
        ],
        [
            "max-pending-object-bytes",
            None,
            "1MiB",
            "Pause reading from a client whose frames waiting behind a slow handler add up to more "
            "than this.",
        ],
        [
            "monitor",
            None,
            "tcp:9984:interface=127.0.0.1",
            "Endpoint of the HTTP monitor (dashboard, /stats.json, /metrics, /connections.json), or 'none'.",
        ],
        [
            "monitor-max-connections",
            None,
            "16",
            "Connections the monitor serves at once; more are refused at accept "
            "(their descriptors are kept out of --max-connections).",
        ],
        [
            "monitor-timeout",
            None,
            "10s",
            "How long a monitor request may take to arrive in whole; slower ones are closed.",
        ],
        [
            "stats-interval",
            None,
            "1m",
            "Log a one-line stats summary this often (0 = off).",
        ],
        [
            "close-timeout",
            None,
            "10s",
            "Abort a closing connection that has not sent what it owes after this long.",
        ],
        [
            "proxy-header-timeout",
            None,
            "10s",
            "Behind haproxy: close a connection that has not sent its PROXY header after "
            "this long (0 = the idle timeout applies).",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes accepting from the same listening sockets: a number, or 'auto' "
            "(one per core).  The parent restarts a worker that dies and serves one monitor.",
        ],
        [
            "cluster",
            None,
            None,
            "Join the nodes publishing to this Redis (redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB]"
            "[?prefix=NAME]; rediss is TLS, with ca=, cert=, key=, sni=; the password may come from "
            "password_file=PATH or $IOCPSVC_CLUSTER_PASSWORD instead, off the command line): "
            "broadcasts and sendTo reach clients on every node [default: off].",
        ],
        [
            "worker-sockets",
            None,
            None,
            "How workers share a listening socket: 'reuseport' (each worker its own socket, "
            "SO_REUSEPORT) or 'shared' (all accept from one) [default: reuseport on Linux].",
        ],
        [
            "worker-timeout",
            None,
            "30s",
            "Kill and replace a worker that has not answered its parent for this long (0 = never).",
        ],
        [
            "worker-of",
            None,
            None,
            "(Internal: set by the parent for its worker processes.)",
        ],
        [
            "node-id",
            None,
            None,
            "This node's id in the cluster, 1 to 2097151; the high part of its context ids "
            "(worker i of N uses ID+i-1) [default: random].",
        ],
    ]

    optFlags: list[list[Any]] = [
        ["no-keepalive", None, "Do not turn TCP keep-alive on for each connection."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["allow"] = []
        self["deny"] = []
        # Which option gave each listener, to name it in error messages.
        self.listenOptions: dict[str, str] = {}

    def opt_allow(self, network: str) -> None:
        """
        Accept only peers in this network (CIDR, IPv4 or IPv6, e.g.
        10.0.0.0/8); repeatable.
        """
        self["allow"].append(network)

    def opt_deny(self, network: str) -> None:
        """Refuse peers in this network (CIDR); repeatable; wins over --allow."""
        self["deny"].append(network)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse; under twistd (which sets C{parent}), a bad option ends the
        process with one line on stderr instead of twistd's full usage text.
        """
        # Kept for the worker processes, which are started with the same options.
        self.rawArgs = list(options) if options is not None else None
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit(f"twistd iocpsvc: {e}") from None

    def opt_listen(self, description: str) -> None:
        """
        Listen on this endpoint (a Twisted endpoint description, e.g.
        tcp:9983:interface=127.0.0.1, tcp6:9983, ssl:9993:privateKey=KEY:certKey=CERT,
        unix:/run/app.sock, systemd:domain=INET:index=0, haproxy:tcp:9983); repeatable
        [default: tcp:9983].
        """
        self["listen"].append(description)
        self.listenOptions.setdefault(description, "--listen")

    def opt_port(self, description: str) -> None:
        """The same as --listen (the older name, kept)."""
        self["listen"].append(description)
        self.listenOptions.setdefault(description, "--port")

    opt_p = opt_port

    def opt_codecs(self) -> None:
        """List the available codecs and exit."""
        for name, plugin in sorted(availableCodecs().items()):
            params = ", ".join(sorted(plugin.parameters)) or "-"
            print(f"{name:12} {plugin.kind:7} {plugin.description}  [{params}]")
        raise SystemExit(0)

    def opt_version(self) -> None:
        """Print iocpsvc's version (and Twisted's and Python's) and exit."""
        print(f"iocpsvc {__version__} (Twisted {twisted.__version__}, Python {platform.python_version()})")
        raise SystemExit(0)

    def getUsage(self, width: int | None = None) -> str:
        """
        The options grouped by concern (L{HELP_GROUPS}), each with its
        default, the internal ones left out; then the long description.
        """
        columns = os.environ.get("COLUMNS", "")
        width = width or (int(columns) if columns.isascii() and columns.isdigit() else 80)
        shortOf = {long: short for short, long in self.synonyms.items() if len(short) == 1}
        parameters = {opt[:-1] for opt in self.longOpt if opt.endswith("=")}
        column = 34
        docWidth = max(30, width - column)
        lines = textwrap.wrap(self.longdesc, width)
        for title, names in HELP_GROUPS:
            lines.append(f"\n{title}:")
            for name in names:
                short = f"-{shortOf[name]}, " if name in shortOf else "    "
                flag = f"  {short}--{name}"
                doc = " ".join(str(self.docs.get(name) or "").split())
                if name in parameters:
                    flag += "=" + _METAVARS.get(
                        name, "SIZE" if name in _SIZES else "DURATION" if name in _DURATIONS else "N"
                    )
                    default = self.defaults.get(name)
                    if default is not None and "[default:" not in doc:
                        doc += f" [default: {default}]"
                wrapped = textwrap.wrap(doc, docWidth, break_on_hyphens=False) or [""]
                if len(flag) + 2 > column:  # a long option: its text starts on the next line
                    lines.append(flag)
                    flag = ""
                lines.append(f"{flag:<{column}}{wrapped[0]}")
                lines.extend(" " * column + more for more in wrapped[1:])
        return "\n" + "\n".join(lines) + "\n"

    def postOptions(self) -> None:
        """Check every option and freeze them into C{self.config} (a L{ServerConfig})."""
        from twisted.internet import reactor  # twistd has chosen the reactor by now

        if not self["listen"]:
            self["listen"] = [DEFAULT_PORT]
        for description in self["listen"]:
            if description.startswith("systemd:") and self["worker-of"] is not None:
                continue  # a worker gets its parent's socket, not systemd's
            option = self.listenOptions.get(description, "--listen")
            problem = endpointProblem(reactor, description)
            if problem is not None:
                raise usage.UsageError(f"{option} {description!r}: {problem}")

        contextClass = resolveContext(self["context"])
        maxFrameLength = None
        if self["max-frame-length"] is not None:
            maxFrameLength = _number(self, "max-frame-length", parseSize, minimum=1)
        spec = self["codec"] or getattr(contextClass, "defaultCodec", None) or DEFAULT_CODEC
        try:
            codec = parseCodecSpec(spec, maxFrameLength)
        except CodecSpecError as e:
            raise usage.UsageError(f"--codec {spec!r}: {e}") from None
        if not self["codec"] and maxFrameLength is not None and not isinstance(spec, str):
            raise usage.UsageError(
                f"--max-frame-length: the context {self['context']} brings its own codec "
                f"({spec.spec}); set its limit there"
            )
        try:
            codec = agreeWithContext(codec, contextClass, self["context"])
        except CodecSpecError as e:
            raise usage.UsageError(f"--codec {codec.spec!r}: {e}") from None

        monitor: str | None = self["monitor"]
        if monitor is not None and monitor.strip().lower() == "none":
            monitor = None
        elif monitor is not None:
            problem = endpointProblem(reactor, monitor)
            if problem is not None:
                raise usage.UsageError(f"--monitor {monitor!r}: {problem}")

        if self["workers"].strip().lower() == "auto":
            workerCount = availableCores()
        else:
            workerCount = _number(self, "workers", int, minimum=1)
        if self["worker-sockets"] not in (None, *WORKER_SOCKET_MODES):
            raise usage.UsageError(
                f"--worker-sockets {self['worker-sockets']!r}: must be one of "
                f"{', '.join(WORKER_SOCKET_MODES)}"
            )
        workerOf = None
        if self["worker-of"] is not None:
            try:
                index, nodeOfWorker, modes = parseWorkerOf(self["worker-of"])
            except ValueError:
                raise usage.UsageError(f"--worker-of {self['worker-of']!r}: not set by a parent") from None
            workerOf = (index, nodeOfWorker, tuple(modes))
        if workerCount > 1 and workerOf is None:
            for description in self["listen"]:
                if listenerKind(description) not in ("tcp", "tcp6", "ssl", "systemd"):
                    option = self.listenOptions.get(description, "--listen")
                    raise usage.UsageError(
                        f"{option} {description!r}: worker processes share tcp, tcp6, ssl, haproxy "
                        f"and systemd listeners only"
                    )
        nodeId = None
        if self["node-id"] is not None:
            try:
                nodeId = checkNodeId(_number(self, "node-id", int, minimum=1))
            except ValueError as e:
                raise usage.UsageError(f"--node-id: {e}") from None
        if self["cluster"] is not None:
            from iocpsvc.cluster.redisurl import parseRedisURL, showURL  # only for --cluster

            try:
                parseRedisURL(self["cluster"])
            except ValueError as e:
                raise usage.UsageError(f"--cluster {showURL(self['cluster'])!r}: {e}") from None
        for option in ("allow", "deny"):
            for network in self[option]:
                try:
                    parseNetwork(network)
                except ValueError:
                    raise usage.UsageError(
                        f"--{option} {network!r}: not an IP address or CIDR network "
                        f"(e.g. 10.0.0.0/8, 192.168.1.7, 2001:db8::/32)"
                    ) from None

        self.config = ServerConfig(
            ports=tuple(self["listen"]),
            contextClass=contextClass,
            codec=codec,
            limits=self._limits(),
            shutdownTimeout=_number(self, "shutdown-timeout", parseDuration, minimum=0),
            monitor=monitor,
            statsInterval=_number(self, "stats-interval", parseDuration, minimum=0),
            monitorMaxConnections=_number(self, "monitor-max-connections", int, minimum=1),
            monitorTimeout=_number(self, "monitor-timeout", parseDuration, minimum=0.1),
            workerCount=workerCount,
            workerTimeout=_number(self, "worker-timeout", parseDuration, minimum=0),
            workerSockets=self["worker-sockets"],
            workerOf=workerOf,
            nodeId=nodeId,
            cluster=self["cluster"],
            arguments=tuple(self.rawArgs) if self.rawArgs is not None else (),
        )

    def _limits(self) -> ServerLimits:
        """The connection limits the options give."""
        maxConnections = None
        if self["max-connections"] is not None:
            maxConnections = _number(self, "max-connections", int, minimum=1)
        writeHighWater = _number(self, "write-high-water", parseSize, minimum=1)
        maxPendingWrite = None
        if self["max-pending-write"] is not None:
            maxPendingWrite = _number(self, "max-pending-write", parseSize, minimum=1)
            if maxPendingWrite < writeHighWater:
                raise usage.UsageError(
                    f"--max-pending-write {self['max-pending-write']!r}: must be at least "
                    f"--write-high-water ({self['write-high-water']})"
                )
        try:
            return ServerLimits(
                maxConnections=maxConnections,
                idleTimeout=_number(self, "idle-timeout", parseDuration, minimum=0),
                keepAlive=not self["no-keepalive"],
                writeHighWater=writeHighWater,
                maxPendingWrite=maxPendingWrite,
                maxPendingObjects=_number(self, "max-pending-objects", int, minimum=1),
                maxPendingObjectBytes=_number(self, "max-pending-object-bytes", parseSize, minimum=1),
                closeTimeout=_number(self, "close-timeout", parseDuration, minimum=0),
                proxyHeaderTimeout=_number(self, "proxy-header-timeout", parseDuration, minimum=0),
                allow=self["allow"],
                deny=self["deny"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def _number(options: Options, name: str, parse: Callable[[str], Any], minimum: float) -> Any:
    """Parse option C{name} with C{parse}; a bad or too small value is a usage error."""
    raw = options[name]
    try:
        value = parse(raw)
    except ValueError as e:
        if str(raw).strip().startswith("-"):
            raise usage.UsageError(f"--{name} {raw!r}: must be at least {minimum:g}") from None
        reason = "not a whole number" if parse is int else str(e).replace(f"{raw!r} is ", "")
        raise usage.UsageError(f"--{name} {raw!r}: {reason}") from None
    if value < minimum:
        raise usage.UsageError(f"--{name} {raw!r}: must be at least {minimum:g}")
    return value


def makeService(options: Options) -> MultiService:
    """The server the parsed C{options} describe (built by L{iocpsvc.assembly})."""
    from twisted.internet import reactor  # twistd has installed its reactor by now

    service = buildService(options.config, reactor)
    # Under twistd a listener that cannot listen is one line, not a traceback,
    # naming the option it was given with.
    names = set(options.listenOptions.values())
    _exitOnListenError(service, names.pop() if len(names) == 1 else "--listen")
    return service


def _exitOnListenError(service: Any, listenOption: str) -> None:
    if hasattr(service, "exitOnListenError"):
        service.exitOnListenError = True
        if hasattr(service, "listenOption"):
            service.listenOption = listenOption
    for child in getattr(service, "services", ()):
        _exitOnListenError(child, listenOption)
