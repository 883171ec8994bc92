"""
Worker processes, measured: how evenly each way of sharing a listening
socket spreads connections, and what a second worker buys on this machine.

1. Spread: C{twistd iocpsvc --workers 2} with C{--worker-sockets reuseport}
   and with C{shared}; connections are opened one after another and kept
   open, then opened one after another and each closed after one echo,
   and each worker's accepted count is read from the parent's monitor.
2. Scaling: the pipelined and request/response loads of
   C{benchmarks.compare}, with C{--workers 1} and C{--workers 2}: frames
   per second and server CPU per frame (the parent and every worker), on
   the default reactor and on the uvloop one (C{twistd -r uvloop}; a
   parent on uvloop starts its workers on uvloop too, and the table says
   which reactor each worker's command line asked for).

    python -m benchmarks.workers                      # both parts
    python -m benchmarks.workers --reactor uvloop --rounds 1 --duration 3 --no-spread
    python -m benchmarks.workers --out docs/workers   # writes docs/workers-results.rst and .json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.request
from typing import Any

from benchmarks.compare import SCENARIOS, cpuSeconds, runLoad

READY = re.compile(r"listening on tcp:127\.0\.0\.1:(\d+) with \d+ worker processes")
SINGLE = re.compile(r"iocpsvc listening on tcp:127\.0\.0\.1:(\d+);")
MONITOR = re.compile(r"monitor on http://127\.0\.0\.1:(\d+)/")


DEFAULT_REACTOR = "default"
REACTORS = (DEFAULT_REACTOR, "uvloop")
"""The scaling part's reactors: twistd's default, and C{twistd -r uvloop}."""


def twistdCommand(
    *args: str, reactor: str = DEFAULT_REACTOR, twistdOptions: tuple[str, ...] = ()
) -> list[str]:
    """The argv of C{twistd -n [--reactor=R] TWISTDOPTIONS iocpsvc ARGS}, this Python's."""
    chosen = [] if reactor == DEFAULT_REACTOR else [f"--reactor={reactor}"]
    twistd = "from twisted.scripts.twistd import run; run()"
    return [sys.executable, "-c", twistd, "-n", "--pidfile=", *chosen, *twistdOptions, "iocpsvc", *args]


class Server:
    """A C{twistd -n iocpsvc} with a monitor on a free loopback port."""

    def __init__(self, *args: str, reactor: str = DEFAULT_REACTOR) -> None:
        env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = twistdCommand(
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--monitor",
            "tcp:0:interface=127.0.0.1",
            "--stats-interval",
            "0",
            *args,
            reactor=reactor,
        )
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        assert self.process.stdout is not None
        self.port = self.monitor = 0
        workers = "--workers" in args and args[args.index("--workers") + 1] != "1"
        for line in self.process.stdout:
            match = MONITOR.search(line)
            if match:
                self.monitor = int(match.group(1))
            match = (READY if workers else SINGLE).search(line)
            if match:
                self.port = int(match.group(1))
            if self.port and self.monitor:
                break
        if not (self.port and self.monitor):
            raise RuntimeError("server did not start")

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor}/stats.json") as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def pids(self) -> list[int]:
        return [self.process.pid] + [row["pid"] for row in self.stats().get("workers", [])]

    def workerReactors(self) -> list[str]:
        """Each worker's C{--reactor=} from its command line ('default' when none)."""
        names = []
        for row in self.stats().get("workers", []):
            try:
                with open(f"/proc/{row['pid']}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                names.append("?")
                continue
            given = [arg.partition("=")[2] for arg in argv if arg.startswith("--reactor=")]
            names.append(given[0] if given else DEFAULT_REACTOR)
        return names

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _echoOnce(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(struct.pack(">I", 2) + b"hi")
    received = b""
    while len(received) < 6:
        received += sock.recv(64)
    return sock


def _accepted(server: Server, expected: int) -> list[int]:
    deadline = time.monotonic() + 10
    while True:
        stats = server.stats()
        rows = stats["workers"]
        if stats["accepted_total"] >= expected or time.monotonic() > deadline:
            return [row["accepted_total"] for row in rows]
        time.sleep(0.2)


def spread(mode: str, burst: int, sequential: int) -> dict[str, Any]:
    """Each worker's share of a burst and of one-after-another connections."""
    server = Server("--workers", "2", "--worker-sockets", mode)
    try:
        socks = [_echoOnce(server.port) for _ in range(burst)]
        burstCounts = _accepted(server, burst)
        for sock in socks:
            sock.close()
        for _ in range(sequential):
            _echoOnce(server.port).close()
        total = _accepted(server, burst + sequential)
        sequentialCounts = [t - b for t, b in zip(total, burstCounts, strict=True)]
    finally:
        server.stop()

    def share(counts: list[int]) -> float:
        return round(max(counts) / max(1, sum(counts)), 3)

    return {
        "mode": mode,
        "burst": burstCounts,
        "burst_largest_share": share(burstCounts),
        "sequential": sequentialCounts,
        "sequential_largest_share": share(sequentialCounts),
    }


def scaling(workers: int, scenario: str, duration: float, reactor: str = DEFAULT_REACTOR) -> dict[str, Any]:
    """Throughput and server CPU per frame with C{workers} processes on C{reactor}."""
    server = Server("--workers", str(workers), reactor=reactor)
    try:
        time.sleep(1.0)  # let the workers settle before measuring CPU
        pids = server.pids()
        workerReactors = server.workerReactors()
        before = sum(cpuSeconds(pid) for pid in pids)
        benchArgs, _ = SCENARIOS[scenario]
        load = runLoad(server.port, benchArgs, duration)
        after = sum(cpuSeconds(pid) for pid in pids)
    finally:
        server.stop()
    frames = load["frames"]
    return {
        "workers": workers,
        "reactor": reactor,
        "worker_reactors": workerReactors,
        "scenario": scenario,
        "frames_per_second": load["frames_per_second"],
        "errors": load["errors"],
        "server_cpu_us_per_frame": round((after - before) / frames * 1e6, 3) if frames else None,
        "client_cpu_us_per_frame": load.get("client_cpu_us_per_frame"),
    }


def reactorOf(row: dict[str, Any]) -> str:
    """A scaling row's reactor (rows from before there was a choice ran the default)."""
    return row.get("reactor") or DEFAULT_REACTOR


def restructuredText(spreads: list[dict[str, Any]], scales: list[dict[str, Any]], rounds: int) -> str:
    lines = [".. Written by python -m benchmarks.workers; do not edit."]
    if spreads:  # none with --no-spread
        lines += [
            "",
            ".. list-table:: Connections per worker (2 workers)",
            "   :header-rows: 1",
            "",
            "   * - sharing",
            "     - kept open",
            "     - largest share",
            "     - each echoes once and closes",
            "     - largest share",
        ]
    for row in spreads:
        lines += [
            f"   * - ``{row['mode']}``",
            f"     - {' / '.join(map(str, row['burst']))}",
            f"     - {row['burst_largest_share']:.0%}",
            f"     - {' / '.join(map(str, row['sequential']))}",
            f"     - {row['sequential_largest_share']:.0%}",
        ]
    lines += [
        "",
        f".. list-table:: One worker and two on this 2-core machine (medians of {rounds} rounds)",
        "   :header-rows: 1",
        "",
        "   * - load",
        "     - reactor (workers')",
        "     - workers",
        "     - frames/s",
        "     - vs 1 worker",
        "     - server CPU µs/frame",
        "     - load tool CPU µs/frame",
    ]
    reactors = [r for r in REACTORS if any(reactorOf(s) == r for s in scales)]
    reactors += sorted({reactorOf(s) for s in scales} - set(reactors))
    for scenario in sorted({s["scenario"] for s in scales}):
        for reactor in reactors:
            base = None
            for workers in (1, 2):
                runs = [
                    s
                    for s in scales
                    if s["scenario"] == scenario and s["workers"] == workers and reactorOf(s) == reactor
                ]
                if not runs:
                    continue
                fps = statistics.median(r["frames_per_second"] for r in runs)
                cpu = statistics.median(r["server_cpu_us_per_frame"] for r in runs)
                client = statistics.median(r["client_cpu_us_per_frame"] or 0 for r in runs)
                base = base or fps
                theirs = sorted({name for r in runs for name in r.get("worker_reactors", [])})
                lines += [
                    f"   * - {scenario}",
                    f"     - {reactor}" + (f" ({', '.join(theirs)})" if theirs else ""),
                    f"     - {workers}",
                    f"     - {fps:,.0f}",
                    f"     - {fps / base:.2f}×",
                    f"     - {cpu:.2f}",
                    f"     - {client:.2f}",
                ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--scenario", action="append", choices=["pipelined", "request-response"])
    parser.add_argument(
        "--reactor",
        action="append",
        choices=list(REACTORS),
        help=f"the scaling part's reactors (default: all of {','.join(REACTORS)})",
    )
    parser.add_argument("--no-spread", action="store_true", help="only the scaling part")
    parser.add_argument("--out", help="write OUT-results.rst and OUT-raw.json (e.g. docs/workers)")
    parser.add_argument("--from-json", help="render OUT-results.rst from an OUT-raw.json instead of running")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            raw = json.load(f)
        combinations = {(s["scenario"], s["workers"], reactorOf(s)) for s in raw["scaling"]}
        rounds = max(1, len(raw["scaling"]) // max(1, len(combinations)))
        text = restructuredText(raw["spread"], raw["scaling"], rounds)
        print(text)
        if args.out:
            with open(f"{args.out}-results.rst", "w") as f:
                f.write(text)
        return
    spreads = (
        []
        if args.no_spread
        else [spread(mode, args.burst, args.sequential) for mode in ("reuseport", "shared")]
    )
    for row in spreads:
        print(json.dumps(row), flush=True)
    scales = []
    for _ in range(args.rounds):
        for scenario in args.scenario or ["pipelined", "request-response"]:
            for reactor in args.reactor or REACTORS:
                for workers in (1, 2):
                    row = scaling(workers, scenario, args.duration, reactor)
                    print(json.dumps(row), flush=True)
                    scales.append(row)
    text = restructuredText(spreads, scales, args.rounds)
    print(text)
    if args.out:
        with open(f"{args.out}-results.rst", "w") as f:
            f.write(text)
        with open(f"{args.out}-raw.json", "w") as f:
            json.dump({"spread": spreads, "scaling": scales}, f, indent=1)


if __name__ == "__main__":
    main()
