"""
Every start failure of C{twistd iocpsvc} is one line naming the option and
the value, not a traceback, and the process exits non-zero: busy ports and
duplicate listeners, bad endpoint descriptions, CIDRs, sizes, durations,
numbers, codecs and contexts, a context and codec that do not agree, and
the workers' sockets.  Each bad input runs as a real subprocess.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import REPO, TWISTD
from tests.test_plugin import runTwistd as runTwistdCommand


def runTwistd(*arguments: str) -> subprocess.CompletedProcess[str]:
    """C{twistd -n --pidfile= ARGUMENTS} as a subprocess, to its end."""
    return runTwistdCommand("-n", "--pidfile=", *arguments)


def oneErrorLine(test: SynchronousTestCase, result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a twistd that failed to start, checked: non-zero exit, no traceback."""
    output = result.stdout + result.stderr
    test.assertNotEqual(result.returncode, 0, output)
    test.assertNotIn("Traceback", output)
    errors = [line for line in output.splitlines() if "iocpsvc: --" in line]
    test.assertEqual(len(errors), 1, output)
    return errors[0]


class BusyPortTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.busy = socket.socket()
        self.addCleanup(self.busy.close)
        self.busy.bind(("127.0.0.1", 0))
        self.busy.listen()
        self.port = self.busy.getsockname()[1]

    def assertOneLine(self, result: subprocess.CompletedProcess[str], expected: str) -> None:
        error = oneErrorLine(self, result)
        self.assertIn(expected, error)
        self.assertIn("address already in use", error)

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


# (arguments, what the one line must say).  Each runs as its own twistd.
BAD_INPUTS: list[tuple[list[str], str]] = [
    (["--listen", "tcp:notaport"], "--listen 'tcp:notaport': the port must be a number from 0 to 65535"),
    (["--port", "tcp:70000"], "--port 'tcp:70000': the port must be a number from 0 to 65535"),
    (["--listen", "tcp"], "--listen 'tcp': no port"),
    (["--listen", "nosuch:1"], "--listen 'nosuch:1': unknown endpoint type 'nosuch'"),
    (["--listen", "tcp:0:bogus=1"], "--listen 'tcp:0:bogus=1': unknown parameter 'bogus'"),
    (["--listen", "unix:/nonexistent/dir/iocpsvc.sock"], "no such directory for the socket: /nonexistent"),
    (["--listen", "ssl:0:privateKey=/nonexistent.pem"], "cannot read /nonexistent.pem: no such file"),
    (["--listen", "haproxy:tcp:x"], "--listen 'haproxy:tcp:x': the port must be a number"),
    (["--monitor", "tcp:x"], "--monitor 'tcp:x': the port must be a number"),
    (["--listen", "systemd:domain=INET:index=0"], "systemd endpoints need socket activation"),
    (["--allow", "300.1.1.1/8"], "--allow '300.1.1.1/8': not an IP address or CIDR network"),
    (["--deny", "10.0.0.0/33"], "--deny '10.0.0.0/33': not an IP address or CIDR network"),
    (["--idle-timeout", "5x"], "--idle-timeout '5x': not a duration"),
    (["--close-timeout", "-1s"], "--close-timeout '-1s': must be at least 0"),
    (["--write-high-water", "64q"], "--write-high-water '64q': not a size"),
    (["--max-frame-length", "0"], "--max-frame-length '0': must be at least 1"),
    (["--max-connections", "1.5"], "--max-connections '1.5': not a whole number"),
    (["--write-high-water", "2MiB", "--max-pending-write", "1MiB"], "--max-pending-write '1MiB': must be"),
    (["--workers", "none"], "--workers 'none': not a whole number"),
    (["--worker-sockets", "every"], "--worker-sockets 'every': must be one of"),
    (["--codec", "nosuch"], "--codec 'nosuch': unknown codec"),
    (["--context", "nosuch"], "--context: unknown context 'nosuch'"),
    (["--context", "chat", "--codec", "length+json"], "the chat context writes and reads text"),
    (["--cluster", "redis://app:s3cret@cache:port"], "--cluster 'redis://app:***@cache:port'"),
]


class BadInputTests(SynchronousTestCase):
    """Each bad input: one line naming the option and the value, exit status 1."""

    def test_eachBadInput(self) -> None:
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        running = []
        with tempfile.TemporaryDirectory() as directory:
            # All at once: each is a whole twistd start, most of it imports.
            for arguments, expected in BAD_INPUTS:
                command = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "iocpsvc", *arguments]
                process = subprocess.Popen(
                    command, cwd=directory, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                running.append((arguments, expected, process))
            for arguments, expected, process in running:
                stdout, stderr = process.communicate(timeout=120)
                output = (stdout + stderr).strip()
                said = f"{arguments}: {output}"
                self.assertEqual(process.returncode, 1, said)
                self.assertEqual(len(output.splitlines()), 1, said)
                self.assertIn(expected, output, said)
                self.assertNotIn("s3cret", output)


class UnixSocketTests(SynchronousTestCase):
    def test_pathTaken(self) -> None:
        """A UNIX socket path where a file already is: one line naming the path."""
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "taken.sock")
        with open(path, "w") as f:
            f.write("not a socket")
        result = runTwistd("iocpsvc", "--listen", f"unix:{path}", "--monitor", "none")
        self.assertIn(f"--listen unix:{path}: cannot listen on {path}: ", oneErrorLine(self, result))


class WorkerSocketTests(SynchronousTestCase):
    """The workers' parent opens the sockets: a busy port there is one line too."""

    def test_busyPortUnderWorkers(self) -> None:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        description = f"tcp:{busy.getsockname()[1]}:interface=127.0.0.1"
        result = runTwistd("iocpsvc", "--workers", "2", "--listen", description, "--monitor", "none")
        error = oneErrorLine(self, result)
        self.assertIn(f"--listen {description}: cannot listen on 127.0.0.1:", error)
        self.assertIn("address already in use", error)
