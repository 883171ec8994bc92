"""
Take the screenshot of the monitor dashboard kept in docs/: run a server and
its monitor on loopback, drive some varying traffic at it for a while (echo
clients coming and going, a few bad ones), then have headless Chromium
photograph the page.

    python -m benchmarks.dashboard_screenshot [--seconds 45] [--out docs/monitor.png]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import shutil
import struct
import sys
import tempfile
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import LoopingCall, deferLater

from iocpsvc.apps import EchoContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.monitor import MonitorService
from iocpsvc.service import SocketServerService

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


@defer.inlineCallbacks
def run(reactor: Any, seconds: float, out: str) -> Any:
    factory = ConnectionContextFactory(EchoContext, reactor=reactor)
    server = SocketServerService(factory, ["tcp:0:interface=127.0.0.1"], reactor=reactor)
    monitor = MonitorService(factory, "tcp:0:interface=127.0.0.1", statsInterval=0, reactor=reactor)
    monitor.setServiceParent(server)
    server.startService()
    port = server.ports[0].getHost().port
    url = f"http://127.0.0.1:{monitor.port.getHost().port}/"
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
        "--window-size=1280,1150",
        "--virtual-time-budget=4000",
        f"--screenshot={os.path.abspath(out)}",
        url,
    ]
    reactor.spawnProcess(done, browser, argv, env=dict(os.environ))
    yield done.ended
    shutil.rmtree(profile, ignore_errors=True)
    for client in clients:
        client.transport.loseConnection()  # type: ignore[union-attr]
    yield server.stopService()
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45)
    parser.add_argument("--out", default="docs/monitor.png")
    args = parser.parse_args()
    from twisted.internet import reactor

    def go() -> None:
        d = run(reactor, args.seconds, args.out)
        d.addErrback(lambda f: f.printTraceback())
        d.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(go)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
