"""
Tests for L{iocpsvc.tap}: every option of C{twistd iocpsvc}, parsed in
process into its frozen L{iocpsvc.config.ServerConfig}, and the usage
errors of bad values.
"""

from __future__ import annotations

import dataclasses

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.machine import availableCores
from iocpsvc.tap import Options


class ServerOptionsTests(SynchronousTestCase):
    """Parsing of C{twistd iocpsvc} options, in process."""

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_defaults(self) -> None:
        """No options: echo on tcp:9983 with the length codec."""
        options = self.parse()
        self.assertEqual(options.config.ports, ("tcp:9983",))
        self.assertEqual(options.config.codec.spec, "length")
        self.assertEqual(options.config.contextClass.__name__, "EchoContext")
        self.assertEqual(options.config.codec.maxFrameLength, 1024 * 1024)

    def test_repeatablePorts(self) -> None:
        """--port and -p may be given several times."""
        options = self.parse("-p", "tcp:1", "--port", "tcp:2:interface=127.0.0.1")
        self.assertEqual(options.config.ports, ("tcp:1", "tcp:2:interface=127.0.0.1"))

    def test_maxFrameLengthUnits(self) -> None:
        """--max-frame-length accepts 64KiB and applies to the codec."""
        options = self.parse("--max-frame-length", "64KiB", "--codec", "line")
        self.assertEqual(options.config.codec.maxFrameLength, 65536)

    def test_specMaxWins(self) -> None:
        """A codec spec's own max= wins over --max-frame-length."""
        options = self.parse("--max-frame-length", "64KiB", "--codec", "length:max=100")
        self.assertEqual(options.config.codec.maxFrameLength, 100)

    def test_chatContextBringsItsCodec(self) -> None:
        """--context chat uses line+text unless --codec says otherwise."""
        self.assertEqual(self.parse("--context", "chat").config.codec.spec, "line+text")

    def test_dottedContext(self) -> None:
        """--context takes the dotted name of a context class."""
        options = self.parse("--context", "iocpsvc.apps.EchoContext")
        self.assertEqual(options.config.contextClass.__name__, "EchoContext")

    def test_proxyHeaderTimeout(self) -> None:
        """--proxy-header-timeout sets the limit (10 s unless given)."""
        self.assertEqual(self.parse().config.limits.proxyHeaderTimeout, 10)
        self.assertEqual(self.parse("--proxy-header-timeout", "2.5").config.limits.proxyHeaderTimeout, 2.5)

    def test_badOptions(self) -> None:
        """Bad values are usage errors that name the bad part."""
        from twisted.python.usage import UsageError

        for argv, words in [
            (["--codec", "length:size=5"], "size"),
            (["--codec", "nosuch"], "nosuch"),
            (["--codec", "json"], "framer"),
            (["--max-frame-length", "lots"], "lots"),
            (["--context", "nosuch"], "nosuch"),
            (["--context", "os.path"], "ConnectionContext"),
            (["--port", "bogus:1"], "bogus"),
            (["--proxy-header-timeout", "-1"], "proxy-header-timeout"),
            (["--node-id", "0"], "node-id"),
            (["--cluster", "http://127.0.0.1"], "redis://"),
        ]:
            with self.assertRaises(UsageError) as caught:
                self.parse(*argv)
            self.assertIn(words, str(caught.exception))


class WorkerOptionsTests(SynchronousTestCase):
    """The worker options."""

    def test_auto(self) -> None:
        """--workers auto is the number of cores this process may use."""
        options = Options()
        options.parseOptions(["--workers", "auto"])
        self.assertEqual(options.config.workerCount, availableCores())

    def test_workerTimeout(self) -> None:
        """--worker-timeout: 30 s unless given; 0 turns the watchdog off."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.config.workerTimeout, 30)
        options = Options()
        options.parseOptions(["--worker-timeout", "0"])
        self.assertEqual(options.config.workerTimeout, 0)

    def test_badValues(self) -> None:
        """Bad counts, modes and listeners that cannot be shared are usage errors."""
        from twisted.python.usage import UsageError

        for args in (
            ["--workers", "0"],
            ["--workers", "two"],
            ["--workers", "2", "--worker-sockets", "magic"],
            ["--workers", "2", "--port", "unix:/tmp/iocpsvc-test.sock"],
        ):
            self.assertRaises(UsageError, Options().parseOptions, args)


class LimitOptionsTests(SynchronousTestCase):
    """The hardening options of twistd iocpsvc."""

    def test_limitsFromOptions(self) -> None:
        """Each option lands in ServerLimits."""
        options = Options()
        options.parseOptions(
            [
                "--max-connections=100",
                "--idle-timeout=30",
                "--no-keepalive",
                "--write-high-water=16KiB",
                "--max-pending-write=1MiB",
                "--max-pending-objects=8",
                "--close-timeout=3",
                "--allow=10.0.0.0/8",
                "--allow=::1",
                "--deny=10.1.0.0/16",
            ]
        )
        limits = options.config.limits
        self.assertEqual(
            (
                limits.maxConnections,
                limits.idleTimeout,
                limits.keepAlive,
                limits.writeHighWater,
                limits.maxPendingWrite,
                limits.maxPendingObjects,
                limits.closeTimeout,
            ),
            (100, 30, False, 16384, 1048576, 8, 3),
        )
        self.assertEqual([str(n) for n in limits.allow], ["10.0.0.0/8", "::1/128"])
        self.assertEqual([str(n) for n in limits.deny], ["10.1.0.0/16"])

    def test_defaults(self) -> None:
        """
        Defaults: idle 300 s, keep-alive on, 64 KiB; max pending write
        derived from the codec's largest frame: 4 MiB for the default
        codec (1 MiB frames), 11 MiB for diocp (10 MiB frames).
        """
        options = Options()
        options.parseOptions([])
        limits = options.config.limits
        self.assertEqual(
            (limits.idleTimeout, limits.keepAlive, limits.writeHighWater, limits.maxPendingWrite),
            (300, True, 65536, None),
        )
        self.assertEqual(limits.pendingWriteLimit(options.config.codec.maxFrameLength), 4 * 1024 * 1024)
        options = Options()
        options.parseOptions(["--codec", "diocp"])
        self.assertEqual(
            options.config.limits.pendingWriteLimit(options.config.codec.maxFrameLength), 11 * 1024 * 1024
        )
        self.assertEqual(options.config.limits.maxPendingObjectBytes, 1024 * 1024)

    def test_badValues(self) -> None:
        """Bad limit values are usage errors naming the option."""
        from twisted.python.usage import UsageError

        for argv, words in [
            (["--max-connections=0"], "max-connections"),
            (["--idle-timeout=soon"], "idle-timeout"),
            (["--write-high-water=2MiB", "--max-pending-write=1MiB"], "--max-pending-write '1MiB'"),
            (["--deny=300.1.1.1"], "300.1.1.1"),
        ]:
            with self.assertRaises(UsageError) as caught:
                Options().parseOptions(argv)
            self.assertIn(words, str(caught.exception))


class MonitorOptionsTests(SynchronousTestCase):
    """--monitor and --stats-interval."""

    def test_defaults(self) -> None:
        """By default the monitor listens on 127.0.0.1:9984 and logs every minute."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options.config.monitor, "tcp:9984:interface=127.0.0.1")
        self.assertEqual(options.config.statsInterval, 60)

    def test_none(self) -> None:
        """--monitor none turns it off."""
        options = Options()
        options.parseOptions(["--monitor", "none"])
        self.assertIsNone(options.config.monitor)

    def test_bad(self) -> None:
        """A bad endpoint or interval is a usage error."""
        from twisted.python.usage import UsageError

        self.assertRaises(UsageError, Options().parseOptions, ["--monitor", "bogus:1"])
        self.assertRaises(UsageError, Options().parseOptions, ["--stats-interval", "-1"])


class ConfigTests(SynchronousTestCase):
    """What the options give the assembly."""

    def test_frozen(self) -> None:
        """The configuration cannot be changed once parsed."""
        options = Options()
        options.parseOptions(["--port", "tcp:0", "--workers", "2"])
        config = options.config
        self.assertEqual((config.ports, config.workerCount, config.isParent), (("tcp:0",), 2, True))
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, config, "workerCount", 3)

    def test_argumentsKeptForWorkers(self) -> None:
        """The arguments as given are kept, for the workers to be started with."""
        options = Options()
        arguments = ["--port", "tcp:0", "--codec", "line"]
        options.parseOptions(arguments)
        self.assertEqual(options.config.arguments, tuple(arguments))


class UnitTests(SynchronousTestCase):
    """Durations and sizes with units."""

    def test_durations(self) -> None:
        """Duration options take seconds or a unit: ms, s, m, h."""
        options = Options()
        options.parseOptions(
            ["--idle-timeout", "5m", "--close-timeout", "1.5s", "--monitor-timeout", "250ms"]
        )
        config = options.config
        self.assertEqual(
            (config.limits.idleTimeout, config.limits.closeTimeout, config.monitorTimeout), (300, 1.5, 0.25)
        )

    def test_badDuration(self) -> None:
        """A duration that is not one is a usage error naming the option."""
        from twisted.python.usage import UsageError

        error = self.assertRaises(UsageError, Options().parseOptions, ["--idle-timeout", "5 weeks"])
        self.assertIn("--idle-timeout", str(error))
