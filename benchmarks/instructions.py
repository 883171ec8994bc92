"""
Instructions per echoed frame on the context's hot path (receive -> decode ->
objectReceived -> encode -> batch -> write), counted by valgrind's callgrind:
a count, not a time, so it is the same on a busy machine as on an idle one,
and two checkouts can be compared side by side.

    python -m benchmarks.instructions                         # this checkout
    python -m benchmarks.instructions --tree ../old --tree .  # before and after
    python -m benchmarks.instructions --codec line --size 200
    python -m benchmarks.instructions --transport tcp     # Twisted's TCP transport

With C{--transport tcp} the context's transport is Twisted's own TCP
server transport on one end of a connected socket pair (its reactor a
stand-in that registers nothing), so the send path is the real one:
straight to the socket from the turn (L{iocpsvc.transports.sendNow}); the
other end is drained after each round.

Each run feeds reads of 32 frames (and one read split in two) to an echo
context on a transport that discards what it is given, for two numbers of
rounds; the difference between the two counts, divided by the frames it
adds, is the cost of one frame with start-up taken out.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys

FRAMES_PER_READ = 32
ROUNDS = (200, 1200)

# Run inside the checkout under test: its iocpsvc, not the installed one.
_CHILD = """
import sys
tree, codec, size, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
transportKind = sys.argv[5]
sys.path.insert(0, tree)
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from iocpsvc.codecs import parseCodecSpec
try:
    from iocpsvc.apps import EchoContext
except ImportError:  # a checkout from before apps.py was named so
    from iocpsvc.contexts import EchoContext
from iocpsvc.factory import ConnectionContextFactory

class Sink:
    disconnecting = False
    def write(self, data): pass
    def writeSequence(self, data): pass
    def getPeer(self): return IPv4Address("TCP", "192.0.2.1", 1)
    def getHost(self): return IPv4Address("TCP", "127.0.0.1", 2)
    def registerProducer(self, producer, streaming): pass
    def unregisterProducer(self): pass
    def pauseProducing(self): pass
    def resumeProducing(self): pass
    def loseConnection(self): pass

factory = ConnectionContextFactory(EchoContext, codec, reactor=Clock())
context = factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
peer = None
if transportKind == "tcp":
    import socket
    from twisted.internet import tcp

    class NoReactor:
        def addReader(self, reader): pass
        def addWriter(self, writer): pass
        def removeReader(self, reader): pass
        def removeWriter(self, writer): pass
        def callLater(self, *args, **kwargs): pass

    class NoPort:
        _realPortNumber = 9983
        def _getLogPrefix(self, factory): return "x"

    mine, peer = socket.socketpair()  # a connected pair: no listening, no reactor
    mine.setblocking(False)
    peer.setblocking(False)
    transport = tcp.Server(mine, context, ("192.0.2.1", 1), NoPort(), 1, NoReactor())
    context.makeConnection(transport)
else:
    context.makeConnection(Sink())
encoded = parseCodecSpec(codec).encoder.encode(b"p" * size)
frame = encoded if isinstance(encoded, bytes) else b"".join(encoded)
read = frame * FRAMES_PER_READ
cut = len(read) - len(frame) // 2
for _ in range(rounds):
    context.dataReceived(read)          # whole frames
    context.dataReceived(read[:cut])    # ... and one cut in two
    context.dataReceived(read[cut:])
    if peer is not None:
        try:
            while peer.recv(1 << 20):
                pass
        except BlockingIOError:
            pass
""".replace("FRAMES_PER_READ", str(FRAMES_PER_READ))


def count(tree: str, codec: str, size: int, rounds: int, transport: str = "sink") -> int:
    """Instructions callgrind counts for one run."""
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _CHILD,
            os.path.abspath(tree),
            codec,
            str(size),
            str(rounds),
            transport,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"Collected : (\d+)", result.stderr)
    if match is None:
        raise SystemExit(f"no count from callgrind:\n{result.stderr[-2000:]}")
    return int(match.group(1))


def perFrame(tree: str, codec: str, size: int, transport: str = "sink") -> float:
    low, high = (count(tree, codec, size, rounds, transport) for rounds in ROUNDS)
    frames = (ROUNDS[1] - ROUNDS[0]) * 2 * FRAMES_PER_READ
    return (high - low) / frames


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="instructions per echoed frame on the hot path")
    parser.add_argument("--tree", action="append", help="a checkout to measure (default: this one)")
    parser.add_argument("--codec", default="length")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--transport", choices=("sink", "tcp"), default="sink")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    trees = args.tree or ["."]
    results = [(tree, perFrame(tree, args.codec, args.size, args.transport)) for tree in trees]
    print(
        f"| checkout | instructions per frame ({args.codec}, {args.size}-byte payloads, {args.transport}) |"
    )
    print("|---|---|")
    for tree, value in results:
        print(f"| {tree} | {value:,.0f} |")
    if len(results) > 1:
        first = results[0][1]
        for tree, value in results[1:]:
            print(f"\n{tree} / {results[0][0]}: {value / first:.3f}")


if __name__ == "__main__":
    main()
