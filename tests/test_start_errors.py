"""
A listener that cannot listen stops C{twistd iocpsvc} with one line naming
the option and the value (issue 14, point 1, for busy ports), not a
traceback; the process exits non-zero.
"""

from __future__ import annotations

import socket
import subprocess

from twisted.trial.unittest import SynchronousTestCase

from tests.test_plugin import runTwistd as runTwistdCommand


def runTwistd(*arguments: str) -> subprocess.CompletedProcess[str]:
    """C{twistd -n --pidfile= ARGUMENTS} as a subprocess, to its end."""
    return runTwistdCommand("-n", "--pidfile=", *arguments)


class BusyPortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.busy = socket.socket()
        self.addCleanup(self.busy.close)
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen()
        self.port = self.busy.getsockname()[1]

    def assertOneLine(self, result: subprocess.CompletedProcess[str], expected: str) -> None:
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        errors = [line for line in output.splitlines() if "iocpsvc: --" in line]
        self.assertEqual(len(errors), 1, output)
        self.assertIn(expected, errors[0])
        self.assertIn("address already in use", errors[0])

    def test_busyPort(self) -> None:
        """--port on a port another process listens on."""
        description = f"tcp:{self.port}:interface=127.0.0.1"
        result = runTwistd("iocpsvc", "--port", description, "--monitor", "none")
        self.assertOneLine(result, f"--port {description}: cannot listen on 127.0.0.1:{self.port}")

    def test_busyMonitorPort(self) -> None:
        """--monitor on a port another process listens on."""
        description = f"tcp:{self.port}:interface=127.0.0.1"
        result = runTwistd("iocpsvc", "--port", "tcp:0:interface=127.0.0.1", "--monitor", description)
        self.assertOneLine(result, f"--monitor {description}")

    def test_samePortTwice(self) -> None:
        """The same --port twice: the second cannot listen."""
        self.busy.close()  # a free port, taken by the first listener
        description = f"tcp:{self.port}:interface=127.0.0.1"
        result = runTwistd("iocpsvc", "--port", description, "--port", description, "--monitor", "none")
        self.assertOneLine(result, f"--port {description}")
