"""
The load tool: N connections, K frames in flight on each, against an echo
server (the default C{twistd iocpsvc}), for a fixed time; every echoed byte
is verified, and the result is frames/s, MB/s, latency percentiles and
errors::

    python -m iocpsvc.bench --port 9983 --connections 100 --in-flight 32 \\
        --size 64 --duration 10
    iocpsvc-bench --codec line --connections 5000 --processes 4 --json

It must cost far less CPU per frame than the server it measures, so the hot
path never decodes: it compares the received byte stream with the stream it
sent.  Its parts, each a module, in the order they import each other:

    - L{iocpsvc.bench.cli}: the command line (L{main});
    - L{iocpsvc.bench.processes}: the parent of C{--processes P}, and
      L{iocpsvc.bench.child}: each of its load processes;
    - L{iocpsvc.bench.load}: one process's load run, its connections and
      its phases (L{runLoad});
    - L{iocpsvc.bench.report}: error kinds, each process's result, the
      merged report and its human summary;
    - L{iocpsvc.bench.patterns}: the frames sent and the bytes expected back;
    - L{iocpsvc.bench.histogram}: the latency histogram;
    - L{iocpsvc.bench.settings}: what a run does (L{LoadSettings}).

This package gives their public names.
"""

from __future__ import annotations

from iocpsvc.bench.cli import main, makeParser, printProgress
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
