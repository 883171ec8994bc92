"""
The twistd plugin, run as a real child process: listed by C{twistd --help},
bad options fail with one line, and C{twistd -n iocpsvc --codec C} echoes
byte-exact under hundreds of connections for every framing codec.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from typing import Any

from twisted.internet import defer
from twisted.python.runtime import platform
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.helpers import encodeFrames
from tests.netutil import REPO, TWISTD, echoMany, spawnTwistd, temporaryDirectory
from tests.test_tcp import FRAMING_CODECS


def runTwistd(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-c", TWISTD, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


class TwistdCommandTests(SynchronousTestCase):
    """twistd run as a subprocess."""

    def test_listedInHelp(self) -> None:
        """C{twistd --help} lists the iocpsvc plugin."""
        result = runTwistd("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("iocpsvc", result.stdout)

    def test_foundWhereInstalled(self) -> None:
        """
        The installed package brings its plugin: C{twistd iocpsvc} works
        with no C{PYTHONPATH} and from another directory, also from an
        editable install (C{setup.cfg} asks for setuptools' compat mode,
        which puts the checkout's C{twisted/plugins} where Twisted looks).
        """
        env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
        result = subprocess.run(
            [sys.executable, "-c", TWISTD, "iocpsvc", "--version"],
            capture_output=True,
            text=True,
            env=env,
            cwd=temporaryDirectory(self),
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertTrue(result.stdout.startswith("iocpsvc "), result.stdout)

    def test_badOptionIsOneLineNoTraceback(self) -> None:
        """A bad codec fails at start with a message, not a traceback."""
        result = runTwistd("-n", "iocpsvc", "--codec", "length:size=5")
        self.assertNotEqual(result.returncode, 0)
        output = result.stdout + result.stderr
        self.assertNotIn("Traceback", output)
        self.assertIn("size", output)


class TwistdEchoTests(TestCase):
    """C{twistd -n iocpsvc --port tcp:0 --codec C} echoes byte-exact."""

    timeout = 120
    if platform.isWindows():
        skip = "uses POSIX signals to stop the child"

    @defer.inlineCallbacks
    def checkCodec(self, spec: str, connections: int = 200) -> Any:
        from twisted.internet import reactor

        process, transport = spawnTwistd(
            reactor,
            temporaryDirectory(self),
            "iocpsvc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--codec",
            spec,
        )
        try:
            port = yield process.listening
            rng = random.Random(spec)
            wires = [
                encodeFrames(spec, [FRAMING_CODECS[spec](rng) for _ in range(rng.randrange(1, 8))])
                for _ in range(connections)
            ]
            received = yield echoMany(reactor, port, wires)
            self.assertEqual(sum(r == w for r, w in zip(received, wires, strict=True)), connections)
        finally:
            if not process.ended.called:
                transport.signalProcess("TERM")
            yield process.ended
        output = process.output.decode(errors="replace")
        self.assertNotIn("Traceback", output)
        self.assertIn(f"codec={spec}", output)

    @defer.inlineCallbacks
    def test_everyFramingCodec(self) -> Any:
        """Each built-in framing codec, one server process after another."""
        for spec in FRAMING_CODECS:
            yield self.checkCodec(spec)

    @defer.inlineCallbacks
    def test_sigtermExitsCleanly(self) -> Any:
        """SIGTERM stops the server with no traceback."""
        from twisted.internet import reactor

        process, transport = spawnTwistd(
            reactor, temporaryDirectory(self), "iocpsvc", "--port", "tcp:0:interface=127.0.0.1"
        )
        yield process.listening
        transport.signalProcess("TERM")
        status = yield process.ended
        self.assertIn(getattr(status, "exitCode", None), (0, None))
        self.assertIn(getattr(status, "signal", None), (None, signal.SIGTERM))
        self.assertNotIn(b"Traceback", bytes(process.output))
