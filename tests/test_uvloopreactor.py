"""
Tests for the C{uvloop} reactor plugin (L{iocpsvc.uvloopreactor},
C{twisted/plugins/iocpsvc_reactors.py}): C{twistd --help-reactors} lists
it, C{twistd -r uvloop iocpsvc} serves an echo on it, and without uvloop
the reactor refuses to install with a message that says what to install.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys

from twisted.internet import defer, protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from iocpsvc import uvloopreactor
from tests.netutil import REPO


def twistd(*arguments: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )


def requireUvloop() -> None:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        raise SkipTest("uvloop is not installed (pip install 'iocpsvc[uvloop]')") from None


class UvloopReactorTests(SynchronousTestCase):
    def test_listed(self) -> None:
        """twistd --help-reactors lists uvloop."""
        # twistd prints the list, then exits.
        process = twistd("--help-reactors")
        output, _ = process.communicate(timeout=60)
        self.assertRegex(output, r"(?m)^\s+uvloop\s")

    def test_withoutUvloop(self) -> None:
        """Without uvloop, install raises an ImportError that says what to install."""
        # None in sys.modules makes the import fail, before install does
        # anything to this process's reactor or event loop.
        saved = sys.modules.get("uvloop", False)
        sys.modules["uvloop"] = None  # type: ignore[assignment]
        if saved is False:
            self.addCleanup(sys.modules.pop, "uvloop", None)
        else:
            self.addCleanup(sys.modules.__setitem__, "uvloop", saved)
        error = self.assertRaises(ImportError, uvloopreactor.install)
        self.assertIn("pip install 'iocpsvc[uvloop]'", str(error))

    def test_echo(self) -> None:
        """
        twistd -r uvloop iocpsvc runs Twisted's asyncio reactor on uvloop,
        serves on native transports (the start log says so), and echoes.
        """
        requireUvloop()
        process = twistd(
            "-n", "--pidfile=", "-r", "uvloop", "iocpsvc",
            "--port", "tcp:0:interface=127.0.0.1", "--monitor", "none",
        )  # fmt: skip
        try:
            assert process.stdout is not None
            lines = []
            port = None
            for line in process.stdout:
                lines.append(line)
                found = re.search(r"listening on tcp:127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            self.assertIsNotNone(port, "".join(lines))
            # Its connections are served by uvloop's own transports (iocpsvc.native).
            self.assertIn("reactor=asyncioreactor on uvloop; transports=native uvloop", lines[-1])
            with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
                frame = struct.pack(">I", 5) + b"hello"
                client.sendall(frame)
                received = b""
                while len(received) < len(frame):
                    chunk = client.recv(100)
                    if not chunk:
                        break
                    received += chunk
            self.assertEqual(received, frame)
        finally:
            process.terminate()
            process.communicate(timeout=60)


# A child that closes its pipes, then exits a moment later: Twisted's reap
# when the pipes close finds it still running, so only SIGCHLD can tell.
_EARLY_CLOSER = ["/bin/sh", "-c", "exec 0<&- 1>&- 2>&-; sleep 0.3"]

_REAP_UNDER_UVLOOP = """
import sys
from iocpsvc import uvloopreactor
uvloopreactor.install()
from twisted.internet import reactor, protocol

class Child(protocol.ProcessProtocol):
    def processEnded(self, reason):
        print("ended", flush=True)
        reactor.stop()

reactor.spawnProcess(Child(), "/bin/sh", EARLY_CLOSER)
reactor.callLater(20, reactor.stop)
reactor.run()
""".replace("EARLY_CLOSER", repr(_EARLY_CLOSER))


class ChildProcessTests(TestCase):
    """
    Children are reaped on the uvloop reactor, whose loop takes the signal
    wake-up descriptor Twisted set for SIGCHLD (see L{iocpsvc.uvloopreactor}).
    """

    timeout = 60

    def test_reapedUnderUvloop(self) -> None:
        """In a process of its own on the uvloop reactor: the child's end is seen."""
        requireUvloop()
        if not os.path.exists("/bin/sh"):
            raise SkipTest("needs /bin/sh")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        result = subprocess.run(
            [sys.executable, "-c", _REAP_UNDER_UVLOOP], capture_output=True, text=True, env=env, timeout=50
        )
        self.assertIn("ended", result.stdout, result.stderr[-2000:])

    @defer.inlineCallbacks
    def test_reapedOnThisReactor(self) -> object:
        """On whatever reactor the suite runs (CI runs it on uvloop too)."""
        from twisted.internet import reactor

        if not os.path.exists("/bin/sh"):
            raise SkipTest("needs /bin/sh")
        ended: defer.Deferred[BaseException] = defer.Deferred()

        class Child(protocol.ProcessProtocol):
            def processEnded(self, reason: Failure) -> None:
                ended.callback(reason.value)

        reactor.spawnProcess(Child(), _EARLY_CLOSER[0], _EARLY_CLOSER)  # type: ignore[attr-defined]
        value = yield ended
        self.assertEqual(value.exitCode, 0)
