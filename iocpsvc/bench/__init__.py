"""
The load tool: N connections, K frames in flight on each, against an echo
server (the default C{twistd iocpsvc}), for a fixed time; every echoed byte
is verified, and the result is frames/s, MB/s, latency percentiles and
errors::

    python -m iocpsvc.bench --port 9983 --connections 100 --in-flight 32 \\
        --size 64 --duration 10
    iocpsvc-bench --codec line --connections 5000 --processes 4 --json

It must cost far less CPU per frame than the server it measures, so the hot
path never decodes.  Every connection sends the same wire frame (a payload
of C{--size} bytes framed once, at start, by the C{--codec} encoder) over
and over, so the byte stream it must get back is that frame repeated:
each read is compared, with one C{bytes} comparison, against a precomputed
block of repeated frames at the offset where the stream stands::

    block (frame repeated, >= 64 KiB + one frame, built once)
    +---------+---------+---------+---------+---------+-- ...
    | frame   | frame   | frame   | frame   | frame   |
    +---------+---------+---------+---------+---------+-- ...
         ^ position = bytes received % frame size
         [ data of this read, compared with block[position:position+len] ]

Whole frames completed by a read are counted, their latencies recorded (one
timestamp per write, however many frames it carried), and as many new
frames are sent in one write, which keeps K in flight.  Payloads differ
between connections (64 KiB of memory per variant, up to 256 variants), so
bytes crossing between connections are caught too.

A run has phases: connecting (at most C{--connect-batch} connection
attempts pending at once, so the server's listen backlog is not overrun),
warm-up (not measured), measuring (C{--duration} seconds), draining (no new
frames; wait up to C{--drain-timeout} for outstanding echoes), closing.
It always ends: each phase has a deadline.

With C{--processes P} the parent starts P worker processes (this module with
C{--worker}), each with its share of the connections.  A worker writes one
JSON object per line to its stdout -- C{connected}, C{progress} every
second, and its C{result} with the latency histogram -- and starts its
warm-up when the parent writes C{go} (once every worker has connected), so
their measured windows line up.  The parent merges the results.

Figures: C{frames} and C{bytes} are frames echoed back and their wire bytes
during the measured window; latency is from the write of a frame to the
arrival of its last echoed byte (with K frames in flight, so it includes
queueing behind the others); C{client_cpu_seconds} is the CPU time (user +
system) the tool's processes used during the measured window.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from twisted.python.failure import Failure

from iocpsvc.bench.child import runChild
from iocpsvc.bench.histogram import LatencyHistogram
from iocpsvc.bench.load import EchoLoadProtocol, LoadRun, cpuSeconds, runLoad
from iocpsvc.bench.patterns import FramePattern, FramePatterns
from iocpsvc.bench.processes import runProcesses
from iocpsvc.bench.report import (
    CLOSED,
    CONNECT,
    ERROR_KINDS,
    MAX_ERROR_EXAMPLES,
    MISMATCH,
    TIMEOUT,
    WORKER,
    ProcessResult,
    formatReport,
    makeReport,
)
from iocpsvc.bench.settings import DEFAULT_HOST, DEFAULT_PORT, LoadSettings
from iocpsvc.codecs import parseSize

__all__ = [
    "CLOSED",
    "CONNECT",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "ERROR_KINDS",
    "MAX_ERROR_EXAMPLES",
    "MISMATCH",
    "TIMEOUT",
    "WORKER",
    "EchoLoadProtocol",
    "FramePattern",
    "FramePatterns",
    "LatencyHistogram",
    "LoadRun",
    "LoadSettings",
    "ProcessResult",
    "cpuSeconds",
    "formatReport",
    "main",
    "makeParser",
    "makeReport",
    "printProgress",
    "runLoad",
    "runProcesses",
]

# The command line.


def _positiveFloat(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, not {text}")
    return value


def _nonNegativeFloat(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
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
    add("-d", "--duration", type=_positiveFloat, default=10.0, help="seconds measured (default %(default)s)")
    add(
        "-w",
        "--warmup",
        type=_nonNegativeFloat,
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
        type=_positiveFloat,
        default=30.0,
        help="seconds to open every connection (default %(default)s)",
    )
    add(
        "--drain-timeout",
        type=_nonNegativeFloat,
        default=5.0,
        help="seconds to wait for outstanding echoes at the end (default %(default)s)",
    )
    add("--progress-interval", type=_positiveFloat, default=1.0, help=argparse.SUPPRESS)
    add("--json", action="store_true", help="print the result as one JSON object")
    add("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    # Worker mode (started by the parent of --processes).
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
    from iocpsvc.limits import RESERVED_FILES, raiseOpenFilesLimit

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
