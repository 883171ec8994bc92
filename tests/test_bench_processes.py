"""
Tests for L{iocpsvc.bench.processes}: the parent of C{--processes P} --
how it shares out the connections, starts its load processes together,
collects their results, and kills those that overrun.  Its processes are
fakes here; C{tests/test_bench.py} runs real ones.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import iocpsvc
from iocpsvc.bench.processes import LoadProcess, LoadProcessPool
from iocpsvc.bench.report import ProcessResult
from iocpsvc.bench.settings import LoadSettings


class FakeProcessTransport:
    """What the parent may do to a load process: write to its stdin, signal it."""

    def __init__(self) -> None:
        self.written = b""
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.written += data

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


class SpawningClock(Clock):
    """A clock that records the processes it is asked to spawn."""

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[LoadProcess, list[str], dict[str, str], FakeProcessTransport]] = []

    def spawnProcess(self, processProtocol: Any, executable: str, args: Any, env: Any = None) -> Any:
        transport = FakeProcessTransport()
        self.spawned.append((processProtocol, list(args), env, transport))
        return transport


def progressLine(phase: str, connected: int = 0) -> bytes:
    """A progress line as a load process writes it."""
    snapshot = {
        "phase": phase,
        "elapsed": 0.0,
        "connected": connected,
        "connections": 0,
        "frames": 0,
        "errors": 0,
    }
    return json.dumps({"progress": snapshot}).encode() + b"\n"


def option(argv: list[str], name: str) -> str:
    """The value of C{name} in C{argv}."""
    return argv[argv.index(name) + 1]


class LoadProcessPoolTests(SynchronousTestCase):
    """The parent of C{--processes P}, with fake processes on a fake clock."""

    def start(self, connections: int = 10, processes: int = 3) -> tuple[SpawningClock, Any, list[Any]]:
        clock = SpawningClock()
        settings = LoadSettings(connections=connections, duration=1, warmup=0)
        pool = LoadProcessPool(clock, settings, processes, None)
        results: list[Any] = []
        pool.start().addCallback(results.append)
        return clock, settings, results

    def test_shares(self) -> None:
        """10 connections over 3 processes: 4, 3 and 3, each from its offset, each its part of the batch."""
        clock, _, _ = self.start()
        argvs = [argv for _, argv, _, _ in clock.spawned]
        self.assertEqual([a[:4] for a in argvs], [[sys.executable, "-m", "iocpsvc.bench", "--worker"]] * 3)
        self.assertEqual([option(a, "--connections") for a in argvs], ["4", "3", "3"])
        self.assertEqual([option(a, "--connection-offset") for a in argvs], ["0", "4", "7"])
        self.assertEqual({option(a, "--total-connections") for a in argvs}, {"10"})
        self.assertEqual({option(a, "--connect-batch") for a in argvs}, {str(500 // 3)})

    def test_environment(self) -> None:
        """Load processes find this copy of iocpsvc first on their PYTHONPATH."""
        clock, _, _ = self.start()
        env = clock.spawned[0][2]
        first = env["PYTHONPATH"].split(os.pathsep)[0]
        self.assertEqual(os.path.join(first, "iocpsvc", "__init__.py"), os.path.abspath(iocpsvc.__file__))

    def test_goOnceAllConnected(self) -> None:
        """C{go} goes to every load process once the last one has connected, not before."""
        clock, _, _ = self.start(processes=2)
        (first, _, _, firstTransport), (second, _, _, secondTransport) = clock.spawned
        first.outReceived(progressLine("connecting") + progressLine("connected", 5))
        second.outReceived(progressLine("connecting"))
        self.assertEqual((firstTransport.written, secondTransport.written), (b"", b""))
        second.outReceived(progressLine("waiting", 5)[:10])
        second.outReceived(progressLine("waiting", 5)[10:])
        self.assertEqual((firstTransport.written, secondTransport.written), (b"go\n", b"go\n"))

    def test_results(self) -> None:
        """
        The pool fires with every result once all have ended; one that ended
        without a result counts a C{worker} error with the end of its stderr.
        """
        clock, _, results = self.start(processes=2)
        (first, _, _, _), (second, _, _, _) = clock.spawned
        sent = ProcessResult(connections=5, connected=5, frames=7)
        first.outReceived(json.dumps({"result": sent.toJSON()}).encode() + b"\n")
        first.processEnded(Failure(ProcessDone(0)))
        self.assertEqual(results, [])
        second.errReceived(b"Traceback ...\nSomeError: it broke\n")
        second.processEnded(Failure(ProcessTerminated(1)))
        [merged] = results
        self.assertEqual(merged[0].toJSON(), sent.toJSON())
        self.assertEqual(merged[1].errors, {"worker": 1})
        self.assertIn("worker 1 ended without a result", merged[1].examples[0])
        self.assertIn("SomeError: it broke", merged[1].examples[0])

    def test_overrun(self) -> None:
        """Load processes still running past the run's deadline (plus slack) are killed."""
        clock, settings, _ = self.start(processes=2)
        (first, _, _, firstTransport), (_, _, _, secondTransport) = clock.spawned
        first.processEnded(Failure(ProcessDone(0)))
        clock.advance(settings.deadline())
        self.assertEqual(secondTransport.signals, [])
        clock.advance(30)
        self.assertEqual((firstTransport.signals, secondTransport.signals), ([], ["KILL"]))
