"""
The built-in framers' decoders alone, compiled against pure Python: no
sockets, no context, only C{decoder.decode(data, out)}.

For each framer, two measurements, each the best of a few runs
(C{time.perf_counter}; the machine is noisy, the best run is the one the
noise touched least):

1. many small frames in one read: 100,000 frames of a 32-byte payload,
   joined into one C{bytes} and decoded by one call; reported in frames/s;
2. one large frame arriving in 100-byte reads, buffered the way the context
   buffers it (L{feedLikeTheContext}): reported in seconds, for a 16 MiB
   frame and a 4 MiB one, and their ratio (about 4 when decoding is linear
   in the frame's size, 16 when it is quadratic).

HP-Socket's 22-bit length cannot carry 16 MiB: its large frames are its
maximum body, 0x3FFFFF bytes (4 MiB - 1), and 1 MiB.  The framers whose
default maximum is smaller than the large frame get C{max=32MiB} (DIOCP's
limit is 2**31 - 1, so it takes that too).

Each implementation runs in child processes of its own: "compiled" in this
environment without C{IOCPSVC_NO_EXTENSIONS} (compiled when the accelerator
is built), "pure" with C{IOCPSVC_NO_EXTENSIONS=1}.  The children alternate
(C{--passes}, pure then compiled each pass) and every figure is the best
over all passes, so a noisy minute does not land on one implementation
only.  Where the accelerator is not built, the two run the same code, and
their difference is the noise.

    python -m benchmarks.decoders                   # Markdown table on stdout
    python -m benchmarks.decoders --out decoders.md --repeat 5 --passes 3
    python -m benchmarks.decoders length diocp     # some framers only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

MiB = 1024 * 1024
NO_EXTENSIONS = "IOCPSVC_NO_EXTENSIONS"
SMALL_FRAMES = 100_000
SMALL_PAYLOAD = 32
CHUNK = 100

# name -> (spec, large frame sizes (bigger, 1/4 of it)); small frames use
# the same spec.  fixed's frame is its size, so it has a spec per size.
FRAMERS: dict[str, tuple[str, tuple[int, int]]] = {
    "length": ("length:max=32MiB", (16 * MiB, 4 * MiB)),
    "line": ("line:max=32MiB", (16 * MiB, 4 * MiB)),
    "delimiter": ("delimiter:delim=\\r\\n:max=32MiB", (16 * MiB, 4 * MiB)),
    "netstring": ("netstring:max=32MiB", (16 * MiB, 4 * MiB)),
    "fixed": (f"fixed:size={SMALL_PAYLOAD}", (16 * MiB, 4 * MiB)),
    "diocp": ("diocp:max=32MiB", (16 * MiB, 4 * MiB)),
    "hpsocket": ("hpsocket:max=0x3FFFFF", (0x3FFFFF, 1 * MiB)),
}


def implementation() -> str:
    """What C{iocpsvc.accel} says this process runs, or why it cannot say."""
    try:
        import iocpsvc.accel as accel  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "python (no iocpsvc.accel)"
    answer = getattr(accel, "IMPLEMENTATION", None) or accel.implementation
    return str(answer() if callable(answer) else answer)


def build(spec: str) -> tuple[Any, Any]:
    """A fresh decoder for C{spec}, and its encoder."""
    from iocpsvc.codecs import parseCodecSpec

    codec = parseCodecSpec(spec)
    return codec.newDecoder(), codec.encoder


def wire(encoder: Any, payload: bytes) -> bytes:
    """C{payload} framed by C{encoder}, as the bytes on the wire."""
    from iocpsvc.codecs import encodedBytes

    return encodedBytes(encoder.encode(payload))


def smallFrames(spec: str, repeat: int) -> float:
    """Frames/s decoding L{SMALL_FRAMES} small frames given in one read."""
    payload = b"p" * SMALL_PAYLOAD
    _, encoder = build(spec)
    data = wire(encoder, payload) * SMALL_FRAMES
    best = float("inf")
    for _ in range(repeat):
        decoder, _ = build(spec)
        out: list[object] = []
        started = time.perf_counter()
        consumed = decoder.decode(data, out)
        elapsed = time.perf_counter() - started
        if len(out) != SMALL_FRAMES or consumed != len(data) or out[-1] != payload:
            raise AssertionError(f"{spec}: {len(out)} frames, {consumed} of {len(data)} bytes consumed")
        best = min(best, elapsed)
    return SMALL_FRAMES / best


def feedLikeTheContext(decoder: Any, chunks: list[bytes]) -> list[object]:
    """
    Feed C{chunks} to C{decoder} as L{iocpsvc.context.ConnectionContext}
    does: a read with nothing buffered is decoded as it is; otherwise it is
    appended to the bytearray buffer and the whole buffer is decoded; the
    consumed prefix is deleted once per read.
    """
    decode = decoder.decode
    out: list[object] = []
    buffer: bytearray | None = None
    for data in chunks:
        if buffer:
            buffer += data
            data = buffer  # type: ignore[assignment]
        consumed = decode(data, out)
        if consumed >= len(data):
            buffer = None
        elif buffer is not None and data is buffer:
            del buffer[:consumed]
        else:
            buffer = bytearray(memoryview(data)[consumed:])
    return out


def largeFrame(spec: str, size: int, repeat: int) -> float:
    """Best seconds to decode one C{size}-byte frame arriving in 100-byte reads."""
    payload = b"x" * size
    if spec.startswith("fixed:"):
        spec = f"fixed:size={size}"
    _, encoder = build(spec)
    data = wire(encoder, payload)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    best = float("inf")
    for _ in range(repeat):
        decoder, _ = build(spec)
        started = time.perf_counter()
        out = feedLikeTheContext(decoder, chunks)
        elapsed = time.perf_counter() - started
        if len(out) != 1 or len(out[0]) != size:  # type: ignore[arg-type]
            raise AssertionError(f"{spec}: {len(out)} frames from one frame of {size} bytes")
        best = min(best, elapsed)
    return best


def child(names: list[str], repeat: int) -> None:
    """Measure every framer in this process; one JSON object on stdout."""
    results: dict[str, Any] = {}
    for name in names:
        spec, (large, quarter) = FRAMERS[name]
        try:
            results[name] = {
                "frames_per_second": smallFrames(spec, repeat),
                "large_seconds": largeFrame(spec, large, repeat),
                "quarter_seconds": largeFrame(spec, quarter, repeat),
            }
        except Exception as e:  # one framer's failure is reported, the rest still run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        label = "pure" if os.environ.get(NO_EXTENSIONS, "") not in ("", "0") else "compiled"
        print(f"  {label} ({implementation()}) {name}: {results[name]}", file=sys.stderr, flush=True)
    print(json.dumps({"implementation": implementation(), "results": results}))


def runChild(pure: bool, names: list[str], repeat: int) -> dict[str, Any]:
    env = dict(os.environ)
    env.pop(NO_EXTENSIONS, None)
    if pure:
        env[NO_EXTENSIONS] = "1"
    argv = [sys.executable, "-m", "benchmarks.decoders", "--child", "--repeat", str(repeat), *names]
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"the {'pure' if pure else 'compiled'} child failed ({result.returncode})")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bestOf(passes: list[dict[str, Any]]) -> dict[str, Any]:
    """The passes of one implementation merged: the best figure of each."""
    merged: dict[str, Any] = {"implementation": passes[0]["implementation"], "results": {}}
    for name in passes[0]["results"]:
        runs = [p["results"][name] for p in passes]
        errors = [r["error"] for r in runs if "error" in r]
        if errors:
            merged["results"][name] = {"error": errors[0]}
            continue
        merged["results"][name] = {
            "frames_per_second": max(r["frames_per_second"] for r in runs),
            "large_seconds": min(r["large_seconds"] for r in runs),
            "quarter_seconds": min(r["quarter_seconds"] for r in runs),
        }
    return merged


def sizeLabel(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n:#x} B"


def markdown(pure: dict[str, Any], compiled: dict[str, Any], repeat: int, passes: int) -> str:
    lines = [
        f"Decoders alone, best of {repeat} runs x {passes} alternating passes (time.perf_counter).  "
        f"Small: {SMALL_FRAMES:,} frames of a "
        f"{SMALL_PAYLOAD}-byte payload in one read.  Large: one frame in {CHUNK}-byte reads, buffered "
        "as the context does; linearity = time(large) / time(large / 4), 4 when linear.  "
        f"pure ran {pure['implementation']}, compiled ran {compiled['implementation']}.  "
        "Produced by `python -m benchmarks.decoders`.",
        "",
        "| framer | spec | pure frames/s | compiled frames/s | speedup | large frame | pure s | compiled s "
        "| speedup | linearity pure, compiled |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, (spec, (large, quarter)) in FRAMERS.items():
        if name not in pure["results"]:
            continue
        p, c = pure["results"].get(name, {}), compiled["results"].get(name, {})
        if "error" in p or "error" in c or not p or not c:
            lines.append(f"| {name} | `{spec}` | {p.get('error', '')} | {c.get('error', '')} |||||||")
            continue
        lines.append(
            f"| {name} | `{spec}` | {p['frames_per_second']:,.0f} | {c['frames_per_second']:,.0f} "
            f"| {c['frames_per_second'] / p['frames_per_second']:.2f}x "
            f"| {sizeLabel(large)} (vs {sizeLabel(quarter)}) "
            f"| {p['large_seconds']:.3f} | {c['large_seconds']:.3f} "
            f"| {p['large_seconds'] / c['large_seconds']:.2f}x "
            f"| {p['large_seconds'] / p['quarter_seconds']:.1f}, "
            f"{c['large_seconds'] / c['quarter_seconds']:.1f} |"
        )
    lines.append("")
    lines.append(
        "fixed's small frames use `fixed:size=32` (the frame is the payload); its large frame is "
        "`fixed:size=16MiB` and `fixed:size=4MiB`.  hpsocket's length field is 22 bits: its large "
        "frames are 0x3FFFFF bytes (its maximum, 4 MiB - 1) and 1 MiB."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the best is kept")
    parser.add_argument(
        "--passes", type=int, default=2, help="child processes per implementation, alternating"
    )
    parser.add_argument("--out", help="also write the Markdown table to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("framers", nargs="*", help=f"some of {', '.join(FRAMERS)} (default: all)")
    args = parser.parse_args(argv)
    names = args.framers or list(FRAMERS)
    unknown = [name for name in names if name not in FRAMERS]
    if unknown:
        parser.error(f"unknown framer(s) {', '.join(unknown)}; choose from {', '.join(FRAMERS)}")
    if args.child:
        child(names, args.repeat)
        return
    started = time.monotonic()
    pures, compileds = [], []
    for _ in range(args.passes):
        pures.append(runChild(True, names, args.repeat))
        compileds.append(runChild(False, names, args.repeat))
    text = markdown(bestOf(pures), bestOf(compileds), args.repeat, args.passes)
    print(text)
    print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
