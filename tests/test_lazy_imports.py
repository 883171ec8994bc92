"""
Tests for what a server imports (L{iocpsvc.assembly}, L{iocpsvc.factory},
L{iocpsvc.monitor.web}, the codec registry in L{iocpsvc.codecs}): only what
the options in force use.  Each test builds the server in a fresh child
process the way twistd does (its plugin, its options, C{makeService}),
listening on 127.0.0.1 port 0, echoes one frame through it, then lists the
modules it imported.  A server's base memory is mostly the modules it
imports (issue 12: 15,000 connections in at most 57 MB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import REPO

# The child: argv is [-c, PROXY header or "", twistd iocpsvc options...].
# It prints one JSON line: the modules imported and the peers of the
# contexts online when the echo came back.
CHILD = r"""
import json, struct, sys

from twisted.application.service import IServiceMaker
from twisted.internet import protocol, reactor
from twisted.plugin import getPlugins

header = sys.argv[1].encode("ascii")
maker = next(m for m in getPlugins(IServiceMaker) if m.tapname == "iocpsvc")  # as twistd finds it
options = maker.options()
options.parseOptions(sys.argv[2:])
service = maker.makeService(options)
service.startService()
result = {}


def stop(error=None):
    if error is not None:
        result["error"] = error
    done = service.stopService()
    (done if done is not None else protocol.defer.succeed(None)).addBoth(lambda _: reactor.stop())


class Client(protocol.Protocol):
    received = b""

    def connectionMade(self):
        self.transport.write(header + struct.pack(">I", 5) + b"hello")

    def dataReceived(self, data):
        self.received += data
        if len(self.received) >= 9:
            result["echo"] = self.received.hex()
            result["peers"] = [str(c.peer.host) for c in service.factory.online.values()]
            result["modules"] = sorted(sys.modules)
            self.transport.loseConnection()
            stop()


protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", service.ports[0].getHost().port)
reactor.callLater(30, stop, "no echo within 30 s")
reactor.run()
print(json.dumps(result))
"""

# Imported by no server with the default options and --monitor none.
UNUSED_BY_DEFAULT = (
    "iocpsvc.workers",  # --workers
    "iocpsvc.cluster.redis",  # --cluster
    "iocpsvc.cluster.resp",
    "iocpsvc.monitor",  # --monitor
    "twisted.web",
    "prometheus_client",  # the monitor's /metrics
    "iocpsvc.proxy",  # --port haproxy:...
    "iocpsvc.proxyheader",
    "twisted.protocols.haproxy",
    "iocpsvc.bench",  # the load tool
    "iocpsvc.client",  # the connecting side
    "iocpsvc.request",
    "iocpsvc.testing",
    "iocpsvc.threads",
    "hypothesis",
)

# The built-in codecs a server with the default codec (length) does not use.
OTHER_CODECS = tuple(
    f"iocpsvc.codecs.{name}" for name in ("line", "fixed", "netstring", "diocp", "hpsocket", "json")
)

ECHOED = (b"\x00\x00\x00\x05hello").hex()
LISTEN = ("--port", "tcp:0:interface=127.0.0.1")


def serveOnce(*options: str, header: bytes = b"") -> dict[str, Any]:
    """Run the child with C{options}; what it printed."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, header.decode("ascii"), "--stats-interval", "0", *options],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,  # subprocess.run kills the child past this
    )
    if done.returncode != 0:
        raise AssertionError(f"the child server failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if "error" in result:
        raise AssertionError(result["error"])
    return result


def imported(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The modules of C{modules} that are one of C{names} or inside one of them."""
    return [m for m in modules if any(m == name or m.startswith(name + ".") for name in names)]


class DefaultServerImportsTests(SynchronousTestCase):
    """C{twistd iocpsvc} with the default options imports only what they use."""

    def test_defaultOptionsWithoutMonitor(self) -> None:
        """
        With the default options and C{--monitor none}, a server that has
        echoed a frame has imported no worker, cluster, monitor, PROXY
        protocol, load tool or client module, nor another codec than its own.
        """
        result = serveOnce(*LISTEN, "--monitor", "none")
        self.assertEqual(result["echo"], ECHOED)
        self.assertEqual(imported(result["modules"], UNUSED_BY_DEFAULT), [])
        self.assertEqual(imported(result["modules"], OTHER_CODECS), [])
        self.assertIn("iocpsvc.codecs.length", result["modules"])

    def test_monitorWithoutScrape(self) -> None:
        """
        With a monitor, twisted.web is imported, but prometheus_client is
        not until the first scrape of C{/metrics}.
        """
        result = serveOnce(*LISTEN, "--monitor", "tcp:0:interface=127.0.0.1")
        self.assertEqual(result["echo"], ECHOED)
        self.assertIn("iocpsvc.monitor.web", result["modules"])
        self.assertIn("twisted.web.server", result["modules"])
        unused = tuple(name for name in UNUSED_BY_DEFAULT if name not in ("iocpsvc.monitor", "twisted.web"))
        self.assertEqual(imported(result["modules"], unused), [])

    def test_proxyProtocolWhenBehindHAProxy(self) -> None:
        """
        Behind C{haproxy:}, the PROXY protocol is imported and used: the
        context's peer is the client the header names.
        """
        result = serveOnce(
            "--port",
            "haproxy:tcp:0:interface=127.0.0.1",
            "--monitor",
            "none",
            header=b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 9983\r\n",
        )
        self.assertEqual(result["echo"], ECHOED)
        self.assertEqual(result["peers"], ["192.0.2.7"])
        self.assertIn("iocpsvc.proxy", result["modules"])
