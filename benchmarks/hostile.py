"""
Each hostile-client attack against a fresh iocpsvc server process, with 20
well-behaved echo clients beside it; reports what the server did (its close
counters, the monitor's own counters, what it wrote to its log and its
temporary directory) and the peak memory it reached (VmHWM from /proc).
Loopback only; every loop is bounded.

    python -m benchmarks.hostile                       # all attacks, Markdown
    python -m benchmarks.hostile --rst docs/hostile-results.rst
    python -m benchmarks.hostile --attack slowloris --scale 2

The server child is this module run with C{--serve [--open-files N]
[--reactor NAME] OPTIONS...} (the same options as C{twistd iocpsvc}; NAME
as C{twistd -r NAME}, e.g. uvloop); it prints C{REACTOR ...} and C{PORT n}
once listening, and on SIGTERM it stops gracefully and prints its counters
as one JSON line.  The monitor-flood
attack also runs C{--flood URL RATE SECONDS} children that send paced
requests from their own processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from iocpsvc.apps import EchoContext
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.machine import raiseOpenFilesLimit

GOOD = 20
SERVE = [sys.executable, "-m", "benchmarks.hostile", "--serve"]


class Booby(EchoContext):
    """Echoes, but raises on the payload b"boom" (the handler-error attack)."""

    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        if obj == b"boom":
            raise RuntimeError("handler bug")
        self.writeObject(obj)


class HookBomb(EchoContext):
    """
    Echoes, but its connectionLost always raises, and its connectionMade
    raises for peers on C{ATTACKER_HOST} (the failing-hooks attack; the
    neighbours connect from 127.0.0.1 and are echoed).
    """

    __slots__ = ()

    def connectionMade(self) -> None:
        if getattr(self.peer, "host", None) == ATTACKER_HOST:
            raise RuntimeError("connectionMade bug")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        raise RuntimeError("connectionLost bug")


ATTACKER_HOST = "127.0.0.2"
"""
The loopback address attacks that must be told apart from the neighbours
connect from (all of 127.0.0.0/8 is loopback).
"""


# -- the server child ----------------------------------------------------------


def vmhwmKiB(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def directoryBytes(path: str) -> int:
    """The bytes of every file under C{path} (a server's temporary directory)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                total += os.path.getsize(os.path.join(folder, name))
            except OSError:
                pass
    return total


def serveOptions(argv: list[str]) -> tuple[int | None, str | None, list[str]]:
    """
    The server child's own leading options, in any order: C{--open-files N}
    and C{--reactor NAME}; then the C{twistd iocpsvc} options.

    @return: C{(open files or None, reactor name or None, the rest)}.
    """
    openFiles: int | None = None
    reactorName: str | None = None
    while argv[:1] in (["--open-files"], ["--reactor"]):
        if len(argv) < 2:
            raise SystemExit(f"{argv[0]} needs a value")
        if argv[0] == "--open-files":
            openFiles = int(argv[1])
        else:
            reactorName = argv[1]
        argv = argv[2:]
    return openFiles, reactorName, argv


def installReactor(name: str) -> None:
    """Install the reactor C{twistd -r NAME} would (uvloop's is iocpsvc's own plugin)."""
    from twisted.application.reactors import installReactor as install

    install(name)


def describeReactor(reactor: Any) -> str:
    """The reactor's module, and its asyncio event loop's module when it has one."""
    name = type(reactor).__module__
    loop = getattr(reactor, "_asyncioEventloop", None)
    return f"{name} ({type(loop).__module__})" if loop is not None else name


def serve(argv: list[str]) -> None:
    openFiles, reactorName, argv = serveOptions(argv)
    if openFiles is not None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (openFiles, openFiles))
    if reactorName is not None:  # before anything imports the global reactor
        installReactor(reactorName)
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from iocpsvc.tap import Options, makeService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    options = Options()
    options.parseOptions(argv)
    service = makeService(options)
    service.startService()
    monitors: list[Any] = []
    if options.config.monitor is not None:  # twisted.web only when it serves (peak memory is measured)
        from iocpsvc.monitor import MonitorService

        monitors = [child for child in service if isinstance(child, MonitorService)]
    if monitors:  # before PORT, which the driver waits for
        print("MONITOR", monitors[0].port.getHost().port, flush=True)
    print("REACTOR", describeReactor(reactor), flush=True)
    print("PORT", service.ports[0].getHost().port, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    def report() -> None:
        f = service.factory
        counters = {
            "closed": {k: v for k, v in f.counters.closedTotal.items() if v},
            "refused": f.counters.refusedTotal,
            "accepted": f.counters.acceptedTotal,
            "acceptErrors": f.counters.acceptErrors,
            "peakOnline": f.counters.peakOnline,
            "decodeErrors": f.counters.decodeErrors,
            "handlerErrors": f.counters.handlerErrors,
            "truncatedFrames": f.counters.truncatedFrames,
            "vmhwmKiB": vmhwmKiB(),
            "tmpBytes": directoryBytes(os.environ.get("TMPDIR", "/nonexistent")),
        }
        if monitors:
            counters["monitor"] = monitors[0].site.figures()
        print("STATS", json.dumps(counters), flush=True)

    reactor.addSystemEventTrigger("after", "shutdown", report)
    reactor.run()  # type: ignore[attr-defined]


# -- the driver ------------------------------------------------------------------


class ServerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = b""
        self.port: defer.Deferred[int] = defer.Deferred()
        self.monitorPort: int | None = None
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.endedAt = 0.0
        self.pid = 0

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.port.called and b"\n" in self.out:
            lines = bytes(self.out).split(b"\n")[:-1]  # whole lines only
            for line in lines:
                if line.startswith(b"MONITOR "):
                    self.monitorPort = int(line.split()[1])
            for line in lines:
                if line.startswith(b"PORT "):
                    self.port.callback(int(line.split()[1]))
                    break

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        from twisted.internet import reactor

        self.endedAt = reactor.seconds()
        if not self.port.called:
            self.port.errback(RuntimeError(self.err.decode(errors="replace")[-2000:]))
        self.ended.callback(reason.value)

    def stats(self) -> dict[str, Any]:
        for line in bytes(self.out).splitlines():
            if line.startswith(b"STATS "):
                return json.loads(line[6:])  # type: ignore[no-any-return]
        return {}


class Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.expect = 0
        self.done: defer.Deferred[bytes] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.done is not None and len(self.received) >= self.expect:
            done, self.done = self.done, None
            done.callback(bytes(self.received))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done is not None:
            done, self.done = self.done, None
            done.callback(bytes(self.received))
        self.lost.callback(None)


def connectMany(
    reactor: Any, port: int, count: int, source: str | None = None
) -> defer.Deferred[list[Client]]:
    bindAddress = (source, 0) if source is not None else None
    attempts = []
    for _ in range(count):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30, bindAddress=bindAddress)
        attempts.append(connectProtocol(endpoint, Client()).addErrback(lambda _: None))
    gathered: defer.Deferred[list[Any]] = defer.gatherResults(attempts)
    return gathered.addCallback(lambda cs: [c for c in cs if c is not None])


def encode(spec: str, payloads: list[Any]) -> bytes:
    encoder = parseCodecSpec(spec).encoder
    out = []
    for p in payloads:
        e = encoder.encode(p)
        out.append(e if isinstance(e, bytes) else b"".join(e))
    return b"".join(out)


def goodPayload(spec: str, rng: random.Random) -> Any:
    """A payload the neighbours send with C{spec}, whose echo is byte-exact."""
    if spec.endswith("+json"):
        return "".join(rng.choice("abcdefgh ij") for _ in range(rng.randrange(1, 400)))
    if spec.endswith("+text"):
        return "".join(rng.choice("abcdé ïj€") for _ in range(rng.randrange(1, 400)))
    if spec.startswith("line"):
        return rng.randbytes(rng.randrange(1, 2000)).replace(b"\n", b"").replace(b"\r", b"") or b"x"
    return rng.randbytes(rng.randrange(1, 2000))


@defer.inlineCallbacks
def goodClients(
    reactor: Any, port: int, spec: str, seed: int, prefix: bytes = b""
) -> Generator[Any, Any, int]:
    """
    20 echo clients (each first sending C{prefix}, a PROXY header say);
    returns how many got their bytes back exactly.
    """
    rng = random.Random(seed)
    wires = [encode(spec, [goodPayload(spec, rng) for _ in range(6)]) for _ in range(GOOD)]
    clients = yield connectMany(reactor, port, GOOD)
    waiting = []
    for client, wire in zip(clients, wires, strict=False):
        client.expect = len(wire)
        client.done = defer.Deferred()
        waiting.append(client.done)
        client.transport.write(prefix + wire)  # type: ignore[union-attr]
    results = yield defer.gatherResults(waiting)
    for client in clients:
        client.transport.loseConnection()  # type: ignore[union-attr]
    yield defer.gatherResults([c.lost for c in clients])
    return sum(r == w for r, w in zip(results, wires, strict=False))


def pause(reactor: Any, seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def closeAll(clients: list[Client]) -> defer.Deferred[Any]:
    for c in clients:
        if c.transport is not None and c.transport.connected:  # type: ignore[attr-defined]
            c.transport.abortConnection()  # type: ignore[attr-defined]
    return defer.gatherResults([c.lost for c in clients])


@dataclass
class Target:
    """The server under attack: its echo port, monitor port and process."""

    port: int
    monitorPort: int | None
    process: ServerProcess


# An attack: run(reactor, target, n) -> a Deferred firing with notes for the
# table (a dict of words -> figures), or None.
Run = Callable[[Any, Target, int], Any]


@dataclass
class Attack:
    description: str
    run: Run
    count: int
    options: list[str] = field(default_factory=list)
    spec: str = "length"  # the neighbours' codec
    prefix: bytes = b""  # what each neighbour sends first
    openFiles: int | None = None  # the server's open-files limit


@defer.inlineCallbacks
def hugeHeader(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 2**31) + b"\0" * 64)  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def garbage(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    rng = random.Random(1)
    for a in attackers:
        a.transport.write(rng.randbytes(4096))  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def slowloris(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 1000) + b"half")  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])  # the idle timeout (3 s) clears them


@defer.inlineCallbacks
def neverRead(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    payload = b"r" * 60_000
    frame = struct.pack(">I", len(payload)) + payload
    for a in attackers:
        a.transport.pauseProducing()  # type: ignore[union-attr]
        for _ in range(100):
            a.transport.write(frame)  # type: ignore[union-attr]
    yield pause(reactor, 3)
    yield closeAll(attackers)


@defer.inlineCallbacks
def burst(reactor: Any, target: Target, n: int) -> Any:
    holders = yield connectMany(reactor, target.port, 1000)
    yield pause(reactor, 0.5)
    attackers = yield connectMany(reactor, target.port, n)
    yield pause(reactor, 1)
    yield closeAll(attackers)
    yield closeAll(holders)


@defer.inlineCallbacks
def resetMidFrame(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 500) + b"x" * 100)  # type: ignore[union-attr]
    yield pause(reactor, 0.5)
    yield closeAll(attackers)


@defer.inlineCallbacks
def handlerErrors(reactor: Any, target: Target, n: int) -> Any:
    attackers = yield connectMany(reactor, target.port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 4) + b"boom")  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def baseline(reactor: Any, target: Target, n: int) -> Any:
    yield None


# -- attacks on the monitor ---------------------------------------------------------


@defer.inlineCallbacks
def httpGet(reactor: Any, port: int, path: str) -> Generator[Any, Any, bytes]:
    """One GET on a fresh connection; fires with the whole response."""
    [client] = yield connectMany(reactor, port, 1) or [None]
    client.transport.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    yield client.lost
    return bytes(client.received)


@defer.inlineCallbacks
def monitorSlowloris(reactor: Any, target: Target, n: int) -> Any:
    """n connections to the monitor, each sending a header line every 2 s."""
    assert target.monitorPort is not None
    attackers = yield connectMany(reactor, target.monitorPort, n)
    for a in attackers:
        a.transport.write(b"GET /stats.json HTTP/1.1\r\n")  # type: ignore[union-attr]
    started = reactor.seconds()
    while reactor.seconds() - started < 14 and not all(a.lost.called for a in attackers):
        yield pause(reactor, 2)
        for index, a in enumerate(attackers):
            if not a.lost.called:
                a.transport.write(b"X-Slow-%d: still here\r\n" % index)  # type: ignore[union-attr]
    open_ = sum(not a.lost.called for a in attackers)
    yield closeAll(attackers)
    answer = yield httpGet(reactor, target.monitorPort, "/stats.json")
    return {"still open after 14 s": open_, "a scrape after": answer[9:12].decode() or "none"}


@defer.inlineCallbacks
def postBody(reactor: Any, target: Target, n: int) -> Any:
    """n POSTs declaring 300 MB bodies, each sending 8 MB of it."""
    assert target.monitorPort is not None
    attackers = yield connectMany(reactor, target.monitorPort, n)
    chunk = b"b" * 65536
    for a in attackers:
        a.transport.write(  # type: ignore[union-attr]
            b"POST /stats.json HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
        )
        for _ in range(128):
            a.transport.write(chunk)  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])
    answered = sum(bytes(a.received).startswith(b"HTTP/1.1 405") for a in attackers)
    return {"answered 405": answered}


def latencyPercentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    if not ordered:
        return (0.0, 0.0)
    return (
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] * 1000,
    )


class PingClient(Client):
    """Request/response echo, one frame in flight, recording each round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[float] = []
        self.frame = struct.pack(">I", 64) + b"p" * 64
        self.sentAt = 0.0
        self.running = False

    def ping(self) -> None:
        self.received = bytearray()
        self.sentAt = time.perf_counter()
        self.transport.write(self.frame)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= len(self.frame):
            self.samples.append(time.perf_counter() - self.sentAt)
            if self.running:
                self.ping()


@defer.inlineCallbacks
def measureLatency(reactor: Any, pingers: list[PingClient], seconds: float) -> Any:
    for p in pingers:
        p.samples = []
        p.running = True
        p.ping()
    yield pause(reactor, seconds)
    for p in pingers:
        p.running = False
    yield pause(reactor, 0.2)
    return [s for p in pingers for s in p.samples]


def processCPU(pid: int) -> float:
    """Seconds of CPU C{pid} has used (user + system)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


FLOOD_PROCESSES = 2
FLOOD_SECONDS = 6.0


@defer.inlineCallbacks
def monitorFlood(reactor: Any, target: Target, n: int) -> Any:
    """
    n connections held open; 20 request/response neighbours measured for a
    while without, then with, 1,000 requests a second on /stats.json from
    other processes.
    """
    assert target.monitorPort is not None
    held = yield connectMany(reactor, target.port, n)
    pingers = [PingClient() for _ in range(GOOD)]
    for pinger in pingers:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", target.port)
        yield connectProtocol(endpoint, pinger)
    yield measureLatency(reactor, pingers, 1.0)  # warm up
    cpu = processCPU(target.process.pid)
    quiet = yield measureLatency(reactor, pingers, FLOOD_SECONDS)
    quietCPU = processCPU(target.process.pid) - cpu
    flooders = []
    url = f"http://127.0.0.1:{target.monitorPort}/stats.json"
    for _ in range(FLOOD_PROCESSES):
        flooder = FloodProcess()
        argv = [sys.executable, "-m", "benchmarks.hostile", "--flood", url, str(1000 // FLOOD_PROCESSES)]
        argv.append(str(FLOOD_SECONDS + 1))
        reactor.spawnProcess(flooder, sys.executable, argv, env=serverEnvironment())
        flooders.append(flooder)
    yield pause(reactor, 0.5)
    cpu = processCPU(target.process.pid)
    flooded = yield measureLatency(reactor, pingers, FLOOD_SECONDS)
    floodCPU = processCPU(target.process.pid) - cpu
    yield defer.gatherResults([f.ended for f in flooders])
    sent = sum(int(f.out.split()[-1]) if f.out.strip() else 0 for f in flooders)
    for pinger in pingers:
        pinger.transport.loseConnection()  # type: ignore[union-attr]
    yield closeAll(held)
    quiet50, quiet99 = latencyPercentiles(quiet)
    flood50, flood99 = latencyPercentiles(flooded)
    return {
        "flood offered/served requests/s": f"1,000/{round(sent / (FLOOD_SECONDS + 1))}",
        "neighbours' p50 ms quiet/flood": f"{quiet50:.3f}/{flood50:.3f}",
        "p99 ms quiet/flood": f"{quiet99:.3f}/{flood99:.3f}",
        "p99 ratio": f"{flood99 / quiet99:.2f}" if quiet99 else "-",
        "server CPU % quiet/flood": f"{100 * quietCPU / FLOOD_SECONDS:.0f}/"
        f"{100 * floodCPU / FLOOD_SECONDS:.0f}",
    }


class FloodProcess(protocol.ProcessProtocol):
    """A C{--flood} child: C{out} is what it printed (how many were answered)."""

    def __init__(self) -> None:
        self.out = b""
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)


def flood(url: str, rate: int, seconds: float) -> None:
    """
    The monitor-flood child: C{rate} paced GETs a second of C{url} over
    four keep-alive connections, for C{seconds}; prints how many were answered.
    """
    import http.client
    import threading
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    answered = [0]
    lock = threading.Lock()

    def worker(share: int) -> None:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        interval = 1.0 / share
        start = time.monotonic()
        sent = 0
        while time.monotonic() - start < seconds:
            try:
                connection.request("GET", parts.path)
                connection.getresponse().read()
                with lock:
                    answered[0] += 1
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            sent += 1
            delay = start + sent * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # a load generator's pacing

    threads = [threading.Thread(target=worker, args=(max(1, rate // 4),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(answered[0], flush=True)


# -- attacks on the accept path, the codecs, the hooks, the PROXY header -------------


@defer.inlineCallbacks
def descriptorBurst(reactor: Any, target: Target, n: int) -> Any:
    """Hold connections up to the server's limit, then a burst past it; count what was counted."""
    held = int(n * 0.8)
    holders = yield connectMany(reactor, target.port, held)
    yield pause(reactor, 0.5)
    attackers = yield connectMany(reactor, target.port, n)
    yield pause(reactor, 1)
    yield closeAll(attackers)
    yield closeAll(holders)
    # Every attempt counts, also those reset before their connect completed.
    return {"attempted": held + n}


EDGE_JSON = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b'"\\ud800"',
    b'["\\udc00"]',
    b"[" * 300 + b"]" * 300,
]


@defer.inlineCallbacks
def edgeJSON(reactor: Any, target: Target, n: int) -> Any:
    """JSON that decodes in Python but cannot be encoded back: refused at decode."""
    attackers = yield connectMany(reactor, target.port, n)
    for index, a in enumerate(attackers):
        document = EDGE_JSON[index % len(EDGE_JSON)]
        a.transport.write(struct.pack(">I", len(document)) + document)  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])
    return {"echoed": sum(len(a.received) > 0 for a in attackers)}


@defer.inlineCallbacks
def edgeLine(reactor: Any, target: Target, n: int) -> Any:
    """Lines with stray CRs, which must come back exactly; and bad UTF-8, which is refused."""
    attackers = yield connectMany(reactor, target.port, n)
    strays = attackers[: n // 2]
    wire = b"abc\r\r\n\rx\n"  # each line comes back as it came
    for a in strays:
        a.expect = len(wire)
        a.done = defer.Deferred()
        a.transport.write(wire)  # type: ignore[union-attr]
    for a in attackers[n // 2 :]:
        a.transport.write(b"\xc3\x28\n")  # type: ignore[union-attr]
    echoes = yield defer.gatherResults([a.done for a in strays if a.done is not None])
    exact = sum(echo == wire for echo in echoes)
    yield closeAll(strays)
    yield defer.gatherResults([a.lost for a in attackers])
    return {"stray-CR lines echoed exactly": f"{exact}/{len(strays)}"}


@defer.inlineCallbacks
def failingHooks(reactor: Any, target: Target, n: int) -> Any:
    """Connections whose connectionMade and connectionLost raise."""
    before = len(target.process.err)
    attackers = yield connectMany(reactor, target.port, n, source=ATTACKER_HOST)
    yield defer.gatherResults([a.lost for a in attackers])
    yield pause(reactor, 0.5)
    return {"log written (KB)": round((len(target.process.err) - before) / 1024, 1)}


def v2UnixHeader() -> bytes:
    """A PROXY v2 header naming AF_UNIX endpoints."""
    addresses = b"/tmp/client".ljust(108, b"\0") + b"/tmp/server".ljust(108, b"\0")
    return b"\r\n\r\n\0\r\nQUIT\n" + bytes([0x21, 0x31]) + struct.pack(">H", len(addresses)) + addresses


PROXY_V1 = b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 9983\r\n"


@defer.inlineCallbacks
def proxyUnix(reactor: Any, target: Target, n: int) -> Any:
    """PROXY v2 headers naming a UNIX-socket client, under an accept filter."""
    attackers = yield connectMany(reactor, target.port, n)
    for a in attackers:
        a.transport.write(v2UnixHeader() + struct.pack(">I", 2) + b"hi")  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])
    return {"echoed": sum(len(a.received) > 0 for a in attackers)}


ATTACKS: dict[str, Attack] = {
    "baseline": Attack("no attack: 20 echo clients", baseline, 0),
    "huge-header": Attack("1,000 clients send a 2 GiB length header", hugeHeader, 1000),
    "garbage": Attack(
        "1,000 clients send 4 KiB of random bytes", garbage, 1000, ["--codec", "diocp"], spec="diocp"
    ),
    "slowloris": Attack(
        "5,000 clients send half a frame, then nothing", slowloris, 5000, ["--idle-timeout", "3"]
    ),
    "never-read": Attack("50 clients send 6 MB of echo requests each and never read", neverRead, 50),
    "burst": Attack(
        "1,000 connections held, then a burst of 5,000 more (limit 1,020)",
        burst,
        5000,
        ["--max-connections", "1020"],
    ),
    "reset-mid-frame": Attack("2,000 clients reset in the middle of a frame", resetMidFrame, 2000),
    "handler-errors": Attack(
        "1,000 clients send a frame the handler raises on",
        handlerErrors,
        1000,
        ["--context", "benchmarks.hostile.Booby"],
    ),
    "monitor-slowloris": Attack(
        "500 connections to the monitor send a header line every 2 s",
        monitorSlowloris,
        500,
        ["--monitor", "tcp:0:interface=127.0.0.1"],
    ),
    "monitor-flood": Attack(
        "5,000 connections online; 1,000 requests/s on /stats.json against 20 request/response neighbours",
        monitorFlood,
        5000,
        ["--monitor", "tcp:0:interface=127.0.0.1"],
    ),
    "post-body": Attack(
        "10 POSTs to the monitor declare 300 MB bodies and send 8 MB each",
        postBody,
        10,
        ["--monitor", "tcp:0:interface=127.0.0.1"],
    ),
    "descriptor-burst": Attack(
        "2,000-descriptor limit: 1,600 connections held, then a burst of 2,000",
        descriptorBurst,
        2000,
        openFiles=2000,
    ),
    "descriptor-exhaustion": Attack(
        "2,000-descriptor limit, --max-connections 10000: 1,600 held, then 2,000 more",
        descriptorBurst,
        2000,
        ["--max-connections", "10000"],
        openFiles=2000,
    ),
    "edge-json": Attack(
        "1,000 clients send NaN, 1e999, lone surrogates, 300-deep nesting on length+json",
        edgeJSON,
        1000,
        ["--codec", "length+json"],
        spec="length+json",
    ),
    "edge-line": Attack(
        "500 clients send lines with stray CRs, 500 send bad UTF-8, on line+text",
        edgeLine,
        1000,
        ["--codec", "line+text"],
        spec="line+text",
    ),
    "failing-hooks": Attack(
        "1,000 connections whose connectionMade and connectionLost raise",
        failingHooks,
        1000,
        ["--context", "benchmarks.hostile.HookBomb"],
    ),
    "proxy-unix": Attack(
        "1,000 PROXY v2 headers naming a UNIX-socket client, under --allow 127.0.0.1",
        proxyUnix,
        1000,
        ["--allow", "127.0.0.1/32"],
        prefix=PROXY_V1,
    ),
}
# The proxy attack's server listens behind haproxy: (set in runAttack).
_HAPROXY = {"proxy-unix"}


def serverEnvironment(tmp: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if tmp is not None:
        env["TMPDIR"] = tmp  # the server's own: what it spools is measured
    return env


@defer.inlineCallbacks
def runAttack(reactor: Any, name: str, scale: float) -> Generator[Any, Any, dict[str, Any]]:
    import shutil
    import tempfile

    attack = ATTACKS[name]
    server = ServerProcess()
    tmp = tempfile.mkdtemp(prefix="iocpsvc-hostile-")
    listen = "haproxy:tcp:0:interface=127.0.0.1" if name in _HAPROXY else "tcp:0:interface=127.0.0.1"
    argv = [*SERVE]
    if attack.openFiles is not None:
        argv += ["--open-files", str(attack.openFiles)]
    argv += ["--listen", listen, "--stats-interval", "0"]
    if "--monitor" not in attack.options:
        argv += ["--monitor", "none"]
    transport = reactor.spawnProcess(
        server, sys.executable, argv + attack.options, env=serverEnvironment(tmp)
    )
    server.pid = transport.pid
    port = yield server.port
    target = Target(port, server.monitorPort, server)
    n = int(attack.count * scale)
    good = goodClients(reactor, port, attack.spec, 1, attack.prefix)
    notes = yield attack.run(reactor, target, n)
    okDuring = yield good
    okAfter = yield goodClients(reactor, port, attack.spec, 2, attack.prefix)
    stopping = reactor.seconds()
    transport.signalProcess("TERM")
    yield server.ended
    shutil.rmtree(tmp, ignore_errors=True)
    stats = server.stats()
    notes = dict(notes or {})
    if name.startswith("descriptor"):
        attempted = notes.pop("attempted") + 2 * GOOD
        counted = stats.get("accepted", 0) + stats.get("refused", 0)
        notes["connections attempted/counted"] = f"{attempted:,}/{counted:,}"
    return {
        "attack": name,
        "description": attack.description.replace("1,000", f"{int(1000 * scale):,}")
        if scale != 1
        else attack.description,
        "stats": stats,
        "notes": notes,
        "logBytes": len(server.err),
        "goodDuring": okDuring,
        "goodAfter": okAfter,
        "exitSeconds": round(server.endedAt - stopping, 2),
    }


@defer.inlineCallbacks
def sigtermUnderLoad(reactor: Any, scale: float) -> Generator[Any, Any, dict[str, Any]]:
    server = ServerProcess()
    argv = [*SERVE, "--listen", "tcp:0:interface=127.0.0.1", "--monitor", "none"]
    transport = reactor.spawnProcess(
        server, sys.executable, argv + ["--shutdown-timeout", "3"], env=serverEnvironment()
    )
    port = yield server.port
    busy = yield connectMany(reactor, port, int(1000 * scale))
    payload = b"s" * 60_000
    for c in busy[:50]:
        c.transport.pauseProducing()  # type: ignore[union-attr]
        for _ in range(100):
            c.transport.write(struct.pack(">I", len(payload)) + payload)  # type: ignore[union-attr]
    for c in busy[50:]:
        c.transport.write(struct.pack(">I", 5) + b"hello")  # type: ignore[union-attr]
    yield pause(reactor, 1)
    stopping = reactor.seconds()
    transport.signalProcess("TERM")
    status = yield server.ended
    yield closeAll(busy)
    return {
        "attack": "sigterm-under-load",
        "description": f"SIGTERM with {len(busy):,} connections, 50 of them not reading "
        "(shutdown timeout 3 s)",
        "stats": server.stats(),
        "notes": {},
        "logBytes": len(server.err),
        "goodDuring": None,
        "goodAfter": None,
        "exitSeconds": round(server.endedAt - stopping, 2),
        "exitStatus": getattr(status, "exitCode", None),
        "traceback": b"Traceback" in server.err,
    }


def describe(result: dict[str, Any]) -> str:
    stats = result["stats"]
    closed = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.get("closed", {}).items()))
    parts = [f"closed: {closed}" if closed else "closed: none"]
    if stats.get("refused"):
        parts.append(f"refused at accept {stats['refused']:,}")
    if stats.get("acceptErrors"):
        parts.append(f"accept errors {stats['acceptErrors']:,}")
    if stats.get("handlerErrors"):
        parts.append(f"handler errors {stats['handlerErrors']:,}")
    monitor = stats.get("monitor")
    if monitor:
        parts.append(
            "monitor: {requests_total:,} answered, {refused_total:,} refused, "
            "{timed_out_total:,} timed out, {rejected_total:,} rejected, "
            "{throttled_total:,} throttled".format(**monitor)
        )
    if stats.get("tmpBytes"):
        parts.append(f"temporary files {stats['tmpBytes']:,} bytes")
    elif result["attack"] == "post-body":
        parts.append("temporary files: none")
    parts.extend(f"{key} {value}" for key, value in result.get("notes", {}).items())
    parts.append(f"log {result.get('logBytes', 0) / 1024:.0f} KB")
    if result["attack"] == "sigterm-under-load":
        parts.append(f"exited in {result['exitSeconds']} s, status {result.get('exitStatus')}")
        parts.append("no traceback" if not result.get("traceback") else "TRACEBACK")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1:])
        return
    if argv[:1] == ["--flood"]:
        flood(argv[1], int(argv[2]), float(argv[3]))
        return
    parser = argparse.ArgumentParser(description="hostile-client attacks against iocpsvc")
    parser.add_argument("--attack", action="append", choices=[*ATTACKS, "sigterm-under-load"])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rst", help="also write the results as a reST list-table to this file")
    args = parser.parse_args(argv)
    raiseOpenFilesLimit()
    names = args.attack or [*ATTACKS, "sigterm-under-load"]

    from twisted.internet import reactor

    results: list[dict[str, Any]] = []

    @defer.inlineCallbacks
    def runAll() -> Any:
        try:
            for name in names:
                print(f"  running {name} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                if name == "sigterm-under-load":
                    result = yield sigtermUnderLoad(reactor, args.scale)
                else:
                    result = yield runAttack(reactor, name, args.scale)
                result["seconds"] = round(time.monotonic() - started, 1)
                results.append(result)
        except Exception:
            Failure().printTraceback(file=sys.stderr)
        finally:
            reactor.stop()  # type: ignore[attr-defined]

    reactor.callWhenRunning(runAll)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]

    print("| attack | what the server did | peak RSS (MB) | good clients during / after |")
    print("|---|---|---|---|")
    rows = []
    for r in results:
        rss = r["stats"].get("vmhwmKiB", 0) / 1024
        good = "–" if r["goodDuring"] is None else f"{r['goodDuring']}/{GOOD} / {r['goodAfter']}/{GOOD}"
        rows.append((f"{r['attack']}: {r['description']}", describe(r), f"{rss:.1f}", good))
        print(f"| {rows[-1][0]} | {rows[-1][1]} | {rows[-1][2]} | {rows[-1][3]} |")
    if args.rst:
        import re

        with open(args.rst, "w") as f:
            f.write(".. list-table:: Hostile clients, one fresh server process each\n")
            f.write("   :header-rows: 1\n\n")
            f.write("   * - attack\n     - what the server did\n     - peak RSS (MB)\n")
            f.write("     - good clients during / after\n")
            for row in rows:
                # An option named in the text is a literal: Sphinx would print "--allow" as "–allow".
                attack = re.sub(r"(?<![\w`])(--[a-z][\w-]*)", r"``\1``", row[0])
                f.write(f"   * - {attack}\n     - {row[1]}\n     - {row[2]}\n     - {row[3]}\n")
            f.write(f"\nMeasured with ``python -m benchmarks.hostile --rst {args.rst}``.\n")


if __name__ == "__main__":
    main()
