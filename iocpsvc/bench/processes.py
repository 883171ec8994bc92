"""
The parent's side of C{--processes P}: it starts P load processes (C{python
-m iocpsvc.bench --worker ...}, whose side is L{iocpsvc.bench.child}), each
with its share of the connections, and merges their results.

A load process writes one JSON object per line to its stdout -- its
C{progress} every second (whose phase says when it has connected), and its
C{result} with the latency histogram -- and starts its warm-up when the
parent writes C{go} (once every load process has connected), so their
measured windows line up.

These are the load tool's own processes, not the server's worker
processes (L{iocpsvc.workers}); the hidden C{--worker} option and the
C{worker} error kind keep their old names for compatibility.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from iocpsvc.bench.load import cpuSeconds
from iocpsvc.bench.report import WORKER, ProcessResult, makeReport
from iocpsvc.bench.settings import LoadSettings

# Extra time a parent gives its load processes (interpreter start, imports)
# beyond the run's own deadlines before killing them.
_CHILD_SLACK = 30.0


class LoadProcess(protocol.ProcessProtocol):
    """
    The parent's end of one load process: reads its JSON lines.

    @ivar number: its number, from 0.
    @ivar connections: its share of the connections.
    @ivar connected: whether it has connected (or ended).
    @ivar latest: its latest progress figures, if any.
    @ivar result: its result, once it has sent it.
    @ivar ended: whether it has exited.
    """

    def __init__(self, pool: LoadProcessPool, number: int, connections: int) -> None:
        self.pool = pool
        self.number = number
        self.connections = connections
        self.buffer = b""
        self.errorOutput = b""
        self.connected = False
        self.latest: dict[str, Any] | None = None
        self.result: ProcessResult | None = None
        self.ended = False

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        """One line from the load process: a JSON message, or anything else to pass on to stderr."""
        try:
            message = json.loads(line)
        except ValueError:
            sys.stderr.write(f"worker {self.number}: {line.decode(errors='replace')}\n")
            return
        if "progress" in message:
            self.latest = message["progress"]
            if self.latest is not None and self.latest.get("phase") != "connecting":
                self.connected = True
                self.pool.childConnected()
        elif "result" in message:
            self.result = ProcessResult.fromJSON(message["result"])

    def errReceived(self, data: bytes) -> None:
        self.errorOutput = (self.errorOutput + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        self.ended = True
        self.connected = True
        self.pool.childEnded(self, reason)


class LoadProcessPool:
    """The parent of C{--processes P}: starts the load processes, merges their results."""

    def __init__(
        self,
        reactor: Any,
        settings: LoadSettings,
        processes: int,
        progress: Callable[[dict[str, Any]], None] | None,
    ) -> None:
        self.reactor = reactor
        self.settings = settings
        self.progress = progress
        share, extra = divmod(settings.connections, processes)
        self.children: list[LoadProcess] = []
        self.transports: list[Any] = []
        self._shares = [share + (1 if number < extra else 0) for number in range(processes)]
        self._goSent = False
        self._done: Deferred[list[ProcessResult]] = Deferred()
        self._started = 0.0
        self._ticker: LoopingCall | None = None
        self._deadline: Any = None

    def childArguments(self, offset: int, connections: int) -> list[str]:
        """The command line of a load process with C{connections} connections from C{offset}."""
        s = self.settings
        options = {
            "--host": s.host,
            "--port": s.port,
            "--connections": connections,
            "--connection-offset": offset,
            "--total-connections": s.connections,
            "--in-flight": s.inFlight,
            "--size": s.size,
            "--codec": s.codec,
            "--duration": repr(s.duration),
            "--warmup": repr(s.warmup),
            "--drain-timeout": repr(s.drainTimeout),
            "--connect-timeout": repr(s.connectTimeout),
            # The server's backlog is shared: the batch is split between load processes.
            "--connect-batch": max(1, s.connectBatch // len(self._shares)),
            "--progress-interval": repr(s.progressInterval),
        }
        argv = [sys.executable, "-m", "iocpsvc.bench", "--worker"]
        for name, value in options.items():
            argv += [name, str(value)]
        return argv

    def childEnvironment(self) -> dict[str, str]:
        """
        The environment of a load process: this one's, with the directory
        that holds this copy of iocpsvc first on C{PYTHONPATH}, so the
        children run the same code as the parent.
        """
        # This file is ROOT/iocpsvc/bench/processes.py.
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        return env

    def start(self) -> Deferred[list[ProcessResult]]:
        """Start every load process; fire with their results once all have ended."""
        self._started = time.perf_counter()
        env = self.childEnvironment()
        offset = 0
        for number, connections in enumerate(self._shares):
            child = LoadProcess(self, number, connections)
            self.children.append(child)
            argv = self.childArguments(offset, connections)
            self.transports.append(self.reactor.spawnProcess(child, sys.executable, argv, env=env))
            offset += connections
        self._deadline = self.reactor.callLater(self.settings.deadline() + _CHILD_SLACK, self._kill)
        if self.progress is not None:
            self._ticker = LoopingCall(self._report)
            self._ticker.clock = self.reactor
            self._ticker.start(self.settings.progressInterval, now=False)
        return self._done

    def childConnected(self) -> None:
        """A load process has connected: once all have, tell them all to start."""
        if self._goSent or not all(c.connected for c in self.children):
            return
        self._goSent = True
        for child, transport in zip(self.children, self.transports, strict=True):
            if not child.ended:
                transport.write(b"go\n")

    def childEnded(self, child: LoadProcess, reason: Failure) -> None:
        """A load process exited; when all have, fire with the results."""
        self.childConnected()
        if child.result is None:
            tail = child.errorOutput.decode(errors="replace").strip().splitlines()[-3:]
            child.result = ProcessResult(connections=child.connections)
            child.result.addError(
                WORKER,
                f"worker {child.number} ended without a result ({reason.getErrorMessage()})"
                + (": " + " | ".join(tail) if tail else ""),
            )
        if all(c.ended for c in self.children) and not self._done.called:
            if self._deadline.active():
                self._deadline.cancel()
            if self._ticker is not None and self._ticker.running:
                self._ticker.stop()
            self._done.callback([c.result for c in self.children if c.result is not None])

    def _kill(self) -> None:
        for child, transport in zip(self.children, self.transports, strict=True):
            if not child.ended:
                try:
                    transport.signalProcess("KILL")
                except Exception:
                    pass  # it has just exited

    def _report(self) -> None:
        phases = [c.latest["phase"] for c in self.children if c.latest is not None]
        order = ["connecting", "connected", "waiting", "warm-up", "measuring", "draining", "closing", "done"]
        phase = min(phases, key=order.index) if len(phases) == len(self.children) else "starting"
        latest = [c.latest for c in self.children if c.latest is not None]
        assert self.progress is not None
        self.progress(
            {
                "phase": phase,
                "elapsed": time.perf_counter() - self._started,
                "connected": sum(p["connected"] for p in latest),
                "connections": self.settings.connections,
                "frames": sum(p["frames"] for p in latest),
                "errors": sum(p["errors"] for p in latest),
            }
        )


def runProcesses(
    reactor: Any,
    settings: LoadSettings,
    processes: int,
    progress: Callable[[dict[str, Any]], None] | None = None,
    wireSize: int | None = None,
) -> Deferred[dict[str, Any]]:
    """
    Run a load test in C{processes} load processes (each with its share of
    the connections); fire with the merged report.  The report's CPU time
    includes this process's own.
    """
    processes = max(1, min(processes, settings.connections))
    pool = LoadProcessPool(reactor, settings, processes, progress)
    cpuStarted = cpuSeconds()
    d = pool.start()
    return d.addCallback(
        lambda results: makeReport(
            settings, results, processes, extraCpuSeconds=cpuSeconds() - cpuStarted, wireSize=wireSize
        )
    )
