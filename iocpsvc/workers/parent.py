"""
The parent of C{--workers N}: it opens the listening sockets
(L{iocpsvc.workers.sockets}), starts N worker processes that serve them
(L{iocpsvc.workers.child}), restarts one that dies, stops them all
gracefully, relays cluster messages between them when there is no
C{--cluster}, asks each for its figures and keeps the totals (those of
workers that died included) that its monitor reads
(L{iocpsvc.monitor.pool}).

A worker's log lines come out of the parent as C{worker N: [source] ...}
at the worker's own level (L{iocpsvc.workers.logrelay}).

Long: it is one pool, L{WorkerPoolService}, whose sockets, processes, restarts,
polls and relay share the same per-slot state (the socket each slot
keeps across restarts, its process, its last answer and figures); the
wire of the control channel, the sockets and the log relay are modules
of their own.
"""

from __future__ import annotations

import base64
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.interfaces import IReactorSocket
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc.addresses import describeAddress
from iocpsvc.cluster import BROADCAST, nodeOfContext, unpackMessage
from iocpsvc.config import workerOfArgument
from iocpsvc.counters import FIGURES
from iocpsvc.interfaces import IWorkerPool
from iocpsvc.logs import RateLimitedLog, Reminders
from iocpsvc.machine import reactorOrGlobal
from iocpsvc.native import eventLoopOf, loopName
from iocpsvc.service import exitOneLine
from iocpsvc.transports import unsentBytes
from iocpsvc.workers.channel import ControlChannel
from iocpsvc.workers.handover import (
    CONTROL_IN,
    CONTROL_OUT,
    FIRST_LISTENER,
    RELAY_BUS_KIND,
)
from iocpsvc.workers.logrelay import WorkerLogRelay
from iocpsvc.workers.sockets import SocketOpeningReactor, defaultMode, openListeningSockets

_log = Logger(namespace="iocpsvc.workers")

_TWISTD = "from twisted.scripts.twistd import run; run()"

_REACTOR_NAMES = {
    "epollreactor": "epoll",
    "pollreactor": "poll",
    "selectreactor": "select",
    "asyncioreactor": "asyncio",
    "kqreactor": "kqueue",
}

# How the figures add up over the workers, from the one table
# (iocpsvc.counters): counters ("sum") keep a dead worker's last values, so
# that the parent's never go backwards; gauges ("live sum") count the live.
_COUNTER_KEYS = tuple(figure.key for figure in FIGURES if figure.overWorkers == "sum")
_GAUGE_KEYS = tuple(figure.key for figure in FIGURES if figure.overWorkers == "live sum")


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
    """
    The C{twistd -r} name of C{reactor}, if it has one: "uvloop" for the
    asyncio reactor on uvloop's event loop (iocpsvc's uvloop reactor), so
    that workers run on the reactor their parent does.
    """
    loop = eventLoopOf(reactor)
    if loop is not None and loopName(loop) == "uvloop":
        return "uvloop"
    return _REACTOR_NAMES.get(type(reactor).__module__.rsplit(".", 1)[-1])


class _WorkerProcess(ProcessProtocol):
    """
    One worker as its parent sees it: its process, its control channel
    and its log.
    """

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
        self.log = WorkerLogRelay(index)
        self.unresponsiveSince: float | None = None
        self.relayDropped = 0
        # When it last gave its figures, its slot's restarts before it, and
        # who waits for the answer to the figures asked of it now.
        self.answeredAt: float | None = None
        self.restarts = pool.slotRestarts.get(index, 0)
        self.pollWaiters: list[Deferred[None]] = []

    def _writeControl(self, data: bytes) -> None:
        if self.alive and self.transport is not None:
            self.transport.writeToChild(CONTROL_IN, data)

    def _unsentControl(self) -> int | None:
        pipes = getattr(self.transport, "pipes", {})
        return unsentBytes(pipes.get(CONTROL_IN))

    def connectionMade(self) -> None:
        self.alive = True
        self.pid = self.log.pid = self.transport.pid if self.transport is not None else None
        self.control.makeConnection(self.transport)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == CONTROL_OUT:
            self.control.dataReceived(data)
            return
        self.log.dataReceived(childFD, data)

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        self.log.flush()
        self.control.connectionLost(reason)
        self.pool.workerEnded(self, reason)
        self.ended.callback(None)

    def signal(self, name: str) -> None:
        if self.alive and self.transport is not None:
            try:
                self.transport.signalProcess(name)
            except ProcessExitedAlready:
                pass


@implementer(IWorkerPool)
class WorkerPoolService(MultiService):
    """
    The parent of C{count} worker processes that serve the same listening
    sockets.  Its monitor reads it as an L{IWorkerPool}
    (L{iocpsvc.monitor.pool.PoolSource}).

    @ivar workers: index -> the current L{_WorkerProcess} of each slot.
    @ivar snapshots: index -> the last stats snapshot of that worker.
    @ivar restartsTotal: workers restarted after dying.
    @ivar slotRestarts: index -> workers of that slot restarted after dying.
    @ivar generation: how many snapshots have been recorded: it changes
        whenever the figures of a worker do.
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
        self.reactor = reactor = reactorOrGlobal(reactor)
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
        self.slotRestarts: dict[int, int] = {}
        self.generation = 0
        self.relayDroppedTotal = 0
        self.startedAt = reactor.seconds()
        self.rateLimitedLog = RateLimitedLog(_log, reactor.seconds)
        self._reminders = Reminders(reactor.seconds, 60.0)
        self._retired: dict[str, Any] = {key: 0 for key in _COUNTER_KEYS}
        self._retired["closed_total"] = {}
        self._retiredCluster: dict[str, int] = {}
        self._opener: SocketOpeningReactor | None = None
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
        self._openSockets()  # before the monitor, as for one process
        super().privilegedStartService()

    # Set by twistd iocpsvc: a socket that cannot be opened is one line
    # (iocpsvc.service.exitOneLine) naming this option, not a traceback.
    exitOnListenError = False
    listenOption = "--listen"

    def _openSockets(self) -> None:
        if self._opener is not None:
            return
        try:
            self._opener = openListeningSockets(self.reactor, self.descriptions, self.mode, self.count)
        except (CannotListenError, OSError) as e:
            if not self.exitOnListenError:
                raise
            raise exitOneLine(self.listenOption, self.descriptions, e) from None
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
        return self._opener.addresses() if self._opener else []

    # -- workers -------------------------------------------------------------

    def startService(self) -> None:
        self._openSockets()
        super().startService()
        self._stopping = False
        for index in range(1, self.count + 1):
            self._spawn(index)
        self._poller = LoopingCall(self.pollTick)
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
            workerOfArgument(index, nodeId, self._opener.modes),
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
        self.slotRestarts[worker.index] = self.slotRestarts.get(worker.index, 0) + 1
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
        bus = snapshot.get("cluster") or {}
        if bus.get("kind") == RELAY_BUS_KIND:
            return  # the parent's own relay between workers, not a cluster
        for key, value in bus.items():
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

    # -- the workers' figures -------------------------------------------------

    def pollTick(self) -> None:
        """The poll of every C{pollInterval}, which does not wait for a silent worker's answer."""
        self.poll()

    def poll(self) -> Deferred[Any]:
        """
        Ask every worker for its figures (the monitor reads the last ones).
        Each worker is asked on its own and at most once at a time: one
        that does not answer within C{answerTimeout} is marked
        unresponsive without holding up the others; one unresponsive for
        C{unresponsiveTimeout} seconds (0: never) is killed, so that its
        replacement serves the connections waiting in its slot's queue.

        @return: a Deferred that fires (with C{None}, never failing) once
            every live worker has answered or missed (this question, or the
            one it was being asked already).
        """
        waiting: list[Deferred[None]] = []
        for index, worker in list(self.workers.items()):
            if not worker.alive:
                continue
            done: Deferred[None] = Deferred()
            worker.pollWaiters.append(done)
            waiting.append(done)
            if worker.polling:
                continue
            worker.polling = True
            answer = worker.control.call("stats", timeout=self.answerTimeout, clock=self.reactor)

            def answered(worker: _WorkerProcess) -> None:
                worker.polling = False
                waiters, worker.pollWaiters = worker.pollWaiters, []
                for waiter in waiters:
                    waiter.callback(None)

            def got(snapshot: dict[str, Any], index: int = index, worker: _WorkerProcess = worker) -> None:
                worker.responsive = True
                worker.unresponsiveSince = None
                if self.workers.get(index) is worker and worker.alive:
                    self.recordSnapshot(index, snapshot)
                answered(worker)

            def missed(failure: Failure, worker: _WorkerProcess = worker) -> None:
                self._missed(worker, failure)
                answered(worker)

            answer.addCallbacks(got, missed)
        return DeferredList(waiting).addCallback(lambda _: None)

    def recordSnapshot(self, index: int, snapshot: dict[str, Any]) -> None:
        """Keep the figures the worker of slot C{index} gave just now (L{IWorkerPool.recordSnapshot})."""
        worker = self.workers.get(index)
        if worker is None or not worker.alive:
            return
        worker.answeredAt = self.reactor.seconds()
        self.snapshots[index] = snapshot
        self.generation += 1

    def _missed(self, worker: _WorkerProcess, failure: Failure) -> None:
        """C{worker} did not answer the poll: mark it, and kill it after long enough."""
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

    def totals(self) -> dict[str, Any]:
        """
        The workers' figures added up (see L{IWorkerPool.totals}): the
        last answer of each worker there is, plus the counters of those
        that died.
        """
        result: dict[str, Any] = {key: self._retired[key] for key in _COUNTER_KEYS}
        closed = dict(self._retired["closed_total"])
        for key in _GAUGE_KEYS:
            result[key] = 0
        cluster: dict[str, int] = dict(self._retiredCluster)
        for index in sorted(self.workers):
            snapshot = self.snapshots.get(index, {})
            for key in _COUNTER_KEYS + _GAUGE_KEYS:
                result[key] += snapshot.get(key, 0)
            for reason, count in snapshot.get("closed_total", {}).items():
                closed[reason] = closed.get(reason, 0) + count
            bus = snapshot.get("cluster")
            # The parent's own relay between workers is not a cluster: its
            # figures are the worker_relay_* ones.
            if bus and bus.get("kind") != RELAY_BUS_KIND:
                for key, value in bus.items():
                    if key.endswith("_total") and isinstance(value, int):
                        cluster[key] = cluster.get(key, 0) + value
        result["closed_total"] = closed
        result["cluster"] = cluster
        return result

    def ask(self, op: str, **fields: Any) -> list[tuple[int, Deferred[Any]]]:
        """
        Ask every live worker C{op} (see L{IWorkerPool.ask}); an answer
        not there within C{answerTimeout} seconds fails.
        """
        return [
            (worker.index, worker.control.call(op, timeout=self.answerTimeout, clock=self.reactor, **fields))
            for worker in self.workers.values()
            if worker.alive
        ]
