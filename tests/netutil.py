"""
Real-socket helpers for the tests: echo-checking clients on 127.0.0.1 and a
twistd child process that reports where it listens.
"""

from __future__ import annotations

import os
import random
import re
import sys
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

TWISTD = "from twisted.scripts.twistd import run; run()"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EchoChecker(protocol.Protocol):
    """
    Sends C{wire} in uneven pieces over several reactor turns and fires
    C{done} with the bytes received once as many came back as were sent
    (or when the connection ends).
    """

    def __init__(self, reactor: Any, wire: bytes, seed: int) -> None:
        self.reactor = reactor
        self.wire = wire
        self.received = bytearray()
        self.done: Deferred[bytes] = Deferred()
        self._random = random.Random(seed)

    def connectionMade(self) -> None:
        self._sendSome(0)

    def _sendSome(self, position: int) -> None:
        if position >= len(self.wire) or not self.connected:
            return
        size = self._random.choice((1, 3, 7, 50, 500, 4096))
        self.transport.write(self.wire[position : position + size])  # type: ignore[union-attr]
        self.reactor.callLater(0, self._sendSome, position + size)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.wire):
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(bytes(self.received))


def servedNatively(reactor: Any) -> bool:
    """
    Whether C{reactor} serves a context factory's plain listeners on
    native transports (L{iocpsvc.native}): Twisted's asyncio reactor, as
    under C{trial --reactor=uvloop}.
    """
    return getattr(reactor, "_asyncioEventloop", None) is not None


def twistdReactorName(reactor: Any) -> str | None:
    """
    The C{twistd --reactor} name for C{reactor} when it is Twisted's
    asyncio reactor (C{uvloop} or C{asyncio}); C{None} for the default.
    """
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        return None
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def echoMany(reactor: Any, port: int, wires: list[bytes]) -> Deferred[list[bytes]]:
    """
    Open one connection per entry of C{wires} to 127.0.0.1:C{port}, all at
    once, and collect what each got back.
    """
    results = []
    for index, wire in enumerate(wires):
        checker = EchoChecker(reactor, wire, index)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30)
        connecting = endpoint.connect(protocol.Factory.forProtocol(lambda c=checker: c))  # type: ignore[misc]
        results.append(connecting.addCallback(lambda _, c=checker: c.done))
    return gatherResults(results, consumeErrors=True)


class TwistdProcess(protocol.ProcessProtocol):
    """
    A C{twistd -n iocpsvc ...} child.  C{listening} fires with the first TCP
    port it logs; C{ended} fires with the exit status when it exits.
    """

    LISTENING = re.compile(rb"listening on tcp:[^:]+:(\d+)")
    MONITOR = re.compile(rb"monitor on (http://[^/ ]+/)")

    def monitorURL(self) -> str:
        """The monitor's base URL, as the process logged it."""
        match = self.MONITOR.search(bytes(self.output))
        assert match is not None, self.output.decode(errors="replace")
        return match.group(1).decode()

    def __init__(self) -> None:
        self.output = bytearray()
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called:
            match = self.LISTENING.search(bytes(self.output))
            if match:
                self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError("twistd exited: " + self.output.decode(errors="replace")))
        self.ended.callback(reason.value)


def spawnTwistd(
    reactor: Any, workdir: str, *args: str, openFiles: int | None = None
) -> tuple[TwistdProcess, Any]:
    """
    Start C{twistd -n --pidfile= ARGS} in C{workdir}, with this checkout
    first on the path; with C{openFiles}, under that open-files limit (soft
    and hard).
    """
    process = TwistdProcess()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # The server runs on the reactor the tests run on: under trial
    # --reactor=uvloop, twistd -r uvloop (native transports).
    reactorArgs = [f"--reactor={name}"] if (name := twistdReactorName(reactor)) else []
    if "iocpsvc" in args and "--monitor" not in args:
        args = (*args, "--monitor", "none")  # no fixed port 9984 in tests
    code = TWISTD
    if openFiles is not None:
        limit = f"({openFiles}, {openFiles})"
        code = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, {limit}); {TWISTD}"
    argv = [sys.executable, "-c", code, "-n", "--pidfile=", *reactorArgs, *args]
    transport = reactor.spawnProcess(process, sys.executable, argv, env=env, path=workdir)
    return process, transport


def temporaryDirectory(testCase: Any) -> str:
    """
    A new directory removed when C{testCase} ends (unlike C{mktemp}, it is
    not created under the current directory, which pytest leaves as the
    checkout).
    """
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="iocpsvc-test-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


class RawClient(protocol.Protocol):
    """
    A client under the test's control: C{lost} fires (with the bytes it
    received) when the connection ends.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(bytes(self.received))


def connectRaw(
    reactor: Any, port: int, count: int, clientClass: Any = RawClient, source: str | None = None
) -> Deferred[list[Any]]:
    """
    Open C{count} connections to 127.0.0.1:C{port}; fire with the connected
    client protocols (those that could not connect are left out).

    @param source: the local address to connect from, another loopback
        address such as C{127.0.0.2} to tell attackers from neighbours.
    """
    from twisted.internet.endpoints import connectProtocol

    bindAddress = (source, 0) if source is not None else None
    attempts = []
    for _ in range(count):
        client = clientClass()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30, bindAddress=bindAddress)
        attempts.append(connectProtocol(endpoint, client))
    waiting: Deferred[list[Any]] = gatherResults([d.addErrback(lambda _: None) for d in attempts])  # type: ignore[assignment]
    return waiting.addCallback(lambda clients: [c for c in clients if c is not None])


def waitUntil(reactor: Any, condition: Any, timeout: float = 30.0, step: float = 0.01) -> Deferred[None]:
    """
    Fire once C{condition()} is true, polling every C{step} seconds of real
    time (for states reached over real sockets); fail after C{timeout}.
    """
    from twisted.internet.task import deferLater

    started = reactor.seconds()

    def check(_: object = None) -> Any:
        if condition():
            return None
        if reactor.seconds() - started > timeout:
            raise AssertionError(f"condition not reached within {timeout}s")
        return deferLater(reactor, step, lambda: None).addCallback(check)

    from twisted.internet.defer import maybeDeferred

    return maybeDeferred(check)


def getJSON(reactor: Any, url: str) -> Deferred[Any]:
    """GET C{url} (on loopback) and fire with its body parsed as JSON."""
    import json

    from twisted.web.client import Agent, readBody

    d = Agent(reactor).request(b"GET", url.encode())
    d.addCallback(readBody)
    return d.addCallback(json.loads)
