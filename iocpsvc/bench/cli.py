"""
The load tool's command line, C{iocpsvc-bench} (C{python -m iocpsvc.bench}):
its options, its progress lines on stderr, and L{main}, which runs the load
in this process (L{iocpsvc.bench.load}), in several load processes
(L{iocpsvc.bench.processes}), or, with the hidden C{--worker} option, as
one of those load processes (L{iocpsvc.bench.child}).

Exit status: 0 when the run had no errors, 1 when it had some, 2 for bad
options, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.python.failure import Failure

from iocpsvc.bench.child import runChild
from iocpsvc.bench.load import LoadRun
from iocpsvc.bench.patterns import FramePatterns
from iocpsvc.bench.processes import runProcesses
from iocpsvc.bench.report import formatReport, makeReport
from iocpsvc.bench.settings import DEFAULT_HOST, DEFAULT_PORT, LoadSettings
from iocpsvc.codecs import parseSize
from iocpsvc.limits import RESERVED_FILES
from iocpsvc.machine import raiseOpenFilesLimit
from iocpsvc.units import parseDuration


def _duration(text: str) -> float:
    """Seconds, with or without a unit (C{10}, C{1.5s}, C{500ms}, C{2m}); never negative."""
    try:
        return parseDuration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positiveDuration(text: str) -> float:
    """A L{_duration} above 0."""
    value = _duration(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _positiveInt(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def _size(text: str) -> int:
    try:
        return parseSize(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def makeParser() -> argparse.ArgumentParser:
    """The C{iocpsvc-bench} command line."""
    parser = argparse.ArgumentParser(
        prog="iocpsvc-bench",
        description=(
            "Load an echo server (the default `twistd iocpsvc`) with N connections and K frames in "
            "flight on each; verify every echoed byte; report frames/s, MB/s, latency and errors."
        ),
        epilog=(
            "Exit status: 0 when the run had no errors, 1 when it had some, 2 for bad options. "
            "MB/s counts echoed wire bytes (10^6 bytes per MB). Codecs: the framers of "
            "`twistd iocpsvc --codecs` (length, line, delimiter, fixed, netstring, diocp, hpsocket) "
            "with their spec parameters; the server must use the same one."
        ),
    )
    add = parser.add_argument
    add("--host", default=DEFAULT_HOST, help="the server's address (default %(default)s)")
    add("--port", type=int, default=DEFAULT_PORT, help="the server's port (default %(default)s)")
    add("-c", "--connections", type=_positiveInt, default=100, help="connections (default %(default)s)")
    add(
        "-k",
        "--in-flight",
        type=_positiveInt,
        default=32,
        help="frames in flight per connection (default %(default)s)",
    )
    add(
        "-s",
        "--size",
        type=_size,
        default=64,
        help="payload bytes per frame: 64, 4KiB, ... (default %(default)s)",
    )
    add(
        "--codec",
        default="length",
        help="the framing codec spec, as the server's --codec (default %(default)s)",
    )
    add(
        "-d",
        "--duration",
        type=_positiveDuration,
        default=10.0,
        help="how long to measure: seconds or with a unit (10, 1.5s, 2m) (default %(default)s)",
    )
    add(
        "-w",
        "--warmup",
        type=_duration,
        default=1.0,
        help="seconds before measuring, not counted (default %(default)s)",
    )
    add(
        "-p",
        "--processes",
        type=_positiveInt,
        default=1,
        help="worker processes sharing the connections (default %(default)s)",
    )
    add(
        "--connect-batch",
        type=_positiveInt,
        default=500,
        help="connection attempts pending at once (default %(default)s)",
    )
    add(
        "--connect-timeout",
        type=_positiveDuration,
        default=30.0,
        help="seconds to open every connection (default %(default)s)",
    )
    add(
        "--drain-timeout",
        type=_duration,
        default=5.0,
        help="seconds to wait for outstanding echoes at the end (default %(default)s)",
    )
    add("--progress-interval", type=_positiveDuration, default=1.0, help=argparse.SUPPRESS)
    add("--json", action="store_true", help="print the result as one JSON object")
    add("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    # A load process of --processes (see bench/child.py; the options keep their old names).
    add("--worker", action="store_true", help=argparse.SUPPRESS)
    add("--connection-offset", type=int, default=0, help=argparse.SUPPRESS)
    add("--total-connections", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def printProgress(snapshot: dict[str, Any], previous: list[Any], out: Any = None) -> None:
    """
    Print one progress line to C{out} (stderr): phase, connections up,
    frames/s since the previous line, errors.  C{previous} carries
    C{[elapsed, frames, rate]} between calls; a line that comes less than
    half a second after the previous one (a phase change) repeats its rate.
    """
    out = out or sys.stderr
    elapsed, frames = snapshot["elapsed"], snapshot["frames"]
    lastElapsed, lastFrames, rate = previous or (0.0, 0, 0.0)
    if elapsed - lastElapsed >= 0.5:
        rate = (frames - lastFrames) / (elapsed - lastElapsed)
        previous[:] = [elapsed, frames, rate]
    elif not previous:
        previous[:] = [lastElapsed, lastFrames, rate]
    out.write(
        f"[{elapsed:6.1f}s] {snapshot['phase']:<10} {snapshot['connected']:>6}/{snapshot['connections']} "
        f"connected  {rate:>12,.0f} frames/s  {snapshot['errors']} errors\n"
    )
    out.flush()


def main(argv: list[str] | None = None) -> int:
    """Run C{iocpsvc-bench}; return the exit status."""
    parser = makeParser()
    args = parser.parse_args(argv)
    try:
        settings = LoadSettings(
            host=args.host,
            port=args.port,
            connections=args.connections,
            inFlight=args.in_flight,
            size=args.size,
            codec=args.codec,
            duration=args.duration,
            warmup=args.warmup,
            drainTimeout=args.drain_timeout,
            connectTimeout=args.connect_timeout,
            connectBatch=args.connect_batch,
            progressInterval=args.progress_interval,
        )
        patterns = FramePatterns(
            settings.codec, settings.size, args.total_connections or settings.connections
        )
    except ValueError as e:
        parser.error(str(e))
    limits = raiseOpenFilesLimit()
    perProcess = -(-settings.connections // args.processes)
    if limits is not None and perProcess + RESERVED_FILES > limits[1] and not args.worker:
        sys.stderr.write(
            f"iocpsvc-bench: warning: {perProcess} connections per process, but the open-files "
            f"limit is {limits[1]}; raise it (ulimit -n) or use more --processes\n"
        )
    if args.worker:
        return runChild(settings, patterns, args.connection_offset)

    # Imported here, not with the module: importing the reactor installs the
    # default one, which whoever imports this package (a test, a program with
    # its own reactor) may not want.
    from twisted.internet import reactor

    previous: list[Any] = []
    progress = None if args.quiet else (lambda snapshot: printProgress(snapshot, previous))
    if args.processes == 1:
        run = LoadRun(reactor, settings, progress=progress, patterns=patterns)
        d = run.start().addCallback(lambda result: makeReport(settings, [result], wireSize=patterns.wireSize))
    else:
        d = runProcesses(reactor, settings, args.processes, progress, wireSize=patterns.wireSize)
    outcome: list[Any] = []

    def stop(result: Any) -> None:
        outcome.append(result)
        reactor.stop()

    d.addBoth(stop)
    reactor.run()
    if not outcome:  # the reactor was stopped (Ctrl-C) before the run ended
        sys.stderr.write("iocpsvc-bench: interrupted\n")
        return 130
    report = outcome[0]
    if isinstance(report, Failure):
        sys.stderr.write(report.getTraceback())
        return 1
    print(json.dumps(report) if args.json else formatReport(report))
    return 1 if report["errors"] else 0
