"""
Worker processes: one set of listening sockets, N processes serving them,
so that a server uses every core of its machine.

::

    twistd iocpsvc --workers N          (the parent)
      | opens the listening sockets (once: a taken port fails at start)
      | serves the one monitor: totals over the workers + per-worker rows
      | restarts a worker that dies; on SIGTERM stops them all gracefully
      | relays broadcasts and sendTo between workers (without --cluster)
      |
      +-- worker 1: twistd iocpsvc ... --worker-of 1:MODE:NODE
      +-- worker 2: ...                 each accepts and serves connections

What a worker inherits::

    fd 0      unused (a pipe)          fd 3   control, parent -> worker
    fd 1, 2   its log, read by the     fd 4   control, worker -> parent
              parent and re-logged     fd 5.. the listening sockets, in
              as "worker N: ..."              --port order

How workers share the sockets (C{--worker-sockets}):

  - C{reuseport} (the default where the platform has C{SO_REUSEPORT}):
    the parent opens one listening socket per worker slot, all on the same
    address with C{SO_REUSEPORT}, and the kernel spreads new connections
    over them by a hash of their addresses.  A slot's socket outlives its
    worker, so a replacement takes over its queue.
  - C{shared}: every worker accepts from the parent's one listening
    socket; the worker whose reactor wakes first takes the connection.
    Used for sockets handed over by systemd.

Either way the workers adopt what they are given (Twisted's
C{adoptStreamPort}) and open nothing themselves.

C{benchmarks/workers.py} measures both; the performance page has the
figures that chose the default.

The control channel carries length-prefixed JSON objects (the C{length}
and C{json} codecs of this package): C{{"op": ..., "id": n, ...}}
requests, C{{"reply": n, "result": ...}} or C{{"reply": n, "error": ...}}
answers, and C{{"op": "bus", "m": BASE64}} cluster messages (see
L{iocpsvc.cluster}) with no answer.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import ProcessProtocol, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import InvalidLogLevelError, Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc.cluster import BROADCAST, TO_CONTEXT, deliver, nodeOfContext, packMessage, unpackMessage
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.codecs._base import encodedBytes
from iocpsvc.errors import (
    BadControlMessage,
    ControlCallFailed,
    ControlCallTimeout,
    ControlChannelClosed,
    ControlChannelFull,
    NoInheritedSocket,
)
from iocpsvc.interfaces import IClusterBus
from iocpsvc.logs import RateLimitedLog, Reminders
from iocpsvc.transports import unsentBytes

_log = Logger(namespace="iocpsvc.workers")

CONTROL_IN = 3
CONTROL_OUT = 4
FIRST_LISTENER = 5

SHARED = "shared"
REUSEPORT = "reuseport"
MODES = (SHARED, REUSEPORT)

# Big enough for a /connections.json answer of 1,000 rows.
_CONTROL_CODEC = parseCodecSpec("length:max=64MiB+json")

_TWISTD = "from twisted.scripts.twistd import run; run()"

_REACTOR_NAMES = {
    "epollreactor": "epoll",
    "pollreactor": "poll",
    "selectreactor": "select",
    "asyncioreactor": "asyncio",
    "kqreactor": "kqueue",
}

# Keys of a stats snapshot that only grow: a dead worker's last values stay
# in the totals, so that the parent's counters never go backwards.
_COUNTER_KEYS = (
    "accepted_total",
    "refused_total",
    "accept_errors_total",
    "received_bytes_total",
    "sent_bytes_total",
    "received_frames_total",
    "sent_frames_total",
    "decode_errors_total",
    "handler_errors_total",
    "truncated_frames_total",
    "discarded_frames_total",
    "write_blocked_total",
    "backlog_paused_total",
    "close_timeouts_total",
    "proxy_header_errors_total",
    "proxy_header_timeouts_total",
)
_GAUGE_KEYS = ("online", "pending_write_bytes", "awaiting_proxy_header")


def availableCores(root: str = "/") -> int:
    """
    The cores this process may use: its CPU affinity, and the CPU quota of
    its own cgroup if one is set (a container's, or a systemd unit's
    C{CPUQuota=}; cgroup v2 C{cpu.max} or v1 C{cpu.cfs_quota_us}), not the
    machine's count.

    @param root: where C{/proc} and C{/sys} are (for tests).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroupQuota(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroupQuota(root: str) -> float | None:
    """The CPU quota of this process's cgroup, in cores, or C{None}."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":
            # cgroup v2: "0::/path"; the limit may be on any ancestor.
            while True:
                try:
                    with open(os.path.join(root, "sys/fs/cgroup", path, "cpu.max")) as f:
                        limit, period = f.read().split()[:2]
                    if limit != "max":
                        return int(limit) / int(period)
                except (OSError, ValueError):
                    pass
                if not path:
                    return None
                path = os.path.dirname(path)
        if "cpu" in controllers.split(","):
            for mount in ("cpu,cpuacct", "cpu"):
                base = os.path.join(root, "sys/fs/cgroup", mount, path)
                try:
                    with open(os.path.join(base, "cpu.cfs_quota_us")) as f:
                        microseconds = int(f.read())
                    with open(os.path.join(base, "cpu.cfs_period_us")) as f:
                        every = int(f.read())
                except (OSError, ValueError):
                    continue
                return microseconds / every if microseconds > 0 and every > 0 else None
    return None


def defaultMode() -> str:
    """C{reuseport} where the platform has C{SO_REUSEPORT}, else C{shared}."""
    return REUSEPORT if hasattr(socket, "SO_REUSEPORT") and sys.platform.startswith("linux") else SHARED


def workersAvailable(reactor: Any) -> str | None:
    """
    C{None} if C{reactor} can run workers here, else why not (Twisted's
    IOCP reactor cannot adopt a listening socket, and Windows has no fork
    and exec of inherited sockets).
    """
    if os.name != "posix":
        return f"worker processes need a POSIX system (this is {os.name})"
    if not IReactorSocket.providedBy(reactor):
        return f"the {type(reactor).__name__} cannot adopt listening sockets"
    return None


def reactorName(reactor: Any) -> str | None:
    """The C{twistd -r} name of C{reactor}, if it has one."""
    return _REACTOR_NAMES.get(type(reactor).__module__.rsplit(".", 1)[-1])


# -- the control channel ------------------------------------------------------


class ControlChannel(Protocol):
    """
    One end of the parent/worker control channel: requests with answers
    (L{call}), messages without (L{send}), and handlers for what the other
    end asks (C{handlers[op](message)}, whose result, or Deferred, is the
    answer).

    What is written and not yet read by the other end is bounded: past
    C{maxUnsent} bytes (as C{unsent()} tells), a message is dropped and
    counted in C{droppedTotal}, and a call fails with L{ControlChannelFull}
    -- a stopped worker must not make its parent (or a worker its parent)
    buffer without end.

    A call that gets no answer fails with a
    L{iocpsvc.errors.ControlChannelError}: L{ControlChannelClosed} (or
    L{BadControlMessage}, when the other end's bytes made no sense),
    L{ControlChannelFull}, L{ControlCallTimeout}, or L{ControlCallFailed}
    when the other end answered with an error.

    @ivar onLost: called with the reason when the channel closes.
    """

    maxUnsent = 16 * 1024 * 1024

    def __init__(
        self,
        handlers: dict[str, Callable[[dict[str, Any]], Any]],
        write: Callable[[bytes], None] | None = None,
        unsent: Callable[[], int | None] | None = None,
    ) -> None:
        self.handlers = handlers
        self._write = write
        self._unsent = unsent
        self._decoder = _CONTROL_CODEC.newDecoder()
        self._encode = _CONTROL_CODEC.encoder.encode
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._waiting: dict[int, Deferred[Any]] = {}
        self.onLost: Callable[[Failure], None] | None = None
        self.lost = False
        self.droppedTotal = 0
        self._undecodable: str | None = None

    def connectionMade(self) -> None:
        if self._write is None and self.transport is not None:
            self._write = self.transport.write
        if self._unsent is None and self.transport is not None:
            transport = self.transport
            # Standard I/O keeps its writing end in a writer of its own.
            writer = getattr(transport, "_writer", transport)
            self._unsent = lambda: unsentBytes(writer)

    def _sendObject(self, message: dict[str, Any]) -> bool:
        if self.lost or self._write is None:
            return False
        if self._unsent is not None and (self._unsent() or 0) > self.maxUnsent:
            self.droppedTotal += 1
            return False
        self._write(encodedBytes(self._encode(message)))
        return True

    def send(self, op: str, **fields: Any) -> bool:
        """
        Send a message that has no answer.

        @return: whether it was sent (not dropped: closed, or too much unread).
        """
        return self._sendObject({"op": op, **fields})

    def call(self, op: str, timeout: float | None = None, clock: Any = None, **fields: Any) -> Deferred[Any]:
        """
        Ask the other end; the Deferred fires with its answer, or fails
        with a L{iocpsvc.errors.ControlChannelError} (closed, full, an
        error answered, or no answer within C{timeout} seconds of
        C{clock}).
        """
        if self.lost:
            return fail(self._closedError())
        requestId = next(self._ids)

        def forget(_: Deferred[Any]) -> None:
            # Cancelled (as the timeout does): a late answer is ignored.
            self._waiting.pop(requestId, None)

        answer: Deferred[Any] = Deferred(forget)
        self._waiting[requestId] = answer
        if not self._sendObject({"op": op, "id": requestId, **fields}):
            self._waiting.pop(requestId, None)
            return fail(ControlChannelFull(f"control channel: {op} not sent"))
        if timeout is not None and clock is not None:

            def timedOut(result: Any, timeout: float) -> Any:
                if isinstance(result, Failure) and result.check(CancelledError):
                    raise ControlCallTimeout(op, timeout)
                return result

            answer.addTimeout(timeout, clock, timedOut)
        return answer

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        try:
            used = self._decoder.decode(buffer, messages)
        except Exception as e:
            self._undecodable = str(e)
            _log.error("control channel: undecodable data ({error}); closing it", error=e)
            del buffer[:]
            if self.transport is not None:
                self.transport.loseConnection()
            return
        del buffer[:used]
        for message in messages:
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "reply" in message:
            answer = self._waiting.pop(message["reply"], None)
            if answer is None or answer.called:
                return
            if "error" in message:
                answer.errback(ControlCallFailed(message["error"]))
            else:
                answer.callback(message.get("result"))
            return
        handler = self.handlers.get(message.get("op", ""))
        requestId = message.get("id")
        if handler is None:
            if requestId is not None:
                self._sendObject({"reply": requestId, "error": f"unknown op {message.get('op')!r}"})
            return
        result = maybeDeferred(handler, message)
        if requestId is None:
            result.addErrback(lambda f: _log.failure("control handler {op} failed", f, op=message["op"]))
            return

        def answered(value: Any) -> None:
            self._sendObject({"reply": requestId, "result": value})

        def failed(failure: Failure) -> None:
            self._sendObject({"reply": requestId, "error": str(failure.value)})

        result.addCallbacks(answered, failed)

    def _closedError(self) -> ControlChannelClosed:
        """Why a call fails once the channel is closed."""
        if self._undecodable is not None:
            return BadControlMessage(f"control channel closed: undecodable data ({self._undecodable})")
        return ControlChannelClosed("control channel closed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.called:
                answer.errback(self._closedError())
        if self.onLost is not None:
            self.onLost(reason)


# -- the parent: sockets and worker processes ---------------------------------


class _ReservedPort:
    """What the parent's socket-opening reactor returns for a listener."""

    def __init__(self, sock: socket.socket) -> None:
        self.socket = sock

    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        name = self.socket.getsockname()
        if self.socket.family == socket.AF_INET:
            return IPv4Address("TCP", name[0], name[1])
        if self.socket.family == socket.AF_INET6:
            return IPv6Address("TCP", name[0], name[1])
        return UNIXAddress(name)

    def stopListening(self) -> None:
        self.socket.close()

    def startListening(self) -> None:
        pass


class _SocketOpeningReactor:
    """
    Stands for the reactor when the parent builds its endpoints from the
    C{--port} descriptions: Twisted's own endpoint parsers (C{tcp:},
    C{ssl:}, C{haproxy:}, C{systemd:} ...) call C{listenTCP} and friends,
    and this opens the listening sockets instead of accepting on them.

    @ivar listeners: per listener (in C{--port} order), the socket of each
        worker slot: the same socket for every slot in C{shared} mode, a
        socket of its own per slot in C{reuseport} mode.
    """

    def __init__(self, reactor: Any, mode: str, slots: int) -> None:
        self._reactor = reactor
        self.mode = mode
        self.slots = slots
        self.listeners: list[list[socket.socket]] = []
        self.modes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def close(self) -> None:
        for slots in self.listeners:
            for sock in set(slots):
                sock.close()

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> _ReservedPort:
        from twisted.internet.error import CannotListenError

        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        host = interface or ("::" if family == socket.AF_INET6 else "")
        opened: list[socket.socket] = []
        try:
            if self.mode == SHARED:
                opened.append(self._listen(family, (host, port), backlog, reusePort=False))
                slots = opened * self.slots
            else:
                # A port some other process listens on (even with
                # SO_REUSEPORT) must fail here, not be silently shared: a
                # plain bind tells, and picks the port when it is 0.
                probe = socket.socket(family, socket.SOCK_STREAM)
                try:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((host, port))
                    port = probe.getsockname()[1]
                finally:
                    probe.close()
                # One listening socket per worker slot, opened here (before
                # privileges drop, so low ports work) and kept across the
                # slot's restarts: a replacement worker takes over its queue.
                for _ in range(self.slots):
                    opened.append(self._listen(family, (host, port), backlog, reusePort=True))
                slots = opened
        except OSError as e:
            for sock in opened:
                sock.close()
            raise CannotListenError(interface, port, e) from None
        self.listeners.append(slots)
        self.modes.append(f"{self.mode}:{backlog}")
        return _ReservedPort(slots[0])

    @staticmethod
    def _listen(family: int, address: tuple[str, int], backlog: int, reusePort: bool) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reusePort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> _ReservedPort:
        return self.listenTCP(port, factory, backlog, interface)

    def listenUNIX(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("unix: endpoints cannot be shared by worker processes")

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> _ReservedPort:
        # Sockets from systemd are listening already: always shared.
        sock = socket.socket(addressFamily, socket.SOCK_STREAM, fileno=os.dup(fileDescriptor))
        sock.setblocking(False)
        self.listeners.append([sock] * self.slots)
        self.modes.append(f"{SHARED}:0")
        return _ReservedPort(sock)


_LOG_LINE = re.compile(rb"^(?:\d{4}-\d\d-\d\dT\S+ )?(?:\[([^\]#]*)#(\w+)\] )?(.*)$", re.S)
_LOG_TAIL_LIMIT = 64 * 1024


class _WorkerProcess(ProcessProtocol):
    """One worker as its parent sees it."""

    def __init__(self, pool: WorkerPoolService, index: int, nodeId: int) -> None:
        self.pool = pool
        self.index = index
        self.nodeId = nodeId
        self.pid: int | None = None
        self.startedAt = pool.reactor.seconds()
        self.ended: Deferred[None] = Deferred()
        self.alive = False
        self.ready = False
        self.responsive = True
        self.polling = False
        self.control = ControlChannel(pool.controlHandlers(self), self._writeControl, self._unsentControl)
        self._logTail: dict[int, bytes] = {1: b"", 2: b""}
        self._lastLevel: LogLevel | None = None
        self._lastSource = "-"
        self.unresponsiveSince: float | None = None
        self.relayDropped = 0

    def _writeControl(self, data: bytes) -> None:
        if self.alive and self.transport is not None:
            self.transport.writeToChild(CONTROL_IN, data)

    def _unsentControl(self) -> int | None:
        pipes = getattr(self.transport, "pipes", {})
        return unsentBytes(pipes.get(CONTROL_IN))

    def connectionMade(self) -> None:
        self.alive = True
        self.pid = self.transport.pid if self.transport is not None else None
        self.control.makeConnection(self.transport)
        self.control._write = self._writeControl

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == CONTROL_OUT:
            self.control.dataReceived(data)
            return
        lines = (self._logTail.get(childFD, b"") + data).split(b"\n")
        tail = lines.pop()
        if len(tail) > _LOG_TAIL_LIMIT:
            # No newline in sight: pass on what came, rather than hold it all.
            lines.append(tail)
            tail = b""
        self._logTail[childFD] = tail
        for line in lines:
            self._relayLog(line)

    def _relayLog(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line.startswith(b"\t") and self._lastLevel is not None:
            # Twisted writes the rest of a multi-line event (a traceback)
            # on lines that start with a tab: they belong to the event above.
            level, source, text = self._lastLevel, self._lastSource, line
        else:
            match = _LOG_LINE.match(line)
            if match is None:  # pragma: no cover - the pattern matches anything
                return
            namespace, levelName, text = match.groups()
            level = LogLevel.info
            if levelName:
                try:
                    level = LogLevel.levelWithName(levelName.decode("ascii"))
                except (InvalidLogLevelError, UnicodeDecodeError):
                    pass
            source = (namespace or b"-").decode("utf-8", "replace")
            self._lastLevel, self._lastSource = level, source
        if not text:
            return
        # The worker's own level, so that its warnings and errors stay
        # warnings and errors in the parent's log.
        _log.emit(
            level,
            "worker {worker}: [{source}] {line}",
            worker=self.index,
            source=source,
            line=text.decode("utf-8", "replace"),
            pid=self.pid,
        )

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        for fd, tail in self._logTail.items():
            if tail:
                self._relayLog(tail)
            self._logTail[fd] = b""
        self.control.connectionLost(reason)
        self.pool.workerEnded(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        if self.alive and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass


class WorkerPoolService(MultiService):
    """
    The parent of C{count} worker processes that serve the same listening
    sockets.

    @ivar workers: index -> the current L{_WorkerProcess} of each slot.
    @ivar snapshots: index -> the last stats snapshot of that worker.
    @ivar restartsTotal: workers restarted after dying.
    @ivar relayDroppedTotal: cluster messages between workers dropped
        because the worker they were for was not reading.
    """

    pollInterval = 1.0
    answerTimeout = 2.0
    """Seconds a worker has to answer the monitor's questions."""
    unresponsiveTimeout = 30.0
    """Seconds without an answer before a worker is killed and replaced (0: never)."""
    killAfter = 5.0
    """Seconds past the shutdown timeout before a worker is killed."""
    giveUpAfter = 5
    """Failed starts in a row, with no worker ever serving, before an error is logged."""

    def __init__(
        self,
        descriptions: list[str],
        workerArgs: list[str],
        count: int,
        reactor: Any = None,
        mode: str | None = None,
        shutdownTimeout: float = 10.0,
        nodeIdBase: int = 1,
        environment: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.reactor = reactor
        self.descriptions = descriptions
        self.workerArgs = workerArgs
        self.count = count
        self.mode = mode or defaultMode()
        self.shutdownTimeout = shutdownTimeout
        self.nodeIdBase = nodeIdBase
        self.environment = environment
        self.workers: dict[int, _WorkerProcess] = {}
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.restartsTotal = 0
        self.relayDroppedTotal = 0
        self.startedAt = reactor.seconds()
        self.peakOnline = 0
        self.rateLimitedLog = RateLimitedLog(_log, reactor.seconds)
        self._reminders = Reminders(reactor.seconds, 60.0)
        self._retired: dict[str, Any] = {key: 0 for key in _COUNTER_KEYS}
        self._retired["closed_total"] = {}
        self._retiredCluster: dict[str, int] = {}
        self._opener: _SocketOpeningReactor | None = None
        self._addressText = ""
        self._announced = False
        self._failedStarts = 0
        self._stopping = False
        self._poller: LoopingCall | None = None
        self._restartDelay: dict[int, float] = {}
        self._pendingRestarts: dict[int, Any] = {}

    # -- sockets ------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Open the listening sockets (as root, before privileges drop)."""
        super().privilegedStartService()
        self._openSockets()

    def _openSockets(self) -> None:
        if self._opener is not None:
            return
        from iocpsvc.service import describeAddress, withDefaultBacklog

        opener = _SocketOpeningReactor(self.reactor, self.mode, self.count)
        try:
            for description in self.descriptions:
                endpoint = endpoints.serverFromString(opener, withDefaultBacklog(description))
                listening = endpoint.listen(_NoFactory())
                failures: list[Failure] = []
                listening.addErrback(failures.append)
                if failures:
                    failures[0].raiseException()
        except BaseException:
            opener.close()
            raise
        self._opener = opener
        self._addressText = ", ".join(describeAddress(address) for address in self.addresses)
        _log.info(
            "iocpsvc: sockets open on {addresses}; starting {count} worker processes ({mode})",
            addresses=self._addressText,
            count=self.count,
            mode=self.mode,
        )

    @property
    def addresses(self) -> list[Any]:
        """The listening addresses (what the sockets are bound to)."""
        listeners = self._opener.listeners if self._opener else []
        return [_ReservedPort(slots[0]).getHost() for slots in listeners]

    # -- workers -------------------------------------------------------------

    def startService(self) -> None:
        self._openSockets()
        super().startService()
        self._stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)
        self._poller = LoopingCall(self.poll)
        self._poller.clock = self.reactor
        self._poller.start(self.pollInterval, now=False)

    def _spawn(self, index: int) -> None:
        self._pendingRestarts.pop(index, None)
        if self._stopping or self._opener is None:
            return
        nodeId = self.nodeIdBase + index - 1
        worker = _WorkerProcess(self, index, nodeId)
        childFDs: dict[int, Any] = {0: "w", 1: "r", 2: "r", CONTROL_IN: "w", CONTROL_OUT: "r"}
        for offset, slots in enumerate(self._opener.listeners):
            childFDs[FIRST_LISTENER + offset] = slots[index - 1].fileno()
        twistdArgs = ["-n", "--pidfile="]
        name = reactorName(self.reactor)
        if name is not None:
            twistdArgs.append(f"--reactor={name}")
        argv = [
            sys.executable,
            "-c",
            _TWISTD,
            *twistdArgs,
            "iocpsvc",
            *self.workerArgs,
            "--worker-of",
            f"{index}:{nodeId}:{','.join(self._opener.modes)}",
        ]
        environment = dict(self.environment if self.environment is not None else os.environ)
        # systemd's sockets were this process's; the workers get them as fd 5+.
        for variable in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            environment.pop(variable, None)
        try:
            self.reactor.spawnProcess(worker, sys.executable, argv, env=environment, childFDs=childFDs)
        except Exception as e:
            # Out of processes, memory or descriptors: try again later
            # rather than leave the slot empty for good.
            delay = self._nextDelay(index, lived=0.0)
            _log.error(
                "worker {worker} could not be started ({error}); trying again in {delay:.1f}s",
                worker=index,
                error=e,
                delay=delay,
            )
            self._countFailedStart()
            self._pendingRestarts[index] = self.reactor.callLater(delay, self._spawn, index)
            return
        self.workers[index] = worker
        _log.info("worker {worker} started (pid {pid})", worker=index, pid=worker.pid)

    def _nextDelay(self, index: int, lived: float) -> float:
        # A worker that dies at once would otherwise be restarted in a loop.
        delay = 0.0 if lived > 10 else min(30.0, max(0.5, self._restartDelay.get(index, 0.25) * 2))
        self._restartDelay[index] = delay
        return delay

    def workerEnded(self, worker: _WorkerProcess, reason: Failure) -> None:
        """A worker exited: keep its counters, and restart it unless stopping."""
        snapshot = self.snapshots.pop(worker.index, None)
        if snapshot is not None:
            self._retire(snapshot)
        if self.workers.get(worker.index) is not worker or self._stopping:
            return
        lived = self.reactor.seconds() - worker.startedAt
        delay = self._nextDelay(worker.index, lived)
        value = reason.value
        signalNumber = getattr(value, "signal", None)
        if signalNumber in (signal.SIGTERM, signal.SIGINT):
            how = f"was stopped (signal {signalNumber}) by something other than this parent"
        elif signalNumber is not None:
            how = f"was killed by signal {signalNumber}"
        else:
            how = f"exited with status {getattr(value, 'exitCode', '?')}"
        _log.warn(
            "worker {worker} (pid {pid}) {how} after {lived:.1f}s; its connections are lost; "
            "restarting it in {delay:.1f}s",
            worker=worker.index,
            pid=worker.pid,
            how=how,
            lived=lived,
            delay=delay,
        )
        self.restartsTotal += 1
        if not worker.ready:
            self._countFailedStart()
        self._pendingRestarts[worker.index] = self.reactor.callLater(delay, self._spawn, worker.index)

    def _countFailedStart(self) -> None:
        """A worker that never served: say so loudly once too many did."""
        self._failedStarts += 1
        if not self._announced and self._failedStarts == self.giveUpAfter:
            _log.critical(
                "no worker has started serving after {count} attempts: see the worker lines "
                "above; clients that connect wait in the listen queue; still retrying every "
                "{delay:.0f}s at most",
                count=self._failedStarts,
                delay=30.0,
            )

    def _retire(self, snapshot: dict[str, Any]) -> None:
        retired = self._retired
        for key in _COUNTER_KEYS:
            retired[key] += snapshot.get(key, 0)
        for reason, count in snapshot.get("closed_total", {}).items():
            retired["closed_total"][reason] = retired["closed_total"].get(reason, 0) + count
        for key, value in (snapshot.get("cluster") or {}).items():
            if key.endswith("_total") and isinstance(value, int):
                self._retiredCluster[key] = self._retiredCluster.get(key, 0) + value

    def stopService(self) -> Deferred[Any]:
        """
        Stop every worker gracefully (SIGTERM: each closes its connections
        within its shutdown timeout), kill those still running
        C{killAfter} seconds later, then close the sockets.
        """
        super().stopService()
        self._stopping = True
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        for call in self._pendingRestarts.values():
            if call.active():
                call.cancel()
        self._pendingRestarts.clear()
        workers = [w for w in self.workers.values() if w.alive]
        if workers:
            _log.info("stopping {count} workers (SIGTERM)", count=len(workers))
        for worker in workers:
            worker.signal("TERM")
        killer = self.reactor.callLater(self.shutdownTimeout + self.killAfter, self._killRest)
        allEnded = DeferredList([w.ended for w in workers], consumeErrors=True)

        def finished(_: object) -> None:
            if killer.active():
                killer.cancel()
            if self._opener is not None:
                self._opener.close()
                self._opener = None

        allEnded.addCallback(finished)
        return allEnded

    def _killRest(self) -> None:
        for worker in self.workers.values():
            if worker.alive:
                _log.warn(
                    "worker {worker} (pid {pid}) did not stop in time; killing it",
                    worker=worker.index,
                    pid=worker.pid,
                )
                worker.signal("KILL")

    # -- what the workers ask -------------------------------------------------

    def controlHandlers(self, worker: _WorkerProcess) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "bus": lambda message: self._relay(worker, message),
            "ready": lambda message: self._ready(worker),
        }

    def _ready(self, worker: _WorkerProcess) -> None:
        """A worker listens: once all do, say so (what scripts and tests wait for)."""
        worker.ready = True
        self._failedStarts = 0
        if self._announced:
            _log.info("worker {worker} (pid {pid}) serving", worker=worker.index, pid=worker.pid)
            return
        if not all(w.ready for w in self.workers.values()) or len(self.workers) < self.count:
            return
        self._announced = True
        _log.info(
            "iocpsvc listening on {addresses} with {count} worker processes ({mode})",
            addresses=self._addressText,
            count=self.count,
            mode=self.mode,
        )

    def _relay(self, sender: _WorkerProcess, message: dict[str, Any]) -> None:
        """Pass a worker's cluster message to the worker(s) it is for."""
        try:
            raw = base64.b64decode(message["m"], validate=True)
            kind, _origin, contextId, _payload = unpackMessage(raw)
        except (KeyError, ValueError, TypeError) as e:
            self.rateLimitedLog.warn(
                "worker {worker}: malformed cluster message ({error})", worker=sender.index, error=e
            )
            return
        if kind == BROADCAST:
            targets = [w for w in self.workers.values() if w is not sender and w.alive]
        else:
            node = nodeOfContext(contextId)
            targets = [w for w in self.workers.values() if w.nodeId == node and w.alive]
        for worker in targets:
            if not worker.control.send("bus", m=message["m"]):
                self.relayDroppedTotal += 1
                self._relayDropped(worker)

    def _relayDropped(self, worker: _WorkerProcess) -> None:
        """Count a message lost for C{worker}; warn once, then once a minute while it lasts."""
        worker.relayDropped += 1
        if not self._reminders.due(("relay-dropped", worker.index)):
            return
        _log.warn(
            "worker {worker} (pid {pid}) is not reading its control channel: {count} message(s) "
            "for its clients dropped so far",
            worker=worker.index,
            pid=worker.pid,
            count=worker.relayDropped,
        )

    # -- the monitor's figures -------------------------------------------------

    def poll(self) -> None:
        """
        Ask every worker for its figures (the monitor reads the last ones).
        Each worker is asked on its own and at most once at a time: one
        that does not answer within C{answerTimeout} is marked
        unresponsive without holding up the others; one unresponsive for
        C{unresponsiveTimeout} seconds (0: never) is killed, so that its
        replacement serves the connections waiting in its slot's queue.
        """
        for index, worker in list(self.workers.items()):
            if not worker.alive or worker.polling:
                continue
            worker.polling = True
            answer = worker.control.call("stats", timeout=self.answerTimeout, clock=self.reactor)

            def got(snapshot: dict[str, Any], index: int = index, worker: _WorkerProcess = worker) -> None:
                worker.polling = False
                worker.responsive = True
                worker.unresponsiveSince = None
                if self.workers.get(index) is worker and worker.alive:
                    self.snapshots[index] = snapshot

            def missed(failure: Failure, worker: _WorkerProcess = worker) -> None:
                worker.polling = False
                if not worker.alive:
                    return
                now = self.reactor.seconds()
                if worker.unresponsiveSince is None:
                    worker.unresponsiveSince = now - self.answerTimeout
                if worker.responsive:
                    worker.responsive = False
                    why = (
                        "no answer"
                        if failure.check(DeferredTimeoutError)
                        else failure.getErrorMessage() or type(failure.value).__name__
                    )
                    _log.warn(
                        "worker {worker} (pid {pid}) did not answer within {timeout}s ({why})",
                        worker=worker.index,
                        pid=worker.pid,
                        timeout=self.answerTimeout,
                        why=why,
                    )
                silent = now - worker.unresponsiveSince
                if self.unresponsiveTimeout and silent >= self.unresponsiveTimeout:
                    _log.error(
                        "worker {worker} (pid {pid}) has not answered for {silent:.0f}s; killing it "
                        "(its replacement serves the connections queued for it)",
                        worker=worker.index,
                        pid=worker.pid,
                        silent=silent,
                    )
                    worker.signal("KILL")

            answer.addCallbacks(got, missed)

    def collect(self) -> dict[str, Any]:
        """
        The figures of C{/stats.json}: totals over the workers (counters
        include workers that died, up to their last answer), plus a
        C{workers} row per worker.
        """
        result: dict[str, Any] = {key: self._retired[key] for key in _COUNTER_KEYS}
        closed = dict(self._retired["closed_total"])
        for key in _GAUGE_KEYS:
            result[key] = 0
        cluster: dict[str, Any] = dict(self._retiredCluster)
        clusterSeen = bool(cluster)
        connectedWorkers = claimedWorkers = pendingBytes = 0
        rows = []
        for index in sorted(self.workers):
            worker = self.workers[index]
            snapshot = self.snapshots.get(index, {})
            for key in _COUNTER_KEYS + _GAUGE_KEYS:
                result[key] += snapshot.get(key, 0)
            for reason, count in snapshot.get("closed_total", {}).items():
                closed[reason] = closed.get(reason, 0) + count
            bus = snapshot.get("cluster")
            if bus and bus.get("kind") == "workers":
                # The parent's own relay between workers, not a cluster:
                # its figures are the worker_relay_* ones.
                bus = None
            responsive = worker.alive and worker.responsive
            if bus:
                clusterSeen = True
                # A worker that does not answer is not known to be connected.
                connectedWorkers += 1 if bus.get("connected") and responsive else 0
                claimedWorkers += 1 if bus.get("node_id_claimed", True) and responsive else 0
                pendingBytes += int(bus.get("pending_bytes", 0))
                for key, value in bus.items():
                    if key.endswith("_total") and isinstance(value, int):
                        cluster[key] = cluster.get(key, 0) + value
            rows.append(
                {
                    "worker": index,
                    "pid": worker.pid,
                    "alive": worker.alive,
                    "responsive": responsive,
                    "node_id": worker.nodeId,
                    "online": snapshot.get("online", 0),
                    "accepted_total": snapshot.get("accepted_total", 0),
                    "received_frames_total": snapshot.get("received_frames_total", 0),
                    "sent_frames_total": snapshot.get("sent_frames_total", 0),
                    "received_bytes_total": snapshot.get("received_bytes_total", 0),
                    "sent_bytes_total": snapshot.get("sent_bytes_total", 0),
                    "uptime_seconds": snapshot.get("uptime_seconds", 0),
                    "cluster_connected": bool(bus and bus.get("connected")),
                    "cluster_node_id_claimed": bool(bus and bus.get("node_id_claimed", True)),
                    "cluster_pending_bytes": int(bus.get("pending_bytes", 0)) if bus else 0,
                }
            )
        self.peakOnline = max(self.peakOnline, result["online"])
        result["peak_online"] = self.peakOnline
        result["closed_total"] = closed
        result["uptime_seconds"] = round(self.reactor.seconds() - self.startedAt, 3)
        result["node_id"] = 0
        result["worker_restarts_total"] = self.restartsTotal
        result["worker_relay_dropped_total"] = self.relayDroppedTotal
        result["workers"] = rows
        if clusterSeen:
            # "connected": every worker's bus is up; "connected_workers" says how many are.
            cluster["connected"] = connectedWorkers == len(rows) and bool(rows)
            cluster["connected_workers"] = connectedWorkers
            # Another node holding a worker's id would take its messages.
            cluster["node_id_claimed"] = claimedWorkers == len(rows) and bool(rows)
            cluster["node_ids_claimed"] = claimedWorkers
            cluster["pending_bytes"] = pendingBytes
            result["cluster"] = cluster
        return result

    def connections(self, sort: str, limit: int, descending: bool | None) -> Deferred[dict[str, Any]]:
        """
        C{/connections.json} over every worker: each one's top rows,
        merged; workers that do not answer within C{answerTimeout} are
        listed in C{unanswered}.
        """
        from iocpsvc.monitor.stats import SORT_KEYS, connectionSortKey

        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
        live = [w for w in self.workers.values() if w.alive]
        asked = [
            w.control.call(
                "connections",
                timeout=self.answerTimeout,
                clock=self.reactor,
                sort=sort,
                limit=limit,
                descending=descending,
            )
            for w in live
        ]

        def merge(answers: list[tuple[bool, Any]]) -> dict[str, Any]:
            rows = []
            online = 0
            unanswered = []
            chosenOrder = "desc" if descending else "asc"
            for worker, (ok, answer) in zip(live, answers, strict=True):
                if not ok or not isinstance(answer, dict):
                    unanswered.append(worker.index)
                    continue
                online += answer.get("online", 0)
                chosenOrder = answer.get("order", chosenOrder)
                for row in answer.get("connections", []):
                    rows.append(dict(row, worker=worker.index))
            pick = heapq.nlargest if chosenOrder == "desc" else heapq.nsmallest
            return {
                "online": online,
                "sort": sort,
                "order": chosenOrder,
                "limit": limit,
                "unanswered": unanswered,
                "connections": pick(limit, rows, key=connectionSortKey(sort)),
            }

        return DeferredList(asked, consumeErrors=True).addCallback(merge)


class _NoFactory:
    """The factory the parent's endpoints are given: it never accepts."""

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


# -- the worker: adopt the parent's sockets, answer on the control channel ------


class SocketAdoptingReactor:
    """
    Stands for the reactor when a worker builds its endpoints from the same
    C{--port} descriptions as its parent: each C{listenTCP} / C{listenSSL}
    / C{adoptStreamPort} takes the next inherited socket instead of
    opening one, so Twisted's endpoint parsers and wrappers (C{ssl:},
    C{haproxy:}) work unchanged.
    """

    def __init__(self, reactor: Any, modes: list[str], firstDescriptor: int = FIRST_LISTENER) -> None:
        self._reactor = reactor
        self._modes = list(modes)
        self._next = firstDescriptor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _take(self) -> int:
        if not self._modes:
            raise NoInheritedSocket("more listeners than sockets handed over by the parent")
        self._modes.pop(0)
        fd = self._next
        self._next += 1
        return fd

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        # The parent opened it listening (this worker slot's own socket in
        # reuseport mode, the one shared socket otherwise).
        inherited = socket.socket(fileno=self._take())
        try:
            return self._reactor.adoptStreamPort(inherited.fileno(), inherited.family, factory)
        finally:
            inherited.close()  # adoptStreamPort keeps its own copy

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> Any:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        # What the reactor's own listenSSL does: TLS in memory over TCP.
        return self.listenTCP(port, TLSMemoryBIOFactory(contextFactory, False, factory), backlog, interface)

    def adoptStreamPort(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> Any:
        fd = self._take()
        # (AdoptedStreamServerEndpoint closes the descriptor it gave.)
        return self._reactor.adoptStreamPort(fd, addressFamily, factory)


@implementer(IClusterBus)
class ParentBus:
    """
    The cluster bus of workers without C{--cluster}: broadcasts and
    C{sendTo} for other workers go through the parent, which passes them
    on (see L{iocpsvc.cluster} for the message format).
    """

    def __init__(self, nodeId: int) -> None:
        self.nodeId = nodeId
        self.channel: ControlChannel | None = None
        self.receiver: Any = None
        self.publishedTotal = 0
        self.receivedTotal = 0
        self.droppedTotal = 0

    @property
    def connected(self) -> bool:
        return self.channel is not None and not self.channel.lost

    def start(self, receiver: Any) -> None:
        self.receiver = receiver

    def stop(self) -> None:
        self.receiver = None

    def _publish(self, message: bytes) -> None:
        channel = self.channel
        if (
            channel is None
            or channel.lost
            or not channel.send("bus", m=base64.b64encode(message).decode("ascii"))
        ):
            # Closed, or the parent is not reading: drop rather than buffer.
            self.droppedTotal += 1
            return
        self.publishedTotal += 1

    def publishBroadcast(self, payload: bytes, excludeContextId: int) -> None:
        self._publish(packMessage(BROADCAST, self.nodeId, excludeContextId, payload))

    def publishTo(self, contextId: int, payload: bytes) -> None:
        self._publish(packMessage(TO_CONTEXT, self.nodeId, contextId, payload))

    def received(self, message: dict[str, Any]) -> None:
        """A message the parent passed on."""
        if self.receiver is None:
            return
        self.receivedTotal += 1
        deliver(self.receiver, self.nodeId, base64.b64decode(message["m"]))

    def stats(self) -> dict[str, object]:
        return {
            "kind": "workers",
            "connected": self.connected,
            "node_id": self.nodeId,
            "published_total": self.publishedTotal,
            "received_total": self.receivedTotal,
            "dropped_total": self.droppedTotal,
        }


class WorkerControlService(Service):
    """
    A worker's end of the control channel: answers the parent's questions
    (its figures, its connections), carries the L{ParentBus}, and stops
    the worker when the parent goes away.
    """

    def __init__(self, factory: Any, reactor: Any, index: int, bus: ParentBus | None) -> None:
        self.factory = factory
        self.reactor = reactor
        self.index = index
        self.bus = bus
        self.channel: ControlChannel | None = None

    def startService(self) -> None:
        super().startService()
        from twisted.internet.stdio import StandardIO

        from iocpsvc.monitor.stats import FactorySource

        # The parent asks what its own monitor would read in one process.
        source = FactorySource(self.factory)
        handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "stats": lambda message: source.collect(),
            "connections": lambda message: source.connections(
                message.get("sort", "id"), int(message.get("limit", 100)), message.get("descending")
            ),
        }
        if self.bus is not None:
            handlers["bus"] = self.bus.received
        self.channel = ControlChannel(handlers)
        self.channel.onLost = self._parentGone
        if self.bus is not None:
            self.bus.channel = self.channel
        StandardIO(self.channel, stdin=CONTROL_IN, stdout=CONTROL_OUT, reactor=self.reactor)  # type: ignore[call-arg]
        # The sockets were adopted when the server service started (before
        # this child service): this worker accepts from now on.
        self.channel.send("ready")

    def _parentGone(self, reason: Failure) -> None:
        if not self.running:
            return
        _log.warn("worker {worker}: the parent process is gone; stopping", worker=self.index)
        self.reactor.stop()

    def stopService(self) -> Any:
        super().stopService()
        if self.channel is not None and self.channel.transport is not None:
            self.channel.onLost = None
            self.channel.transport.loseConnection()
        return succeed(None)


def adoptedEndpoint(reactor: Any, description: str, position: int) -> Any:
    """
    A worker's endpoint for the C{systemd:} description at C{position} in
    C{--port} order: the parent adopted systemd's socket and handed it down
    as descriptor C{FIRST_LISTENER + position}.
    """
    fields = dict(field.split("=", 1) for field in description.split(":")[1:] if "=" in field)
    family = getattr(socket, "AF_" + fields.get("domain", "INET"))
    return endpoints.AdoptedStreamServerEndpoint(reactor, FIRST_LISTENER + position, family)


def parseWorkerOf(value: str) -> tuple[int, int, list[str]]:
    """C{INDEX:NODE:MODE:BACKLOG,...} (what the parent passes) as its parts."""
    index, nodeId, modes = value.split(":", 2)
    return int(index), int(nodeId), [m for m in modes.split(",") if m]
