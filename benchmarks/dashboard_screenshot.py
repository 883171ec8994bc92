"""
Take the screenshot of the monitor dashboard kept in docs/: run a server and
its monitor on loopback, drive some varying traffic at it for a while (echo
clients coming and going, a few bad ones), then have headless Chromium
photograph the page.

    python -m benchmarks.dashboard_screenshot [--seconds 45] [--out docs/monitor.png]
    python -m benchmarks.dashboard_screenshot --workers 2 --out dashboard-workers.png

One process is built in this process by the assembly (as C{twistd iocpsvc}
builds it); with C{--workers N}, C{twistd iocpsvc --workers N} runs as a
child process on free loopback ports and is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import socket
import struct
import sys
import tempfile
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.web.client import Agent, readBody

from benchmarks.workers import twistdCommand
from iocpsvc.apps import EchoContext
from iocpsvc.assembly import buildService
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.config import ServerConfig
from iocpsvc.limits import ServerLimits
from iocpsvc.monitor import MonitorService

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--hide-scrollbars",
]


class Quiet(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass


class Done(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


def freePort() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@defer.inlineCallbacks
def oneProcess(reactor: Any) -> Any:
    """A server and its monitor in this process; fire with (port, monitor URL, stop)."""
    config = ServerConfig(
        ports=("tcp:0:interface=127.0.0.1",),
        contextClass=EchoContext,
        codec=parseCodecSpec("length"),
        limits=ServerLimits(),
        monitor="tcp:0:interface=127.0.0.1",
        statsInterval=0,
    )
    server: Any = buildService(config, reactor)
    server.startService()
    yield deferLater(reactor, 0.1, lambda: None)
    [monitor] = [child for child in server if isinstance(child, MonitorService)]
    url = f"http://127.0.0.1:{monitor.port.getHost().port}/"
    return server.ports[0].getHost().port, url, server.stopService


@defer.inlineCallbacks
def workerProcesses(reactor: Any, count: int) -> Any:
    """C{twistd iocpsvc --workers count} as a child; fire with (port, monitor URL, stop)."""
    port, monitorPort = freePort(), freePort()
    done = Done()
    argv = twistdCommand(
        "--workers",
        str(count),
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--monitor",
        f"tcp:{monitorPort}:interface=127.0.0.1",
        "--stats-interval",
        "0",
        twistdOptions=("-l", os.devnull),
    )
    process = reactor.spawnProcess(done, sys.executable, argv, env=dict(os.environ))
    url = f"http://127.0.0.1:{monitorPort}/"
    agent = Agent(reactor)
    for _ in range(100):  # the workers listen within a few seconds
        try:
            response = yield agent.request(b"GET", (url + "stats.json").encode())
            stats = json.loads((yield readBody(response)))
            if all(row["state"] == "serving" for row in stats["workers"]) and stats["workers"]:
                break
        except Exception:
            pass
        yield deferLater(reactor, 0.2, lambda: None)

    def stop() -> Any:
        process.signalProcess("TERM")
        return done.ended

    return port, url, stop


@defer.inlineCallbacks
def run(reactor: Any, seconds: float, out: str, workers: int = 1, height: int = 1400) -> Any:
    if workers > 1:
        port, url, stop = yield workerProcesses(reactor, workers)
    else:
        port, url, stop = yield oneProcess(reactor)
    rng = random.Random(1)
    clients: list[Quiet] = []
    started = reactor.seconds()

    def endpoint() -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, "127.0.0.1", port)

    @defer.inlineCallbacks
    def step() -> Any:
        phase = (reactor.seconds() - started) / seconds
        wanted = int(150 + 120 * math.sin(phase * 2 * math.pi))
        while len(clients) < wanted:
            clients.append((yield connectProtocol(endpoint(), Quiet())))
        while len(clients) > wanted:
            clients.pop(rng.randrange(len(clients))).transport.loseConnection()  # type: ignore[union-attr]
        load = 0.5 + 0.5 * math.sin(phase * 6 * math.pi)
        for client in rng.sample(clients, k=max(1, int(len(clients) * load))):
            payload = b"x" * rng.randrange(16, 2048)
            client.transport.write(struct.pack(">I", len(payload)) + payload)  # type: ignore[union-attr]
        if rng.random() < 0.15:  # now and then, a bad client
            bad = yield connectProtocol(endpoint(), Quiet())
            bad.transport.write(struct.pack(">I", 2**31))  # type: ignore[union-attr]

    loop = LoopingCall(step)
    loop.start(0.2)
    yield deferLater(reactor, seconds, lambda: None)
    loop.stop()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("chromium is not installed")
    done = Done()
    profile = tempfile.mkdtemp(prefix="iocpsvc-chromium-")
    argv = [
        browser,
        *FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size=1280,{height}",
        "--virtual-time-budget=4000",
        f"--screenshot={os.path.abspath(out)}",
        url,
    ]
    reactor.spawnProcess(done, browser, argv, env=dict(os.environ))
    yield done.ended
    shutil.rmtree(profile, ignore_errors=True)
    for client in clients:
        client.transport.loseConnection()  # type: ignore[union-attr]
    yield stop()
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--out", default="docs/monitor.png")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: one process)")
    parser.add_argument("--height", type=int, default=1400, help="the window's height in pixels")
    args = parser.parse_args()
    from twisted.internet import reactor

    def go() -> None:
        d = run(reactor, args.seconds, args.out, args.workers, args.height)
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
