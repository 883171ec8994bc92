"""
iocpsvc side by side with the peers a Python user would otherwise write, in
one run, in interleaved rounds on the same machine:

- iocpsvc: C{twistd iocpsvc} with its default options (length codec, echo),
  on the compiled hot path when it is built (C{iocpsvc.accel});
- iocpsvc-pure: the same, forced to pure Python (C{IOCPSVC_NO_EXTENSIONS=1});
- iocpsvc-uvloop: iocpsvc with its default options on the uvloop reactor
  (C{twistd -r uvloop iocpsvc}: Twisted's asyncio reactor on uvloop's
  event loop), with whatever transports iocpsvc uses under it;
- int32: an echo on Twisted's own C{Int32StringReceiver};
- raw: a raw Twisted C{Protocol} echoing bytes (no framing: the ceiling);
- asyncio: a hand-written length-framed C{asyncio.Protocol} echo on the
  standard library's event loop;
- uvloop: the same protocol on uvloop.

(The peers are in L{benchmarks.peers}.)  Where the accelerator is not
built, iocpsvc and iocpsvc-pure run the same code; the table says which
implementation each ran.

Each scenario is loaded by C{python -m iocpsvc.bench}; each server's CPU
seconds come from its own accounting (/proc/PID/stat) and its peak RSS from
/proc/PID/status (VmHWM).  Reported: medians over the rounds, and ratios to
the peers; ratios and CPU per frame mean something on a noisy machine where
absolute rates do not.

    python -m benchmarks.compare                        # all scenarios, 3 rounds
    python -m benchmarks.compare --scenario pipelined --rounds 5
    python -m benchmarks.compare --out docs/benchmarks  # writes .md and .png
    python -m benchmarks.compare --against ../before    # also iocpsvc from another checkout
    python -m benchmarks.compare --against ../before --no-peers --rounds 6
    python -m benchmarks.compare --servers iocpsvc,iocpsvc-pure,uvloop --scenario pipelined
    python -m benchmarks.compare --from-markdown docs/benchmarks.md --out docs/benchmarks
                                        # the docs' tables and chart again, from the medians

The results are followed by "targets" tables: issue 12's (pipelined: each
iocpsvc server's CPU per frame and throughput as fractions of int32's,
asyncio's and uvloop's) and issue 13's (iocpsvc-uvloop beside the uvloop
peer and raw Twisted in request-response, and beside iocpsvc on the
default reactor in pipelined and large-frames), each from the scenarios
that ran.

With C{--memory}, instead of the scenarios: each server's memory per
connection (issue 13), its peak RSS with 15,000 echoing connections (1
frame in flight, 64 bytes) minus its peak RSS with 100, over the 14,900
connections between, in fresh server processes, interleaved like the
scenarios; beside whole-process peak RSS, the ratio to the asyncio peer
and issue 13's target for iocpsvc-uvloop (at most 1.1x asyncio's):

    python -m benchmarks.compare --memory --rounds 1 --duration 3
    python -m benchmarks.compare --memory --out docs/benchmarks   # writes docs/benchmarks-memory.md

With C{--against DIR}, the same rounds also run iocpsvc from the checkout
in DIR (as C{iocpsvc@DIR}), interleaved with this one, and a last table
gives this checkout's figures relative to it: a change on the hot path
measured side by side with the commit before it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

SERVERS = ("iocpsvc", "iocpsvc-pure", "iocpsvc-uvloop", "int32", "raw", "asyncio", "uvloop")

# Server kind -> the reactor its child installs (C{twistd -r NAME}); the others use the default.
REACTORS = {"iocpsvc-uvloop": "uvloop"}

NO_EXTENSIONS = "IOCPSVC_NO_EXTENSIONS"
"""Set to 1 in iocpsvc-pure's environment: iocpsvc.accel then runs pure Python."""

# The ratio columns of the table: peer -> whether its CPU ratio is shown too.
RATIO_PEERS = {"int32": True, "asyncio": True, "uvloop": True, "raw": False}

# Issue 12's goals, pipelined, for every iocpsvc server:
# (measure, the peer it is relative to, target, True when the ratio must be at most the target)
TARGETS = [
    ("server CPU per frame", "int32", 0.333, True),
    ("server CPU per frame", "uvloop", 0.8, True),
    ("throughput", "int32", 3.0, False),
    ("throughput", "asyncio", 1.2, False),
]
TARGET_SCENARIO = "pipelined"

UVLOOP_KIND = "iocpsvc-uvloop"
EITHER = "throughput or server CPU per frame"
"""
A measure met when the throughput ratio is at least the target or the CPU
per frame ratio at most it: "not slower" on a machine where one of the two
is noise.
"""

# Issue 13's goals for iocpsvc on the uvloop reactor: (scenario, measure,
# relative to, target, True when at most / False when at least / None for EITHER).
UVLOOP_TARGETS: list[tuple[str, str, str, float, bool | None]] = [
    ("request-response", "throughput", "uvloop", 1.0, False),
    ("request-response", "throughput", "raw", 2.0, False),
    ("request-response", "server CPU per frame", "uvloop", 1.1, True),
    ("pipelined", EITHER, "iocpsvc", 1.0, None),
    ("large-frames", EITHER, "iocpsvc", 1.0, None),
]

# name -> (bench arguments, description)
SCENARIOS: dict[str, tuple[list[str], str]] = {
    "pipelined": (
        ["--connections", "100", "--in-flight", "32", "--size", "64"],
        "100 connections x 32 frames in flight, 64-byte frames",
    ),
    "request-response": (
        ["--connections", "5000", "--in-flight", "1", "--size", "64"],
        "5,000 connections x 1 frame in flight, 64-byte frames",
    ),
    "large-frames": (
        ["--connections", "50", "--in-flight", "2", "--size", "65536"],
        "50 connections x 2 frames in flight, 64 KiB frames",
    ),
    "many-connections": (
        ["--connections", "15000", "--in-flight", "1", "--size", "64"],
        "15,000 concurrent echoing connections (memory)",
    ),
}

# The memory measurement (--memory): connections at the two ends, the load at each.
MEMORY_FEW, MEMORY_MANY = 100, 15_000
MEMORY_LOAD = ["--in-flight", "1", "--size", "64"]
MEMORY_SERVERS = ("iocpsvc", "iocpsvc-uvloop", "raw", "asyncio", "uvloop")
MEMORY_BASE = "asyncio"
MEMORY_TARGET = (UVLOOP_KIND, 1.1)  # its KiB per connection at most this times MEMORY_BASE's

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peakRSS(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def serverEnvironment(kind: str) -> tuple[dict[str, str], str]:
    """The environment and working tree a server of this kind runs with."""
    tree = os.getcwd()
    if kind.startswith("iocpsvc@"):
        tree = os.path.abspath(kind.partition("@")[2])  # another checkout's iocpsvc, its own benchmarks
    env = dict(os.environ, PYTHONPATH=tree + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # iocpsvc runs compiled when it can, whatever this process was started with.
    env.pop(NO_EXTENSIONS, None)
    if kind == "iocpsvc-pure":
        env[NO_EXTENSIONS] = "1"
    return env, tree


_implementations: dict[str, str] = {}


def implementationOf(kind: str) -> str:
    """
    What hot path a server of this kind runs: C{iocpsvc.accel}'s answer in
    the server's own environment ('compiled' or 'python'), or '' for a peer.
    """
    if not kind.startswith("iocpsvc"):
        return ""
    if kind not in _implementations:
        env, tree = serverEnvironment(kind)
        probe = (
            "try:\n"
            "    import iocpsvc.accel as a\n"
            "except ImportError:\n"
            "    print('python (no iocpsvc.accel)')\n"
            "else:\n"
            "    i = getattr(a, 'IMPLEMENTATION', None) or a.implementation()\n"
            "    print(i() if callable(i) else i)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tree, timeout=60
        )
        _implementations[kind] = result.stdout.strip() or f"unknown ({result.stderr.strip()[-200:]})"
    return _implementations[kind]


def startServer(kind: str) -> tuple[subprocess.Popen[str], int]:
    """Start a server of this kind on a free loopback port; its process and port."""
    process, port, _ = startServerWithReactor(kind)
    return process, port


def startServerWithReactor(kind: str) -> tuple[subprocess.Popen[str], int, str]:
    """
    L{startServer}, and the reactor the child says it runs (its C{REACTOR}
    line: the reactor's module and its event loop's), or '' for a peer.
    """
    env, tree = serverEnvironment(kind)
    if kind.startswith("iocpsvc"):
        # twistd iocpsvc's own options and service, default options but for
        # the ports (the monitor would otherwise take the fixed port 9984).
        # --port, not --listen: --against runs older checkouts too, which
        # know only --port (still the alias of --listen).
        argv = [
            sys.executable,
            "-m",
            "benchmarks.hostile",
            "--serve",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--monitor",
            "none",
        ]
        if kind in REACTORS:
            argv[4:4] = ["--reactor", REACTORS[kind]]  # installed before the child imports the reactor
    else:
        argv = [sys.executable, "-m", "benchmarks.peers", kind, "0"]
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tree
    )
    assert process.stdout is not None
    reactor = ""
    for line in process.stdout:
        if line.startswith("REACTOR "):
            reactor = line.split(" ", 1)[1].strip()
        if line.startswith("PORT "):
            return process, int(line.split()[1]), reactor
    raise RuntimeError(f"{kind} server did not start")


def runLoad(port: int, benchArgs: list[str], duration: float, processes: int = 1) -> dict[str, Any]:
    """Load 127.0.0.1:C{port} with C{python -m iocpsvc.bench}; its JSON result."""
    argv = [
        sys.executable,
        "-m",
        "iocpsvc.bench",
        "--json",
        "--quiet",
        "--port",
        str(port),
        "--duration",
        str(duration),
        "--warmup",
        "0",
        "--processes",
        str(processes),
        *benchArgs,
    ]
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=duration + 300)
    if result.returncode != 0:
        raise RuntimeError(f"the load tool failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def runOne(kind: str, benchArgs: list[str], duration: float, processes: int) -> dict[str, Any]:
    server, port, reactor = startServerWithReactor(kind)
    try:
        before = cpuSeconds(server.pid)
        load = runLoad(port, benchArgs, duration, processes)
        after = cpuSeconds(server.pid)
        rss = peakRSS(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    frames = load["frames"]
    return {
        "server": kind,
        "implementation": implementationOf(kind),
        "reactor": reactor,
        "connected": load.get("connected"),
        "frames_per_second": load["frames_per_second"],
        "mb_per_second": load["mb_per_second"],
        "latency_ms": load["latency_ms"],
        "errors": load["errors"],
        "frames": frames,
        "server_cpu_seconds": round(after - before, 3),
        "server_cpu_us_per_frame": round((after - before) / frames * 1e6, 3) if frames else None,
        "client_cpu_us_per_frame": load.get("client_cpu_us_per_frame"),
        "peak_rss_mb": round(rss, 1),
    }


def runMemory(
    servers: list[str], rounds: int, duration: float, processes: int, log: Any = None
) -> list[dict[str, Any]]:
    """
    Each server's peak RSS with L{MEMORY_FEW} and with L{MEMORY_MANY}
    echoing connections, each in a fresh server process, interleaved over
    C{rounds}; every run as L{runOne} reports it, with C{connections_asked}.
    """
    runs = []
    for round in range(rounds):
        order = servers[round % len(servers) :] + servers[: round % len(servers)]
        for kind in order:
            for count in (MEMORY_FEW, MEMORY_MANY):
                started = time.monotonic()
                run = runOne(kind, ["--connections", str(count), *MEMORY_LOAD], duration, processes)
                run.update(scenario="memory", round=round, connections_asked=count)
                runs.append(run)
                if log is not None:
                    log(
                        f"  memory round {round + 1} {kind} {count:,} connections: {run['connected']} up, "
                        f"peak RSS {run['peak_rss_mb']} MB ({time.monotonic() - started:.0f} s)"
                    )
    return runs


def summariseMemory(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """
    Server -> medians of its peak RSS (MB) and connections up at each end,
    and its KiB per connection: the difference of the two peak RSS medians
    over the difference of the connections up (14,900 when all came up).
    """
    table: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(r["server"] for r in runs):
        row: dict[str, float] = {}
        for count, name in ((MEMORY_FEW, "few"), (MEMORY_MANY, "many")):
            mine = [r for r in runs if r["server"] == kind and r["connections_asked"] == count]
            row[f"{name}_rss_mb"] = median([r["peak_rss_mb"] for r in mine])
            row[f"{name}_connected"] = median([r.get("connected") or count for r in mine])
        between = row["many_connected"] - row["few_connected"]
        row["kib_per_connection"] = (
            (row["many_rss_mb"] - row["few_rss_mb"]) * 1024 / between if between > 0 else float("nan")
        )
        table[kind] = row
    return table


def memoryMarkdown(table: dict[str, dict[str, float]], rounds: int, duration: float) -> str:
    """The memory-per-connection table, and issue 13's target for it."""
    base = table.get(MEMORY_BASE)
    lines = [
        f"Memory per connection: peak RSS (VmHWM) with {MEMORY_MANY:,} echoing connections minus peak RSS "
        f"with {MEMORY_FEW:,}, over the connections between; fresh server processes, medians of {rounds} "
        f"interleaved rounds of {duration:g} s of echoes (1 frame in flight, 64-byte frames).  "
        "Produced by `python -m benchmarks.compare --memory`.",
        "",
        f"| server | connections up ({MEMORY_FEW:,} / {MEMORY_MANY:,}) | peak RSS MB, {MEMORY_FEW:,} "
        f"| peak RSS MB, {MEMORY_MANY:,} | KiB per connection | vs {MEMORY_BASE} |",
        "|---|---|---|---|---|---|",
    ]
    for kind, row in table.items():
        versus = (
            f"{row['kib_per_connection'] / base['kib_per_connection']:.2f}x"
            if base and kind != MEMORY_BASE and base["kib_per_connection"] > 0
            else ""
        )
        lines.append(
            f"| {kind} | {row['few_connected']:,.0f} / {row['many_connected']:,.0f} "
            f"| {row['few_rss_mb']:.1f} | {row['many_rss_mb']:.1f} | {row['kib_per_connection']:.2f} "
            f"| {versus} |"
        )
    kind, target = MEMORY_TARGET
    if kind in table:
        lines.append("")
        if base and base["kib_per_connection"] > 0:
            value = table[kind]["kib_per_connection"] / base["kib_per_connection"]
            outcome = verdict(value, target, True)
        else:
            outcome = f"({MEMORY_BASE} not run)"
        lines.append(
            f"Target of issue 13: {kind}'s KiB per connection ÷ {MEMORY_BASE}'s ≤ {target:g}: {outcome}"
        )
    return "\n".join(lines) + "\n"


def median(values: list[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for kind in dict.fromkeys(r["server"] for r in runs):
        mine = [r for r in runs if r["server"] == kind]
        if not mine:
            continue
        table[kind] = {
            "frames_per_second": median([r["frames_per_second"] for r in mine]),
            "mb_per_second": median([r["mb_per_second"] for r in mine]),
            "server_cpu_us_per_frame": median([r["server_cpu_us_per_frame"] for r in mine]),
            "client_cpu_us_per_frame": median([r["client_cpu_us_per_frame"] for r in mine]),
            "p50_ms": median([r["latency_ms"]["p50"] for r in mine]),
            "p99_ms": median([r["latency_ms"]["p99"] for r in mine]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
            "errors": sum(sum(r["errors"].values()) if isinstance(r["errors"], dict) else 0 for r in mine),
        }
    return table


def ratio(row: dict[str, float], base: dict[str, float] | None, metric: str) -> float:
    """C{row[metric] / base[metric]}, or NaN when there is no base to divide by."""
    if not base or not base.get(metric):
        return float("nan")
    return row[metric] / base[metric]


def implementations(runs: list[dict[str, Any]]) -> dict[str, str]:
    """
    Server -> the hot path it ran, and on which reactor when it said (only
    servers that report a hot path: iocpsvc's).
    """
    return {
        r["server"]: r["implementation"] + (f" on {r['reactor']}" if r.get("reactor") else "")
        for r in runs
        if r.get("implementation")
    }


def markdown(
    results: dict[str, dict[str, dict[str, float]]],
    rounds: int,
    duration: float,
    ran: dict[str, str] | None = None,
) -> str:
    header = (
        "| scenario | server | frames/s | MB/s | server CPU µs/frame | p50 ms | p99 ms | peak RSS MB | "
        + " | ".join(
            f"vs {peer} (throughput, CPU)" if cpu else f"vs {peer} (throughput)"
            for peer, cpu in RATIO_PEERS.items()
        )
        + " |"
    )
    note = (
        f"Medians of {rounds} interleaved rounds of {duration:g} s each; CPU is the server process's "
        "own (user + system) per frame echoed.  Produced by `python -m benchmarks.compare`."
    )
    if ran:
        note += "  Hot path: " + ", ".join(f"{kind} {how}" for kind, how in ran.items()) + "."
    lines = [note, "", header, "|---" * (8 + len(RATIO_PEERS)) + "|"]
    for scenario, table in results.items():
        for kind, row in table.items():
            cells = []
            for peer, cpu in RATIO_PEERS.items():
                base = table.get(peer)
                if not base or kind == peer:
                    cells.append("")
                elif cpu:
                    cells.append(
                        f"{ratio(row, base, 'frames_per_second'):.2f}x, "
                        f"{ratio(row, base, 'server_cpu_us_per_frame'):.2f}x"
                    )
                else:
                    cells.append(f"{ratio(row, base, 'frames_per_second'):.2f}x")
            lines.append(
                f"| {scenario} | {kind} | {row['frames_per_second']:,.0f} | {row['mb_per_second']:.1f} | "
                f"{row['server_cpu_us_per_frame']:.2f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{row['peak_rss_mb']:.1f} | " + " | ".join(cells) + " |"
            )
    return "\n".join(lines) + "\n"


def verdict(value: float, target: float, atMost: bool) -> str:
    """C{value} to three places and whether it is on the target's side of C{target}."""
    met = value <= target if atMost else value >= target
    return f"{value:.3f} {'met' if met else 'not met'}"


def metricOf(measure: str) -> str:
    return "server_cpu_us_per_frame" if measure.startswith("server CPU") else "frames_per_second"


def targets(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """
    The goals of issues 12 and 13 that the run can judge, from the medians
    (L{targetsOfIssue12}, L{targetsOfIssue13}); empty when it can judge none.
    """
    return "\n".join(text for text in (targetsOfIssue12(results), targetsOfIssue13(results)) if text)


def targetsOfIssue12(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """
    The goals of issue 12 for the pipelined scenario, from the medians: each
    iocpsvc server's ratio to a peer, the target, and whether it is met.
    Empty when the pipelined scenario did not run.
    """
    table = results.get(TARGET_SCENARIO)
    if not table:
        return ""
    mine = [kind for kind in table if kind.startswith("iocpsvc")]
    if not mine:
        return ""
    lines = [
        f"Targets of issue 12 ({TARGET_SCENARIO}, from the medians above; "
        "met = the ratio is on the right side):",
        "",
        "| ratio | target | " + " | ".join(mine) + " |",
        "|---|---|" + "---|" * len(mine),
    ]
    for measure, peer, target, atMost in TARGETS:
        cells = []
        for kind in mine:
            value = ratio(table[kind], table.get(peer), metricOf(measure))
            if value != value:  # NaN: the peer did not run
                cells.append(f"({peer} not run)")
            else:
                cells.append(verdict(value, target, atMost))
        lines.append(
            f"| {measure} ÷ {peer}'s | {'≤' if atMost else '≥'} {target:g} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def targetsOfIssue13(results: dict[str, dict[str, dict[str, float]]]) -> str:
    """
    The goals of issue 13 for iocpsvc on the uvloop reactor, per scenario,
    from the medians: its ratio to the server named, the target, and whether
    it is met.  Only the scenarios it ran in; empty when it ran in none.
    """
    rows = []
    for scenario, measure, peer, target, atMost in UVLOOP_TARGETS:
        table = results.get(scenario) or {}
        row = table.get(UVLOOP_KIND)
        if row is None:
            continue
        base = table.get(peer)
        if atMost is None:
            condition = f"≥ {target:g} or ≤ {target:g}"
            ratioText = f"throughput ÷ {peer}'s, or server CPU per frame ÷ {peer}'s"
        else:
            condition = f"{'≤' if atMost else '≥'} {target:g}"
            ratioText = f"{measure} ÷ {peer}'s"
        if not base:
            cell = f"({peer} not run)"
        elif atMost is None:
            throughput = ratio(row, base, "frames_per_second")
            cpu = ratio(row, base, "server_cpu_us_per_frame")
            met = throughput >= target or cpu <= target
            cell = f"{throughput:.3f}, {cpu:.3f} {'met' if met else 'not met'}"
        else:
            cell = verdict(ratio(row, base, metricOf(measure)), target, atMost)
        rows.append(f"| {scenario} | {ratioText} | {condition} | {cell} |")
    if not rows:
        return ""
    return (
        "\n".join(
            [
                f"Targets of issue 13 ({UVLOOP_KIND}, from the medians above; "
                "met = the ratio is on the right side):",
                "",
                f"| scenario | ratio | target | {UVLOOP_KIND} |",
                "|---|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def sideBySide(results: dict[str, dict[str, dict[str, float]]], other: str) -> str:
    """This checkout's iocpsvc relative to C{other}'s, per scenario (medians)."""
    lines = [
        f"| scenario | throughput, this / {other} | server CPU per frame, this / {other} "
        "| p99, this / other |",
        "|---|---|---|---|",
    ]
    for scenario, table in results.items():
        mine, theirs = table.get("iocpsvc"), table.get(other)
        if not mine or not theirs:
            continue
        lines.append(
            f"| {scenario} | {mine['frames_per_second'] / theirs['frames_per_second']:.3f} "
            f"| {mine['server_cpu_us_per_frame'] / theirs['server_cpu_us_per_frame']:.3f} "
            f"| {mine['p99_ms'] / theirs['p99_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


Published = dict[str, dict[str, dict[str, str]]]
"""A markdown results table's ratio cells: scenario -> server -> peer -> cell."""

MISSING = "–"
"""
A table cell with nothing to show (a server's ratio to itself, a peer that
did not run): an en dash, since a reST list-table cell that reads C{- -}
would be a bullet list.
"""


def ratioCell(
    row: dict[str, float], base: dict[str, float] | None, cpu: bool, published: str | None = None
) -> str:
    """
    C{throughput / CPU} ratios to C{base} for the reST table, or L{MISSING};
    C{published} is the markdown table's own cell for them (C{"3.74x, 0.27x"}),
    used as it is when given.
    """
    if published is not None:
        return published.replace("x, ", " / ").removesuffix("x") or MISSING
    if not base or row is base:
        return MISSING
    text = f"{ratio(row, base, 'frames_per_second'):.2f}"
    if cpu:
        text += f" / {ratio(row, base, 'server_cpu_us_per_frame'):.2f}"
    return text


def restructuredText(
    results: dict[str, dict[str, dict[str, float]]],
    rounds: int,
    duration: float,
    ran: dict[str, str] | None = None,
    published: Published | None = None,
) -> str:
    """
    The results as reST for the Sphinx docs: one list-table per scenario,
    narrower than L{markdown}'s one table (no MB/s, p50 and p99 in one
    column, each ratio cell C{throughput / CPU}), so that it fits a page.
    C{published}: the ratio cells of a markdown table (scenario -> server ->
    peer -> cell, from L{resultsFromMarkdown}), shown instead of ratios of
    its rounded figures.
    """
    note = markdown(results, rounds, duration, ran).splitlines()[0].replace("`", "``")
    out = [
        ".. Written by python -m benchmarks.compare; do not edit.",
        "",
        note,
        "Each ratio cell is the server's throughput ÷ the peer's, then its server CPU per frame "
        "÷ the peer's (below 1 is less CPU); the raw echo's is throughput only.  "
        "MB/s is in ``docs/benchmarks.md``.",
    ]
    for scenario, table in results.items():
        description = SCENARIOS[scenario][1] if scenario in SCENARIOS else ""
        caption = f"{scenario}: {description}" if description else scenario
        out += [
            "",
            f".. list-table:: {caption}",
            "   :header-rows: 1",
            "   :class: figures bench-results",
            f"   :widths: 15 12 10 15 8 {' '.join('11' if cpu else '7' for cpu in RATIO_PEERS.values())}",
            "",
            "   * - server",
            "     - frames/s",
            "     - CPU µs/frame",
            "     - p50 / p99 ms",
            "     - peak RSS MB",
        ]
        out += [f"     - ÷\u00a0{peer}" for peer in RATIO_PEERS]  # no break after the sign
        for kind, row in table.items():
            out += [
                f"   * - {kind}",
                f"     - {row['frames_per_second']:,.0f}",
                f"     - {row['server_cpu_us_per_frame']:.2f}",
                f"     - {row['p50_ms']:.1f} / {row['p99_ms']:.1f}",
                f"     - {row['peak_rss_mb']:.1f}",
            ]
            cells = (published or {}).get(scenario, {}).get(kind, {})
            out += [
                f"     - {ratioCell(row, table.get(peer), cpu, cells.get(peer))}"
                for peer, cpu in RATIO_PEERS.items()
            ]
    return "\n".join(out) + "\n"


def resultsFromMarkdown(
    text: str,
) -> tuple[dict[str, dict[str, dict[str, float]]], int, float, dict[str, str], Published]:
    """
    The medians, rounds, duration and hot paths back from a results table
    that L{markdown} wrote (C{docs/benchmarks.md}), and its ratio cells
    (scenario -> server -> peer -> cell): to draw the docs' table and chart
    again where the raw runs are not kept.  Figures come back rounded as the
    table prints them, which is why its ratio cells are kept as they are.
    """
    import re

    results: dict[str, dict[str, dict[str, float]]] = {}
    published: Published = {}
    rounds, duration, ran = 0, 0.0, {}
    for line in text.splitlines():
        found = re.match(r"Medians of (\d+) interleaved rounds of ([\d.]+) s each", line)
        if found:
            rounds, duration = int(found.group(1)), float(found.group(2))
            hot = re.search(r"Hot path: (.*)\.$", line)
            if hot:
                for part in hot.group(1).split(", "):
                    kind, _, how = part.partition(" ")
                    ran[kind] = how
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) < 8 or cells[0] == "scenario":
            continue
        scenario, kind = cells[0], cells[1]
        results.setdefault(scenario, {})[kind] = {
            "frames_per_second": float(cells[2].replace(",", "")),
            "mb_per_second": float(cells[3]),
            "server_cpu_us_per_frame": float(cells[4]),
            "client_cpu_us_per_frame": float("nan"),
            "p50_ms": float(cells[5]),
            "p99_ms": float(cells[6]),
            "peak_rss_mb": float(cells[7]),
            "errors": 0,
        }
        published.setdefault(scenario, {})[kind] = dict(zip(RATIO_PEERS, cells[8:], strict=False))
    if not results or not rounds:
        raise ValueError("no results table written by benchmarks.compare found")
    return results, rounds, duration, ran, published


def writeOutputs(
    out: str,
    scenarios: list[str],
    results: dict[str, Any],
    rounds: int,
    duration: float,
    ran: dict[str, str] | None = None,
) -> None:
    """OUT.md (the full table and the targets), and the docs' views of it (L{writeViews})."""
    text = markdown(results, rounds, duration, ran)
    goals = targets(results)
    with open(out + ".md", "w") as f:
        f.write("# Benchmarks: iocpsvc beside plain Twisted, asyncio and uvloop\n\n")
        for scenario in scenarios:
            f.write(f"- **{scenario}**: {SCENARIOS[scenario][1]}\n")
        f.write("\n" + text + (f"\n{goals}" if goals else "") + f"\n![chart]({os.path.basename(out)}.png)\n")
    writeViews(out, results, rounds, duration, ran)


def writeViews(
    out: str,
    results: dict[str, Any],
    rounds: int,
    duration: float,
    ran: dict[str, str] | None = None,
    published: Published | None = None,
) -> None:
    """What the performance page shows: OUT-results.rst (the tables) and OUT.png (the chart)."""
    with open(out + "-results.rst", "w", encoding="utf-8") as f:
        f.write(restructuredText(results, rounds, duration, ran, published))
    chart(results, out + ".png")


COLORS = {
    "iocpsvc": "#2e7d32",
    "iocpsvc-pure": "#81c784",
    "iocpsvc-uvloop": "#00838f",
    "int32": "#c62828",
    "raw": "#1565c0",
    "asyncio": "#6a1b9a",
    "uvloop": "#ef6c00",
}


CHART_PANELS = [
    ("frames_per_second", "Throughput relative to int32 (higher is better)"),
    ("server_cpu_us_per_frame", "Server CPU per frame relative to int32 (lower is better)"),
    ("peak_rss_mb", "Server peak RSS, MB"),
]


def chart(results: dict[str, dict[str, dict[str, float]]], path: str) -> None:
    """
    The chart on the performance page: one panel per measure, stacked, each
    with a group of bars per scenario (only the servers that ran in it), the
    value on every bar, and one legend above; sized for a page's column.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(results)
    present = {kind for table in results.values() for kind in table}
    kinds = [kind for kind in SERVERS if kind in present] + sorted(present - set(SERVERS))
    fig, axes = plt.subplots(len(CHART_PANELS), 1, figsize=(7.5, 10.5))
    group = 0.84
    for axis, (metric, title) in zip(axes, CHART_PANELS, strict=True):
        top = 0.0
        for position, scenario in enumerate(scenarios):
            table = results[scenario]
            base = table.get("int32")
            here = [kind for kind in kinds if kind in table]
            width = group / max(1, len(here))
            for index, kind in enumerate(here):
                row = table[kind]
                if metric == "peak_rss_mb":
                    value, label = row[metric], f"{row[metric]:.0f}"
                elif base and base[metric]:
                    value = row[metric] / base[metric]
                    label = f"{value:.2f}"
                else:
                    continue
                x = position + (index - (len(here) - 1) / 2) * width
                axis.bar(x, value, width * 0.92, color=COLORS.get(kind, "#757575"))
                axis.text(x, value, label, ha="center", va="bottom", fontsize=9, rotation=90)
                top = max(top, value)
        axis.set_ylim(0, top * 1.25 or 1)
        axis.set_xticks(range(len(scenarios)))
        axis.set_xticklabels(scenarios, fontsize=11)
        axis.tick_params(axis="y", labelsize=10)
        axis.set_title(title, fontsize=11.5, loc="left")
        axis.spines[["top", "right"]].set_visible(False)
        if metric != "peak_rss_mb":
            axis.axhline(1.0, color="#555", linewidth=0.8, linestyle="--")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS.get(kind, "#757575")) for kind in kinds]
    columns = len(kinds) if len(kinds) <= 6 else 4
    fig.legend(handles, kinds, loc="upper center", ncol=columns, fontsize=10.5, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.965 if columns == len(kinds) else 0.94), h_pad=2.0)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def printProgress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def writeMemory(runs: list[dict[str, Any]], rounds: int, duration: float, out: str | None) -> None:
    """Print the memory table; with C{out}, also write it to OUT-memory.md."""
    text = memoryMarkdown(summariseMemory(runs), rounds, duration)
    print(text)
    if out:
        with open(out + "-memory.md", "w") as f:
            f.write("# Benchmarks: memory per connection\n\n" + text)


def parseServers(text: str) -> list[str]:
    """C{--servers}: a comma-separated subset of L{SERVERS}, in the order given."""
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SERVERS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown server(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SERVERS)}"
        )
    return list(dict.fromkeys(chosen))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=1, help="load tool processes")
    parser.add_argument(
        "--servers",
        type=parseServers,
        help=f"comma-separated subset of the servers to run (default: all of {','.join(SERVERS)})",
    )
    parser.add_argument("--out", help="write OUT.md and OUT.png (e.g. docs/benchmarks)")
    parser.add_argument("--raw-json", help="also write every run to this JSON file")
    parser.add_argument("--from-json", help="render the outputs from a --raw-json file instead of running")
    parser.add_argument(
        "--from-markdown",
        help="draw OUT-results.rst and OUT.png again from the medians of a results table written by "
        "--out (e.g. docs/benchmarks.md), instead of running; the table itself is left as it is",
    )
    parser.add_argument("--against", help="also run iocpsvc from the checkout in this directory")
    parser.add_argument(
        "--no-peers", action="store_true", help="with --against: only the two iocpsvc servers, more rounds"
    )
    parser.add_argument(
        "--memory",
        action="store_true",
        help=f"measure memory per connection ({MEMORY_FEW:,} and {MEMORY_MANY:,} connections) instead "
        f"of the scenarios (default servers: {','.join(MEMORY_SERVERS)})",
    )
    args = parser.parse_args(argv)
    if args.memory and not args.from_json:
        servers = args.servers or list(MEMORY_SERVERS)
        runs = runMemory(servers, args.rounds, args.duration, args.processes, log=printProgress)
        writeMemory(runs, args.rounds, args.duration, args.out)
        if args.raw_json:
            with open(args.raw_json, "w") as f:
                json.dump(runs, f, indent=1)
        return
    servers = args.servers or list(SERVERS)
    if args.against:
        servers = (
            ["iocpsvc", f"iocpsvc@{args.against}"] if args.no_peers else [*servers, f"iocpsvc@{args.against}"]
        )
    scenarios = args.scenario or list(SCENARIOS)
    if args.from_markdown:
        with open(args.from_markdown, encoding="utf-8") as f:
            rendered, rounds, duration, ran, published = resultsFromMarkdown(f.read())
        if not args.out:
            parser.error("--from-markdown needs --out")
        # The markdown table is the record; only the views drawn from it are written.
        writeViews(args.out, rendered, rounds, duration, ran, published)
        print(f"wrote {args.out}-results.rst and {args.out}.png from {args.from_markdown}")
        return
    if args.from_json:
        with open(args.from_json) as f:
            runs = json.load(f)
        memory = [r for r in runs if r["scenario"] == "memory"]
        if memory:
            writeMemory(memory, 1 + max(r["round"] for r in memory), args.duration, args.out)
            runs = [r for r in runs if r["scenario"] != "memory"]
            if not runs:
                return
        scenarios = [s for s in SCENARIOS if any(r["scenario"] == s for r in runs)]
        rendered = {s: summarise([r for r in runs if r["scenario"] == s]) for s in scenarios}
        rounds = 1 + max(r["round"] for r in runs)
        ran = implementations(runs)
        print(markdown(rendered, rounds, args.duration, ran))
        print(targets(rendered))
        if args.out:
            writeOutputs(args.out, scenarios, rendered, rounds, args.duration, ran)
        return
    results: dict[str, dict[str, dict[str, float]]] = {}
    everything: list[dict[str, Any]] = []
    for scenario in scenarios:
        benchArgs, description = SCENARIOS[scenario]
        runs = []
        for round in range(args.rounds):
            # Interleave, rotating the order so no server always goes first.
            order = servers[round % len(servers) :] + servers[: round % len(servers)]
            for kind in order:
                started = time.monotonic()
                run = runOne(kind, benchArgs, args.duration, args.processes)
                run["scenario"] = scenario
                run["round"] = round
                runs.append(run)
                print(
                    f"  {scenario} round {round + 1} {kind}: {run['frames_per_second']:,.0f} frames/s, "
                    f"{run['server_cpu_us_per_frame']} µs CPU/frame, {run['peak_rss_mb']} MB "
                    f"({time.monotonic() - started:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        everything.extend(runs)
        results[scenario] = summarise(runs)
    ran = implementations(everything)
    print(markdown(results, args.rounds, args.duration, ran))
    goals = targets(results)
    if goals:
        print(goals)
    if args.against:
        print(sideBySide(results, f"iocpsvc@{args.against}"))
    if args.out:
        writeOutputs(args.out, scenarios, results, args.rounds, args.duration, ran)
    if args.raw_json:
        with open(args.raw_json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
