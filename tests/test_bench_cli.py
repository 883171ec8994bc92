"""
Tests for L{iocpsvc.bench.cli}: the load tool's command line.
"""

from __future__ import annotations

import os
import sys

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.bench.cli import main, makeParser


class CommandLineTests(SynchronousTestCase):
    """The argument parser and its usage errors."""

    def test_defaults(self) -> None:
        """Loopback port 9983, length codec, one process, 10 s after 1 s of warm-up."""
        args = makeParser().parse_args([])
        self.assertEqual((args.host, args.port, args.codec), ("127.0.0.1", 9983, "length"))
        self.assertEqual((args.duration, args.warmup, args.processes), (10.0, 1.0, 1))

    def test_badCodec(self) -> None:
        """An object codec is a usage error (exit status 2) before anything connects."""
        self.patch(sys, "stderr", open(os.devnull, "w"))
        self.addCleanup(sys.stderr.close)
        error = self.assertRaises(SystemExit, main, ["--codec", "line+json"])
        self.assertEqual(error.code, 2)
