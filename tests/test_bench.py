"""
Tests for the L{iocpsvc.bench} package as a whole: the names it gives, and
C{python -m iocpsvc.bench} (its C{__main__}, through L{iocpsvc.bench.cli},
L{iocpsvc.bench.processes} and L{iocpsvc.bench.child}) in child processes.
The tests of each module are in C{tests/test_bench_<module>.py}.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

import iocpsvc.bench
from tests.netutil import REPO
from tests.test_bench_load import REPORT_KEYS, EchoServerMixin


class PackageTests(SynchronousTestCase):
    """The package gives the public names of its modules."""

    def test_publicNames(self) -> None:
        """Every name in C{__all__} is there, including C{main} for the C{iocpsvc-bench} script."""
        for name in iocpsvc.bench.__all__:
            self.assertTrue(hasattr(iocpsvc.bench, name), name)
        self.assertIs(iocpsvc.bench.main, iocpsvc.bench.cli.main)


class RunAsModuleTests(EchoServerMixin, TestCase):
    """C{python -m iocpsvc.bench} against an in-process iocpsvc server on 127.0.0.1."""

    timeout = 60

    @defer.inlineCallbacks
    def test_processes(self) -> Any:
        """
        C{python -m iocpsvc.bench --json --processes 2} in a child process
        prints one JSON report, with both load processes' connections merged.
        """
        from twisted.internet import reactor

        port = self.startServer()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])))
        args = [
            "-m", "iocpsvc.bench", "--json", "--duration", "1", "--warmup", "0",
            "--connections", "10", "--processes", "2", "--port", str(port),
        ]  # fmt: skip
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, args, env=env, path=REPO, reactor=reactor
        )
        self.assertEqual(code, 0, err)
        report = json.loads(out)
        self.assertTrue(REPORT_KEYS <= set(report), REPORT_KEYS - set(report))
        self.assertEqual(report["processes"], 2)
        self.assertEqual(report["connections"], 10)
        self.assertEqual(report["connected"], 10)
        self.assertEqual(report["errors"], {})
        self.assertGreater(report["frames"], 0)
        self.assertIsNotNone(report["latency_ms"]["p99"])
        self.assertEqual(len(out.splitlines()), 1)  # progress goes to stderr
        self.assertIn(b"frames/s", err)
