"""
Each hostile-client attack against a fresh iocpsvc server process, with 20
well-behaved echo clients beside it; reports what the server did (its close
counters) and the peak memory it reached (VmHWM from /proc).  Loopback only;
every loop is bounded.

    python -m benchmarks.hostile                       # all attacks, Markdown
    python -m benchmarks.hostile --rst docs/hostile-results.rst
    python -m benchmarks.hostile --attack slowloris --scale 2

The server child is this module run with C{--serve OPTIONS...} (the same
options as C{twistd iocpsvc}); on SIGTERM it stops gracefully and prints its
counters as one JSON line.
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
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from iocpsvc.codecs import parseCodecSpec
from iocpsvc.contexts import EchoContext
from iocpsvc.limits import raiseOpenFilesLimit

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


def serve(argv: list[str]) -> None:
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from iocpsvc.tap import Options, makeService

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    options = Options()
    options.parseOptions(argv)
    service = makeService(options)
    service.startService()
    print("PORT", service.ports[0].getHost().port, flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)

    def report() -> None:
        f = service.factory
        counters = {
            "closed": {k: v for k, v in f.closedTotal.items() if v},
            "refused": f.refusedTotal,
            "accepted": f.acceptedTotal,
            "peakOnline": f.peakOnline,
            "decodeErrors": f.decodeErrors,
            "handlerErrors": f.handlerErrors,
            "truncatedFrames": f.truncatedFrames,
            "vmhwmKiB": vmhwmKiB(),
        }
        print("STATS", json.dumps(counters), flush=True)

    reactor.addSystemEventTrigger("after", "shutdown", report)
    reactor.run()  # type: ignore[attr-defined]


# -- the driver ------------------------------------------------------------------


class ServerProcess(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.port: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.endedAt = 0.0

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.port.called and b"\n" in self.out:
            for line in bytes(self.out).splitlines():
                if line.startswith(b"PORT "):
                    self.port.callback(int(line.split()[1]))
                    break

    def errReceived(self, data: bytes) -> None:
        self.err = getattr(self, "err", b"") + data

    def processEnded(self, reason: Failure) -> None:
        from twisted.internet import reactor

        self.endedAt = reactor.seconds()
        if not self.port.called:
            self.port.errback(RuntimeError(getattr(self, "err", b"").decode(errors="replace")[-2000:]))
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


def connectMany(reactor: Any, port: int, count: int) -> defer.Deferred[list[Client]]:
    attempts = []
    for _ in range(count):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=30)
        attempts.append(connectProtocol(endpoint, Client()).addErrback(lambda _: None))
    gathered: defer.Deferred[list[Any]] = defer.gatherResults(attempts)
    return gathered.addCallback(lambda cs: [c for c in cs if c is not None])


def encode(spec: str, payloads: list[bytes]) -> bytes:
    encoder = parseCodecSpec(spec).encoder
    out = []
    for p in payloads:
        e = encoder.encode(p)
        out.append(e if isinstance(e, bytes) else b"".join(e))
    return b"".join(out)


@defer.inlineCallbacks
def goodClients(reactor: Any, port: int, spec: str, seed: int) -> Generator[Any, Any, int]:
    """20 echo clients; returns how many got their bytes back exactly."""
    rng = random.Random(seed)
    wires = [encode(spec, [rng.randbytes(rng.randrange(1, 2000)) for _ in range(6)]) for _ in range(GOOD)]
    clients = yield connectMany(reactor, port, GOOD)
    waiting = []
    for client, wire in zip(clients, wires, strict=False):
        client.expect = len(wire)
        client.done = defer.Deferred()
        waiting.append(client.done)
        client.transport.write(wire)  # type: ignore[union-attr]
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


# Each attack: (server options, codec of the good clients, description, run)
Attack = Callable[[Any, int, int], Any]


@defer.inlineCallbacks
def hugeHeader(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 2**31) + b"\0" * 64)  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def garbage(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    rng = random.Random(1)
    for a in attackers:
        a.transport.write(rng.randbytes(4096))  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def slowloris(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 1000) + b"half")  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])  # the idle timeout (3 s) clears them


@defer.inlineCallbacks
def neverRead(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    payload = b"r" * 60_000
    frame = struct.pack(">I", len(payload)) + payload
    for a in attackers:
        a.transport.pauseProducing()  # type: ignore[union-attr]
        for _ in range(100):
            a.transport.write(frame)  # type: ignore[union-attr]
    yield pause(reactor, 3)
    yield closeAll(attackers)


@defer.inlineCallbacks
def burst(reactor: Any, port: int, n: int) -> Any:
    holders = yield connectMany(reactor, port, 1000)
    yield pause(reactor, 0.5)
    attackers = yield connectMany(reactor, port, n)
    yield pause(reactor, 1)
    yield closeAll(attackers)
    yield closeAll(holders)


@defer.inlineCallbacks
def resetMidFrame(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 500) + b"x" * 100)  # type: ignore[union-attr]
    yield pause(reactor, 0.5)
    yield closeAll(attackers)


@defer.inlineCallbacks
def handlerErrors(reactor: Any, port: int, n: int) -> Any:
    attackers = yield connectMany(reactor, port, n)
    for a in attackers:
        a.transport.write(struct.pack(">I", 4) + b"boom")  # type: ignore[union-attr]
    yield defer.gatherResults([a.lost for a in attackers])


@defer.inlineCallbacks
def baseline(reactor: Any, port: int, n: int) -> Any:
    yield None


ATTACKS: dict[str, tuple[list[str], str, int, str, Attack]] = {
    "baseline": ([], "length", 0, "no attack: 20 echo clients", baseline),
    "huge-header": ([], "length", 1000, "1,000 clients send a 2 GiB length header", hugeHeader),
    "garbage": (["--codec", "diocp"], "diocp", 1000, "1,000 clients send 4 KiB of random bytes", garbage),
    "slowloris": (
        ["--idle-timeout", "3"],
        "length",
        5000,
        "5,000 clients send half a frame, then nothing",
        slowloris,
    ),
    "never-read": ([], "length", 50, "50 clients send 6 MB of echo requests each and never read", neverRead),
    "burst": (
        ["--max-connections", "1020"],
        "length",
        5000,
        "1,000 connections held, then a burst of 5,000 more (limit 1,020)",
        burst,
    ),
    "reset-mid-frame": ([], "length", 2000, "2,000 clients reset in the middle of a frame", resetMidFrame),
    "handler-errors": (
        ["--context", "benchmarks.hostile.Booby"],
        "length",
        1000,
        "1,000 clients send a frame the handler raises on",
        handlerErrors,
    ),
}


@defer.inlineCallbacks
def runAttack(reactor: Any, name: str, scale: float) -> Generator[Any, Any, dict[str, Any]]:
    options, spec, count, description, attack = ATTACKS[name]
    server = ServerProcess()
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [*SERVE, "--port", "tcp:0:interface=127.0.0.1", "--monitor", "none"]
    transport = reactor.spawnProcess(server, sys.executable, argv + options, env=env)
    port = yield server.port
    n = int(count * scale)
    good = goodClients(reactor, port, spec, 1)
    yield attack(reactor, port, n)
    okDuring = yield good
    okAfter = yield goodClients(reactor, port, spec, 2)
    stopping = reactor.seconds()
    transport.signalProcess("TERM")
    yield server.ended
    stats = server.stats()
    return {
        "attack": name,
        "description": description.replace("1,000", f"{int(1000 * scale):,}") if scale != 1 else description,
        "stats": stats,
        "goodDuring": okDuring,
        "goodAfter": okAfter,
        "exitSeconds": round(server.endedAt - stopping, 2),
    }


@defer.inlineCallbacks
def sigtermUnderLoad(reactor: Any, scale: float) -> Generator[Any, Any, dict[str, Any]]:
    server = ServerProcess()
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [*SERVE, "--port", "tcp:0:interface=127.0.0.1", "--monitor", "none"]
    transport = reactor.spawnProcess(server, sys.executable, argv + ["--shutdown-timeout", "3"], env=env)
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
        "goodDuring": None,
        "goodAfter": None,
        "exitSeconds": round(server.endedAt - stopping, 2),
        "exitStatus": getattr(status, "exitCode", None),
        "traceback": b"Traceback" in getattr(server, "err", b""),
    }


def describe(result: dict[str, Any]) -> str:
    stats = result["stats"]
    closed = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.get("closed", {}).items()))
    parts = [f"closed: {closed}" if closed else "closed: none"]
    if stats.get("refused"):
        parts.append(f"refused at accept {stats['refused']:,}")
    if result["attack"] == "sigterm-under-load":
        parts.append(f"exited in {result['exitSeconds']} s, status {result.get('exitStatus')}")
        parts.append("no traceback" if not result.get("traceback") else "TRACEBACK")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        serve(argv[1:])
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
        good = "-" if r["goodDuring"] is None else f"{r['goodDuring']}/{GOOD} / {r['goodAfter']}/{GOOD}"
        rows.append((f"{r['attack']}: {r['description']}", describe(r), f"{rss:.1f}", good))
        print(f"| {rows[-1][0]} | {rows[-1][1]} | {rows[-1][2]} | {rows[-1][3]} |")
    if args.rst:
        with open(args.rst, "w") as f:
            f.write(".. list-table:: Hostile clients, one fresh server process each\n")
            f.write("   :header-rows: 1\n\n")
            f.write("   * - attack\n     - what the server did\n     - peak RSS (MB)\n")
            f.write("     - good clients during / after\n")
            for row in rows:
                f.write(f"   * - {row[0]}\n     - {row[1]}\n     - {row[2]}\n     - {row[3]}\n")
            f.write(f"\nMeasured with ``python -m benchmarks.hostile --rst {args.rst}``.\n")


if __name__ == "__main__":
    main()
