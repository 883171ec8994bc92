"""
The plain-Twisted peers iocpsvc is measured against, as servers:

    python -m benchmarks.peers int32 PORT    Int32StringReceiver echo
    python -m benchmarks.peers raw PORT      a raw Protocol echoing bytes

Both speak the default iocpsvc wire format (4-byte big-endian length
prefix): the raw echo returns the bytes unchanged, so it is the ceiling of
plain Twisted.  Each prints C{PORT n} once listening (PORT 0 picks one) and
stops on SIGTERM.
"""

from __future__ import annotations

import sys

from twisted.internet import protocol
from twisted.protocols.basic import Int32StringReceiver


class Int32Echo(Int32StringReceiver):
    MAX_LENGTH = 16 * 1024 * 1024

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class RawEcho(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


PEERS = {"int32": Int32Echo, "raw": RawEcho}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    kind, port = argv[0], int(argv[1])
    from twisted.internet import reactor

    from iocpsvc.machine import raiseOpenFilesLimit

    raiseOpenFilesLimit()
    factory = protocol.Factory.forProtocol(PEERS[kind])
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined]
    print("PORT", listening.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
