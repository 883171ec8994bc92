"""
Tests for L{iocpsvc.tap}: every option of C{twistd iocpsvc}, parsed in
process into its frozen L{iocpsvc.config.ServerConfig}, and the usage
errors of bad values.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.addresses import endpointProblem, splitDescription
from iocpsvc.machine import availableCores
from iocpsvc.tap import HELP_GROUPS, HIDDEN_OPTIONS, Options


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

    def test_reprHidesTheClusterURL(self) -> None:
        """A ServerConfig in a log line or a traceback does not show a Redis password."""
        options = Options()
        options.parseOptions(["--cluster", "redis://app:S3cretPW@127.0.0.1:6379/1"])
        self.assertIn("S3cretPW", options.config.cluster)
        self.assertNotIn("S3cretPW", repr(options.config))


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


class ListenOptionTests(SynchronousTestCase):
    """--listen, Twisted's name for the endpoint option, and --port/-p, its alias."""

    def test_listenAndPortTogether(self) -> None:
        options = Options()
        options.parseOptions(["--listen", "tcp:1", "--port", "tcp:2", "-p", "tcp:3"])
        self.assertEqual(options.config.ports, ("tcp:1", "tcp:2", "tcp:3"))
        self.assertEqual(options.listenOptions, {"tcp:1": "--listen", "tcp:2": "--port", "tcp:3": "--port"})

    def test_errorsNameTheOptionGiven(self) -> None:
        """A bad description is reported under the name it was given with."""
        for option in ("--listen", "--port"):
            with self.assertRaises(UsageError) as caught:
                Options().parseOptions([option, "tcp:x"])
            self.assertTrue(str(caught.exception).startswith(f"{option} 'tcp:x': "), caught.exception)


class HelpTests(SynchronousTestCase):
    """--help: grouped by concern, with defaults; internal options hidden; --version."""

    def test_everyOptionInOneGroup(self) -> None:
        """A new option cannot be left out of --help: each is in exactly one group."""
        options = Options()
        every = {opt.rstrip("=") for opt in options.longOpt}
        grouped = [name for _, names in HELP_GROUPS for name in names]
        self.assertEqual(len(grouped), len(set(grouped)))
        self.assertEqual(set(grouped) | set(HIDDEN_OPTIONS), every)

    def test_text(self) -> None:
        text = Options().getUsage(width=100)
        titles = [line[:-1] for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]
        self.assertEqual(titles, [title for title, _ in HELP_GROUPS])
        self.assertNotIn("worker-of", text)
        self.assertIn("-p, --port=DESC", text)
        self.assertIn("--listen=DESC", text)
        self.assertIn("--idle-timeout=DURATION", text)
        self.assertIn("--write-high-water=SIZE", text)
        flat = " ".join(text.split())
        # Docstrings and help texts read as one paragraph each, defaults at the end.
        self.assertIn("Refuse peers in this network (CIDR); repeatable; wins over --allow.", flat)
        self.assertIn("nothing for this long (0 = off). [default: 5m]", flat)
        self.assertNotIn("--no-keepalive Do not turn TCP keep-alive on for each connection. [default", flat)
        for line in text.splitlines():
            self.assertLessEqual(len(line), 100, line)

    def test_columnsNotANumber(self) -> None:
        """A COLUMNS that is empty or not a number is 80 columns, not a traceback."""
        for columns in ("", "wide"):
            self.patch(os, "environ", dict(os.environ, COLUMNS=columns))
            text = Options().getUsage()
            self.assertLessEqual(max(len(line) for line in text.splitlines() if " " in line.strip()), 95)

    def test_version(self) -> None:
        """--version prints iocpsvc's version (from iocpsvc/_version.py), not Twisted's."""
        import iocpsvc

        output = io.StringIO()
        with contextlib.redirect_stdout(output), self.assertRaises(SystemExit) as caught:
            Options().parseOptions(["--version"])
        self.assertEqual(caught.exception.code, 0)
        self.assertTrue(output.getvalue().startswith(f"iocpsvc {iocpsvc.__version__} (Twisted "))

    def test_oneVersionSource(self) -> None:
        """The package's metadata has the version of iocpsvc/_version.py."""
        from importlib.metadata import version

        import iocpsvc

        self.assertEqual(version("iocpsvc"), iocpsvc.__version__)


class DurationOptionTests(SynchronousTestCase):
    """Every duration option takes units."""

    def test_units(self) -> None:
        for option, field in [
            ("idle-timeout", lambda c: c.limits.idleTimeout),
            ("close-timeout", lambda c: c.limits.closeTimeout),
            ("proxy-header-timeout", lambda c: c.limits.proxyHeaderTimeout),
            ("shutdown-timeout", lambda c: c.shutdownTimeout),
            ("stats-interval", lambda c: c.statsInterval),
            ("monitor-timeout", lambda c: c.monitorTimeout),
            ("worker-timeout", lambda c: c.workerTimeout),
        ]:
            for given, seconds in [("5m", 300), ("500ms", 0.5), ("1h", 3600), ("30", 30), ("1.5s", 1.5)]:
                options = Options()
                options.parseOptions([f"--{option}", given])
                self.assertEqual(field(options.config), seconds, (option, given))

    def test_defaultsUnchanged(self) -> None:
        """The defaults written with units are the same seconds as before."""
        config = Options()
        config.parseOptions([])
        c = config.config
        self.assertEqual(
            (
                c.limits.idleTimeout,
                c.limits.closeTimeout,
                c.shutdownTimeout,
                c.statsInterval,
                c.workerTimeout,
            ),
            (300, 10, 10, 60, 30),
        )


class EndpointProblemTests(SynchronousTestCase):
    """L{endpointProblem}: what is wrong with a description, plainly."""

    def test_fine(self) -> None:
        from twisted.internet.task import Clock

        with tempfile.TemporaryDirectory() as directory:
            for description in [
                "tcp:0",
                "tcp:9983:interface=127.0.0.1",
                "tcp6:0:interface=\\:\\:1",
                "tcp:port=0:backlog=10",
                f"unix:{directory}/a.sock",
                "haproxy:tcp:0",
            ]:
                self.assertIsNone(endpointProblem(Clock(), description), description)

    def test_problems(self) -> None:
        from twisted.internet.task import Clock

        for description, expected in [
            ("tcp:x", "the port must be a number from 0 to 65535, not 'x'"),
            ("tcp:65536", "not '65536'"),
            ("tcp:-1", "not '-1'"),
            ("tcp:\u00b2", "not '\u00b2'"),
            ("systemd:domain=INET:index=7", "systemd endpoints need socket activation"),
            ("tcp6:port=x", "not 'x'"),
            ("tcp", "no port (e.g. tcp:9983"),
            ("ssl:x", "not 'x'"),
            ("unix:", "no socket path"),
            ("unix:/nonexistent/a/b.sock", "no such directory for the socket: /nonexistent/a"),
            ("tcp:0:bogus=1", "unknown parameter 'bogus' for tcp: endpoints"),
            ("nosuch:0", "unknown endpoint type 'nosuch' (examples: tcp:9983"),
            ("ssl:0:privateKey=/nonexistent/key.pem", "cannot read /nonexistent/key.pem: no such file"),
        ]:
            problem = endpointProblem(Clock(), description)
            self.assertIsNotNone(problem, description)
            self.assertIn(expected, str(problem), description)

    def test_splitDescription(self) -> None:
        self.assertEqual(splitDescription("unix:/tmp/a\\:b:mode=600"), ["unix", "/tmp/a:b", "mode=600"])
        self.assertEqual(splitDescription("tcp:0"), ["tcp", "0"])


class ContextCodecTests(SynchronousTestCase):
    """The context and the codec agree at start."""

    def test_chatWithAFramerIsCompleted(self) -> None:
        options = Options()
        options.parseOptions(["--context", "chat", "--codec", "line:max=100"])
        codec = options.config.codec
        self.assertEqual((codec.spec, codec.maxFrameLength), ("line:max=100+text", 100))
        self.assertEqual(codec.note, "+text added: the chat context works in text")

    def test_chatWithJsonRefused(self) -> None:
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--context", "chat", "--codec", "length+json"])
        self.assertIn("use e.g. length+text", str(caught.exception))

    def test_contextsOwnCodecKeepsItsLimit(self) -> None:
        """A context's own Codec object, completed with +text, keeps its largest frame."""
        from iocpsvc.codecs import parseCodecSpec
        from iocpsvc.context import ConnectionContext
        from iocpsvc.factory import agreeWithContext

        class Text(ConnectionContext):
            objectType = str
            defaultCodec = parseCodecSpec("line", 100)

        codec = agreeWithContext(Text.defaultCodec, Text, "Text")
        self.assertEqual((codec.spec, codec.maxFrameLength), ("line+text", 100))

    def test_objectsOtherThanText(self) -> None:
        """A context of dicts runs on +json, not on a bare framer."""
        from iocpsvc.codecs import CodecSpecError, parseCodecSpec
        from iocpsvc.context import ConnectionContext
        from iocpsvc.factory import agreeWithContext

        class Documents(ConnectionContext):
            objectType = dict

        json = parseCodecSpec("line+json")
        self.assertIs(agreeWithContext(json, Documents, "Documents"), json)
        with self.assertRaises(CodecSpecError) as caught:
            agreeWithContext(parseCodecSpec("line"), Documents, "Documents")
        self.assertIn(
            "the Documents context writes and reads dict, and line carries bytes", str(caught.exception)
        )

    def test_echoTakesAnything(self) -> None:
        for spec in ("line", "length+json", "netstring+text"):
            options = Options()
            options.parseOptions(["--codec", spec])
            self.assertEqual(options.config.codec.spec, spec)
            self.assertIsNone(options.config.codec.note)
