"""
The examples run as a user runs them: C{python -m examples.echo} says
where it listens and echoes; a taken port is one line.  (The commands
example's protocol is tested in L{tests.test_factory}.)
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import threading

from twisted.trial.unittest import SynchronousTestCase

from tests.netutil import REPO


def runEcho(*arguments: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [sys.executable, "-m", "examples.echo", *arguments],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class EchoExampleTests(SynchronousTestCase):
    def test_saysWhereItListensAndEchoes(self) -> None:
        process = runEcho("0")
        # A hung example must not hang the suite: killed after a minute.
        watchdog = threading.Timer(60, process.kill)
        watchdog.start()
        self.addCleanup(watchdog.cancel)
        self.addCleanup(process.communicate)
        self.addCleanup(process.kill)
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            found = re.search(r"iocpsvc listening on tcp:127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        self.assertIsNotNone(port, "the example never said where it listens")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(struct.pack(">I", 5) + b"hello")
            received = b""
            while len(received) < 9:
                chunk = client.recv(64)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(received, struct.pack(">I", 5) + b"hello")

    def test_badPortIsOneLine(self) -> None:
        process = runEcho("abc")
        stdout, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1)
        self.assertEqual(
            stderr.strip(), "examples.echo: the port must be a number from 0 to 65535, not 'abc'"
        )

    def test_takenPortIsOneLine(self) -> None:
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        process = runEcho(str(port))
        stdout, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 1)
        self.assertEqual(
            stderr.strip(), f"examples.echo: cannot listen on 127.0.0.1:{port}: Address already in use"
        )
