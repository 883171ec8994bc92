"""
The tables of L{benchmarks.compare} and L{benchmarks.workers}, from made-up
medians (no server runs, no speeds asserted), and the server child's own
options in L{benchmarks.hostile}.
"""

from __future__ import annotations

import argparse
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import compare, workers
from benchmarks.hostile import describeReactor, serveOptions

EITHER = "throughput ÷ iocpsvc's, or server CPU per frame ÷ iocpsvc's"
"""The ratio column of issue 13's "not slower than iocpsvc" rows."""


def row(fps: float, cpu: float, rss: float = 50.0) -> dict[str, float]:
    """One server's medians, as L{compare.summarise} gives them."""
    return {
        "frames_per_second": fps,
        "mb_per_second": fps * 68 / 1e6,
        "server_cpu_us_per_frame": cpu,
        "client_cpu_us_per_frame": 1.0,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "peak_rss_mb": rss,
        "errors": 0,
    }


def results(**overrides: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """Every server in pipelined, request-response and large-frames, each as fast as the next."""
    base = {kind: row(1000.0, 10.0) for kind in compare.SERVERS}
    out = {scenario: dict(base) for scenario in ("pipelined", "request-response", "large-frames")}
    for scenario, rows in overrides.items():
        out[scenario.replace("_", "-")].update(rows)
    return out


class ServerKindTests(SynchronousTestCase):
    def test_uvloopKind(self) -> None:
        """iocpsvc-uvloop is a server kind, with a colour, run on the uvloop reactor."""
        self.assertIn("iocpsvc-uvloop", compare.SERVERS)
        self.assertIn("iocpsvc-uvloop", compare.COLORS)
        self.assertEqual(compare.REACTORS["iocpsvc-uvloop"], "uvloop")
        self.assertEqual(compare.parseServers("iocpsvc-uvloop,uvloop"), ["iocpsvc-uvloop", "uvloop"])

    def test_unknownKind(self) -> None:
        self.assertRaises(argparse.ArgumentTypeError, compare.parseServers, "iocpsvc-libuv")

    def test_uvloopEnvironment(self) -> None:
        """iocpsvc-uvloop runs compiled when it can, like iocpsvc."""
        env, _ = compare.serverEnvironment("iocpsvc-uvloop")
        self.assertNotIn(compare.NO_EXTENSIONS, env)

    def test_implementationsSayTheReactor(self) -> None:
        runs = [
            {"server": "iocpsvc-uvloop", "implementation": "compiled", "reactor": "asyncioreactor (uvloop)"},
            {"server": "iocpsvc", "implementation": "compiled"},
            {"server": "uvloop", "implementation": ""},
        ]
        self.assertEqual(
            compare.implementations(runs),
            {"iocpsvc-uvloop": "compiled on asyncioreactor (uvloop)", "iocpsvc": "compiled"},
        )

    def test_markdownRow(self) -> None:
        """The results table has a row for iocpsvc-uvloop in each scenario, with its ratios."""
        text = compare.markdown(results(pipelined={"iocpsvc-uvloop": row(2000.0, 5.0)}), 1, 1.0)
        rows = [line for line in text.splitlines() if line.startswith("| pipelined | iocpsvc-uvloop |")]
        self.assertEqual(len(rows), 1)
        self.assertIn("| 2.00x, 0.50x |", rows[0])  # vs int32
        self.assertEqual(text.count("| iocpsvc-uvloop |"), 3)


class TargetsTests(SynchronousTestCase):
    def issue13(self, text: str) -> dict[tuple[str, str], str]:
        """(scenario, ratio) -> the iocpsvc-uvloop cell of issue 13's table."""
        section = text.split("Targets of issue 13", 1)[1]
        cells = {}
        for line in section.splitlines():
            parts = [part.strip() for part in line.strip("|").split("|")]
            if len(parts) == 4 and parts[0] in compare.SCENARIOS:
                cells[parts[0], parts[1]] = parts[3]
        return cells

    def test_bothIssues(self) -> None:
        """Issue 12's table (every iocpsvc server) and issue 13's (iocpsvc-uvloop)."""
        text = compare.targets(results())
        self.assertIn("Targets of issue 12 (pipelined", text)
        self.assertIn("| ratio | target | iocpsvc | iocpsvc-pure | iocpsvc-uvloop |", text)
        self.assertEqual(len(self.issue13(text)), len(compare.UVLOOP_TARGETS))

    def test_requestResponse(self) -> None:
        """Throughput at least 1x uvloop's and 2x raw's; CPU per frame at most 1.1x uvloop's."""
        text = compare.targets(results(request_response={"iocpsvc-uvloop": row(1500.0, 11.5)}))
        cells = self.issue13(text)
        self.assertEqual(cells["request-response", "throughput ÷ uvloop's"], "1.500 met")
        self.assertEqual(cells["request-response", "throughput ÷ raw's"], "1.500 not met")
        self.assertEqual(cells["request-response", "server CPU per frame ÷ uvloop's"], "1.150 not met")

    def test_notSlowerEither(self) -> None:
        """Pipelined and large frames: met when throughput is at least iocpsvc's or CPU at most."""
        text = compare.targets(
            results(
                pipelined={"iocpsvc-uvloop": row(900.0, 9.0)},  # slower, but cheaper per frame
                large_frames={"iocpsvc-uvloop": row(900.0, 11.0)},  # slower and dearer
            )
        )
        cells = self.issue13(text)
        self.assertEqual(cells["pipelined", EITHER], "0.900, 0.900 met")
        self.assertEqual(cells["large-frames", EITHER], "0.900, 1.100 not met")

    def test_peerNotRun(self) -> None:
        table = results()
        del table["request-response"]["raw"]
        cells = self.issue13(compare.targets(table))
        self.assertEqual(cells["request-response", "throughput ÷ raw's"], "(raw not run)")

    def test_onlyWhatRan(self) -> None:
        """Without iocpsvc-uvloop there is no issue 13 table; without pipelined no issue 12 table."""
        table = results()
        for scenario in table.values():
            del scenario["iocpsvc-uvloop"]
        self.assertNotIn("issue 13", compare.targets(table))
        only = {"large-frames": results()["large-frames"]}
        text = compare.targets(only)
        self.assertNotIn("issue 12", text)
        self.assertEqual(list(self.issue13(text)), [("large-frames", EITHER)])
        self.assertEqual(compare.targets({}), "")


def memoryRun(
    kind: str, count: int, rss: float, round: int = 0, connected: int | None = None
) -> dict[str, Any]:
    return {
        "server": kind,
        "scenario": "memory",
        "round": round,
        "connections_asked": count,
        "connected": count if connected is None else connected,
        "peak_rss_mb": rss,
    }


class MemoryTests(SynchronousTestCase):
    def test_perConnection(self) -> None:
        """(peak RSS with 15,000 - with 100) / 14,900, in KiB, from the medians of the rounds."""
        runs = [
            memoryRun("asyncio", 100, 40.0),
            memoryRun("asyncio", 15_000, 40.0 + 14_900 * 2 / 1024),
            memoryRun("iocpsvc-uvloop", 100, 45.0, 0),
            memoryRun("iocpsvc-uvloop", 100, 47.0, 1),
            memoryRun("iocpsvc-uvloop", 15_000, 46.0 + 14_900 * 2.1 / 1024, 0),
            memoryRun("iocpsvc-uvloop", 15_000, 46.0 + 14_900 * 2.1 / 1024, 1),
        ]
        table = compare.summariseMemory(runs)
        self.assertAlmostEqual(table["asyncio"]["kib_per_connection"], 2.0)
        self.assertAlmostEqual(table["iocpsvc-uvloop"]["few_rss_mb"], 46.0)
        self.assertAlmostEqual(table["iocpsvc-uvloop"]["kib_per_connection"], 2.1)
        text = compare.memoryMarkdown(table, 2, 3.0)
        self.assertIn("| iocpsvc-uvloop | 100 / 15,000 | 46.0 | 76.6 | 2.10 | 1.05x |", text)
        self.assertIn("iocpsvc-uvloop's KiB per connection ÷ asyncio's ≤ 1.1: 1.050 met", text)

    def test_connectionsThatCameUp(self) -> None:
        """The difference is divided by the connections that came up, shown in the table."""
        runs = [memoryRun("uvloop", 100, 40.0), memoryRun("uvloop", 15_000, 50.0, connected=10_100)]
        table = compare.summariseMemory(runs)
        self.assertAlmostEqual(table["uvloop"]["kib_per_connection"], 10 * 1024 / 10_000)
        self.assertIn("| uvloop | 100 / 10,100 |", compare.memoryMarkdown(table, 1, 1.0))

    def test_targetWithoutAsyncio(self) -> None:
        runs = [memoryRun("iocpsvc-uvloop", 100, 40.0), memoryRun("iocpsvc-uvloop", 15_000, 50.0)]
        text = compare.memoryMarkdown(compare.summariseMemory(runs), 1, 1.0)
        self.assertIn("≤ 1.1: (asyncio not run)", text)

    def test_defaultServers(self) -> None:
        """The issue's five servers, all of them known kinds."""
        self.assertEqual(
            set(compare.MEMORY_SERVERS), {"iocpsvc", "iocpsvc-uvloop", "raw", "asyncio", "uvloop"}
        )
        self.assertTrue(set(compare.MEMORY_SERVERS) <= set(compare.SERVERS))


class ServeOptionsTests(SynchronousTestCase):
    def test_none(self) -> None:
        self.assertEqual(serveOptions(["--port", "tcp:0"]), (None, None, ["--port", "tcp:0"]))

    def test_both(self) -> None:
        """--reactor and --open-files, in either order, before twistd iocpsvc's options."""
        self.assertEqual(
            serveOptions(["--reactor", "uvloop", "--open-files", "64", "--port", "tcp:0"]),
            (64, "uvloop", ["--port", "tcp:0"]),
        )
        self.assertEqual(serveOptions(["--open-files", "64", "--reactor", "uvloop"]), (64, "uvloop", []))

    def test_missingValue(self) -> None:
        self.assertRaises(SystemExit, serveOptions, ["--reactor"])

    def test_describeReactor(self) -> None:
        loop = type("Loop", (), {"__module__": "uvloop"})()
        reactor = type("R", (), {"__module__": "twisted.internet.asyncioreactor"})()
        self.assertEqual(describeReactor(reactor), "twisted.internet.asyncioreactor")
        reactor._asyncioEventloop = loop
        self.assertEqual(describeReactor(reactor), "twisted.internet.asyncioreactor (uvloop)")


def scale(scenario: str, count: int, reactor: str | None, fps: float, theirs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "workers": count,
        "scenario": scenario,
        "frames_per_second": fps,
        "server_cpu_us_per_frame": 1.0,
        "client_cpu_us_per_frame": 1.0,
        "worker_reactors": theirs,
    }
    if reactor is not None:
        out["reactor"] = reactor
    return out


class WorkersTableTests(SynchronousTestCase):
    def test_uvloopRows(self) -> None:
        """A uvloop row per worker count, its own 1-worker base, and the workers' reactor."""
        scales = [
            scale("pipelined", 1, None, 100.0, []),  # from before the reactor was recorded: default
            scale("pipelined", 2, "default", 150.0, ["epoll", "epoll"]),
            scale("pipelined", 1, "uvloop", 200.0, []),
            scale("pipelined", 2, "uvloop", 300.0, ["uvloop", "uvloop"]),
        ]
        text = workers.restructuredText([], scales, 1)
        self.assertNotIn("Connections per worker", text)
        rows = text.split("   * - ")[1:]
        cells = [[cell.strip(" -") for cell in r.strip().splitlines()] for r in rows]
        self.assertEqual(cells[0][:2], ["load", "reactor (workers')"])
        self.assertEqual(
            [c[:5] for c in cells[1:]],
            [
                ["pipelined", "default", "1", "100", "1.00×"],
                ["pipelined", "default (epoll)", "2", "150", "1.50×"],
                ["pipelined", "uvloop", "1", "200", "1.00×"],
                ["pipelined", "uvloop (uvloop)", "2", "300", "1.50×"],
            ],
        )

    def test_reactorOf(self) -> None:
        self.assertEqual(workers.reactorOf({}), "default")
        self.assertEqual(workers.reactorOf({"reactor": "uvloop"}), "uvloop")
