"""
A load process's side of C{--processes P} (C{python -m iocpsvc.bench
--worker ...}, started by L{iocpsvc.bench.processes}): it runs its share of
the connections, writes its progress and result to the parent as JSON
lines on stdout, starts its warm-up when the parent writes C{go} on stdin,
and exits.  When the parent goes away, it aborts its run and exits.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.stdio import StandardIO
from twisted.python.failure import Failure

from iocpsvc.bench.load import LoadRun
from iocpsvc.bench.patterns import FramePatterns
from iocpsvc.bench.report import ProcessResult
from iocpsvc.bench.settings import LoadSettings


class ParentChannel(Protocol):
    """
    A load process's stdin/stdout, its line to the parent: JSON lines out,
    C{go} in.

    @ivar go: fires when the parent says C{go}.
    @ivar run: the run to abort if the parent goes away.
    @ivar finished: whether the result was sent (or the run aborted).
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.go: Deferred[None] = Deferred()
        self.run: LoadRun | None = None
        self.finished = False
        self.buffer = b""

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line to the parent."""
        transport: Any = self.transport
        if transport is not None:
            transport.write(json.dumps(message).encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"go\n" in self.buffer and not self.go.called:
            self.go.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.finished and self.run is not None:
            self.finished = True
            self.run.abort("the parent process went away")
        if self.reactor.running:
            self.reactor.stop()


def runChild(settings: LoadSettings, patterns: FramePatterns, connectionOffset: int) -> int:
    """
    Run this load process's share, report to the parent over stdout; return
    the exit status once the reactor has stopped.
    """
    # Imported here, not with the module: importing the reactor installs the
    # default one, and only a load process that runs uses it.
    from twisted.internet import reactor

    channel = ParentChannel(reactor)
    StandardIO(channel, reactor=reactor)
    run = LoadRun(
        reactor,
        settings,
        connectionOffset=connectionOffset,
        patterns=patterns,
        progress=lambda snapshot: channel.send({"progress": snapshot}),
        startSignal=channel.go,
    )
    channel.run = run

    def done(result: ProcessResult) -> None:
        if channel.finished:
            return
        channel.finished = True
        channel.send({"result": result.toJSON()})
        transport: Any = channel.transport
        transport.loseConnection()  # flushes, then stops the reactor

    reactor.callWhenRunning(lambda: run.start().addCallback(done))
    reactor.run()
    return 0
