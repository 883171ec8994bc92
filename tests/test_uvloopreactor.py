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

from twisted.trial.unittest import SkipTest, SynchronousTestCase

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
