"""
Tests for L{iocpsvc.assembly}: the services a configuration describes (one
process, or one process where workers cannot run), and the descriptor
budget: the derived connection limit keeps the monitor's share out.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc import assembly, workers
from iocpsvc.limits import RESERVED_FILES
from iocpsvc.tap import Options


def configOf(*argv: str) -> Any:
    options = Options()
    options.parseOptions(list(argv))
    return options.config


class WorkersUnavailableTests(SynchronousTestCase):
    """Where worker processes cannot run."""

    def test_unavailable(self) -> None:
        """A reactor that cannot adopt sockets (as IOCP's) is named as the reason to run one process."""
        from twisted.internet.task import Clock

        why = workers.workersAvailable(Clock())
        self.assertIsNotNone(why)
        if os.name == "posix":
            self.assertIn("cannot adopt listening sockets", str(why))

    def test_oneProcessWhereUnavailable(self) -> None:
        """--workers 2 on such a reactor builds the one-process server, with a warning."""
        from twisted.logger import globalLogPublisher

        from iocpsvc import tap
        from iocpsvc.service import SocketServerService

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(
            workers, "workersAvailable", lambda reactor: "the IOCPReactor cannot adopt listening sockets"
        )
        options = Options()
        options.parseOptions(["--workers", "2", "--port", "tcp:0:interface=127.0.0.1", "--monitor", "none"])
        service = tap.makeService(options)
        self.assertIsInstance(service, SocketServerService)
        self.assertTrue(any("running one process" in str(e.get("log_format", "")) for e in events))


class DescriptorBudgetTests(SynchronousTestCase):
    """The connection limit derived from the open-files limit."""

    def budget(self, openFiles: int, *argv: str) -> Any:
        self.patch(assembly, "raiseOpenFilesLimit", lambda: (openFiles, openFiles))
        return assembly.descriptorBudget(configOf(*argv))

    def test_monitorShareKeptOut(self) -> None:
        """With the monitor on, its connections and the reserve are kept out of the limit."""
        limits, notes = self.budget(1000, "--monitor-max-connections", "20")
        self.assertEqual(limits.maxConnections, 1000 - RESERVED_FILES - 20)
        self.assertIn("max connections derived from it", notes)

    def test_noMonitorNoShare(self) -> None:
        """With --monitor none, only the reserve is kept out."""
        limits, _ = self.budget(1000, "--monitor", "none")
        self.assertEqual(limits.maxConnections, 1000 - RESERVED_FILES)

    def test_configLeftAsGiven(self) -> None:
        """The derived limit is on a copy: the configuration keeps what was given."""
        config = configOf("--monitor", "none")
        self.patch(assembly, "raiseOpenFilesLimit", lambda: (500, 500))
        limits, _ = assembly.descriptorBudget(config)
        self.assertIsNone(config.limits.maxConnections)
        self.assertEqual(limits.maxConnections, 500 - RESERVED_FILES)

    def test_shortfallWarned(self) -> None:
        """An explicit limit the descriptors cannot hold is warned of at start."""
        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        limits, _ = self.budget(1000, "--max-connections", "5000")
        self.assertEqual(limits.maxConnections, 5000)
        self.assertTrue(any("descriptors short" in str(e.get("log_format", "")) for e in events))
