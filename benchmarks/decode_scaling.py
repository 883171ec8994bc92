"""
Does receive-side splitting stay linear?  The two hard cases of the core
issue, side by side with Twisted's own Int32StringReceiver:

1. one big frame arriving in 100-byte chunks (Int32StringReceiver re-joins
   its whole buffer on every read: quadratic);
2. many small frames arriving in one chunk.

For each case the data is grown 4x; linear code takes about 4x the time.
CPU time (time.process_time) is reported, best of a few runs.

    python -m benchmarks.decode_scaling        # Markdown table on stdout
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver

from iocpsvc.context import ConnectionContext
from iocpsvc.testing import EmbeddedConnection

MiB = 1024 * 1024


class Counting(ConnectionContext):
    __slots__ = ("count",)

    def objectReceived(self, obj: object) -> None:
        self.count = getattr(self, "count", 0) + 1


class CountingInt32(Int32StringReceiver):
    MAX_LENGTH = 64 * MiB
    count = 0

    def stringReceived(self, string: bytes) -> None:
        self.count += 1


def iocpsvcRun(chunks: list[bytes], expected: int) -> float:
    connection = EmbeddedConnection(Counting, "length:max=64MiB")
    receive = connection.context.dataReceived
    start = time.process_time()
    for chunk in chunks:
        receive(chunk)
    elapsed = time.process_time() - start
    assert connection.context.count == expected, connection.context.count  # type: ignore[attr-defined]
    return elapsed


def int32Run(chunks: list[bytes], expected: int) -> float:
    receiver = CountingInt32()
    receiver.makeConnection(StringTransport())
    receive = receiver.dataReceived
    start = time.process_time()
    for chunk in chunks:
        receive(chunk)
    elapsed = time.process_time() - start
    assert receiver.count == expected, receiver.count
    return elapsed


def bigFrame(size: int) -> tuple[list[bytes], int]:
    wire = struct.pack(">I", size) + b"x" * size
    return [wire[i : i + 100] for i in range(0, len(wire), 100)], 1


def smallFrames(count: int) -> tuple[list[bytes], int]:
    one = struct.pack(">I", 16) + b"y" * 16
    return [one * count], count


def best(run: Callable[[list[bytes], int], float], case: tuple[list[bytes], int], repeat: int) -> float:
    return min(run(*case) for _ in range(repeat))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rows: list[tuple[str, str, Any, Any, float, float]] = []
    cases = [
        ("one frame in 100-byte chunks", "iocpsvc", iocpsvcRun, bigFrame, 4 * MiB, 16 * MiB),
        # Int32StringReceiver is quadratic here: smaller sizes keep the run short.
        ("one frame in 100-byte chunks", "Int32StringReceiver", int32Run, bigFrame, 256 * 1024, 1 * MiB),
        ("small frames in one chunk", "iocpsvc", iocpsvcRun, smallFrames, 25_000, 100_000),
        ("small frames in one chunk", "Int32StringReceiver", int32Run, smallFrames, 25_000, 100_000),
    ]
    for label, name, run, make, small, large in cases:
        t1 = best(run, make(small), args.repeat)
        t4 = best(run, make(large), args.repeat)
        rows.append((label, name, small, large, t1, t4))
        print(f"  {label} / {name}: {t1:.4f}s -> {t4:.4f}s", file=sys.stderr)

    print("| case | implementation | data | CPU s | 4x data | CPU s | time ratio (linear = 4) |")
    print("|---|---|---|---|---|---|---|")
    for label, name, small, large, t1, t4 in rows:
        unit = (
            (lambda n: f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB")
            if "chunks" in label
            else (lambda n: f"{n:,} frames")
        )
        print(f"| {label} | {name} | {unit(small)} | {t1:.4f} | {unit(large)} | {t4:.4f} | {t4 / t1:.1f} |")


if __name__ == "__main__":
    main()
