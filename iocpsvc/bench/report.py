"""
What a load run reports: the kinds of error it counts, what one process
measured (L{ProcessResult}, which load processes send to their parent as
JSON), the report those merge into (L{makeReport}, what C{--json} prints)
and its human summary (L{formatReport}).

Figures: C{frames} and C{bytes} are frames echoed back and their wire bytes
during the measured window; latency is from the write of a frame to the
arrival of its last echoed byte (with K frames in flight, so it includes
queueing behind the others); C{client_cpu_seconds} is the CPU time (user +
system) the tool's processes used during the measured window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iocpsvc.bench.histogram import LatencyHistogram
from iocpsvc.bench.settings import LoadSettings

# The kinds of error a run counts, in the order they are reported.
CONNECT = "connect"
"""A connection attempt failed or timed out."""
CLOSED = "closed"
"""The server closed (or reset) a connection before the run closed it."""
MISMATCH = "mismatch"
"""An echoed byte differed from the byte sent (that connection is aborted)."""
TIMEOUT = "timeout"
"""Echoes still outstanding when the drain timeout ran out."""
WORKER = "worker"
"""
A load process of C{--processes} failed or did not report a result, or a
load process lost its parent.  (Reports call it C{worker}, as they always
have; it is not one of the server's worker processes.)
"""
ERROR_KINDS = (CONNECT, CLOSED, MISMATCH, TIMEOUT, WORKER)

# Error messages kept (per process and in the report) as examples.
MAX_ERROR_EXAMPLES = 5


@dataclass
class ProcessResult:
    """
    What one process measured (merged by L{makeReport}).

    @ivar connections: connections it attempted.
    @ivar connected: the most it had open at once.
    @ivar frames: frames echoed back during the measured window.
    @ivar bytes: their wire bytes.
    @ivar seconds: the measured window's length.
    @ivar cpuSeconds: its CPU time during the window.
    @ivar histogram: the window's latencies.
    @ivar errors: error kind -> count (kinds that occurred only).
    @ivar examples: the first few error messages.
    """

    connections: int = 0
    connected: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    cpuSeconds: float = 0.0
    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    errors: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def addError(self, kind: str, message: str) -> None:
        """Count an error of C{kind}; keep C{message} if examples are still wanted."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.examples) < MAX_ERROR_EXAMPLES:
            self.examples.append(f"{kind}: {message}")

    def toJSON(self) -> dict[str, Any]:
        """A JSON-able form, read by L{fromJSON}."""
        return {
            "connections": self.connections,
            "connected": self.connected,
            "frames": self.frames,
            "bytes": self.bytes,
            "seconds": self.seconds,
            "cpu_seconds": self.cpuSeconds,
            "histogram": self.histogram.toJSON(),
            "errors": self.errors,
            "examples": self.examples,
        }

    @classmethod
    def fromJSON(cls, data: dict[str, Any]) -> ProcessResult:
        """The result that L{toJSON} described."""
        return cls(
            connections=int(data["connections"]),
            connected=int(data["connected"]),
            frames=int(data["frames"]),
            bytes=int(data["bytes"]),
            seconds=float(data["seconds"]),
            cpuSeconds=float(data["cpu_seconds"]),
            histogram=LatencyHistogram.fromJSON(data["histogram"]),
            errors={str(k): int(v) for k, v in data["errors"].items()},
            examples=[str(e) for e in data["examples"]],
        )


def makeReport(
    settings: LoadSettings,
    results: list[ProcessResult],
    processes: int = 1,
    extraCpuSeconds: float = 0.0,
    wireSize: int | None = None,
) -> dict[str, Any]:
    """
    Merge per-process results into the report C{--json} prints.

    Rates add up over processes, each over its own measured window (the
    windows line up: load processes start together).
    """
    histogram = LatencyHistogram()
    errors: dict[str, int] = {}
    examples: list[str] = []
    for result in results:
        histogram.merge(result.histogram)
        for kind, count in result.errors.items():
            errors[kind] = errors.get(kind, 0) + count
        examples.extend(result.examples)
    frames = sum(r.frames for r in results)
    byteCount = sum(r.bytes for r in results)
    framesPerSecond = sum(r.frames / r.seconds for r in results if r.seconds > 0)
    bytesPerSecond = sum(r.bytes / r.seconds for r in results if r.seconds > 0)
    measured = [r.seconds for r in results if r.seconds > 0]
    cpu = sum(r.cpuSeconds for r in results) + extraCpuSeconds

    def milliseconds(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 4)

    return {
        "host": settings.host,
        "port": settings.port,
        "connections": settings.connections,
        "connected": sum(r.connected for r in results),
        "in_flight": settings.inFlight,
        "size": settings.size,
        "wire_size": wireSize,
        "codec": settings.codec,
        "warmup": settings.warmup,
        "duration": settings.duration,
        "measured_seconds": round(sum(measured) / len(measured), 6) if measured else 0.0,
        "frames": frames,
        "bytes": byteCount,
        "frames_per_second": round(framesPerSecond, 1),
        "mb_per_second": round(bytesPerSecond / 1e6, 3),
        "latency_ms": {
            "p50": milliseconds(histogram.percentile(50)),
            "p99": milliseconds(histogram.percentile(99)),
            "max": milliseconds(histogram.maximum if histogram.count else None),
        },
        "errors": {kind: errors[kind] for kind in ERROR_KINDS if kind in errors},
        "error_examples": examples[:MAX_ERROR_EXAMPLES],
        "processes": processes,
        "client_cpu_seconds": round(cpu, 4),
        "client_cpu_us_per_frame": round(cpu * 1e6 / frames, 3) if frames else None,
    }


def formatReport(report: dict[str, Any]) -> str:
    """The human summary of a report."""
    latency = report["latency_ms"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f} ms"

    errors = ", ".join(f"{kind} {count}" for kind, count in report["errors"].items()) or "none"
    lines = [
        f"iocpsvc-bench: {report['host']}:{report['port']}, codec {report['codec']}, "
        f"{report['connections']} connections x {report['in_flight']} in flight, "
        f"{report['size']}-byte payload ({report['wire_size']} bytes on the wire), "
        f"{report['processes']} process{'es' if report['processes'] != 1 else ''}",
        f"  measured   {report['measured_seconds']:.2f} s after {report['warmup']:g} s warm-up; "
        f"{report['connected']} connections up",
        f"  frames     {report['frames']:,}  ({report['frames_per_second']:,.0f} frames/s)",
        f"  bytes      {report['bytes']:,}  ({report['mb_per_second']:,.2f} MB/s echoed)",
        f"  latency    p50 {ms(latency['p50'])}   p99 {ms(latency['p99'])}   max {ms(latency['max'])}",
        f"  errors     {errors}",
    ]
    lines += [f"             {example}" for example in report["error_examples"]]
    perFrame = report["client_cpu_us_per_frame"]
    lines.append(
        f"  client CPU {report['client_cpu_seconds']:.2f} s"
        + (f" ({perFrame:.2f} us per frame)" if perFrame is not None else "")
    )
    return "\n".join(lines)
