"""
The peers iocpsvc is measured against, as servers, written the way a Python
user would write them without iocpsvc:

    python -m benchmarks.peers int32 PORT    Twisted's Int32StringReceiver echo
    python -m benchmarks.peers raw PORT      a raw Twisted Protocol echoing bytes
    python -m benchmarks.peers asyncio PORT  an asyncio.Protocol framed echo
    python -m benchmarks.peers uvloop PORT   the same protocol on uvloop

All speak the default iocpsvc wire format (4-byte big-endian length
prefix): the raw echo returns the bytes unchanged, so it is the ceiling of
plain Twisted.  The asyncio echo is what a competent user writes by hand:
a bytearray buffer, a precompiled struct, every complete frame of a read
answered with one C{transport.write}; nothing tuned beyond that.  Each
prints C{PORT n} once listening on 127.0.0.1 (PORT 0 picks one) and stops
on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import sys

from twisted.internet import protocol
from twisted.protocols.basic import Int32StringReceiver

MAX_LENGTH = 16 * 1024 * 1024


class Int32Echo(Int32StringReceiver):
    MAX_LENGTH = MAX_LENGTH

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class RawEcho(protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


PEERS = {"int32": Int32Echo, "raw": RawEcho}

_header = struct.Struct(">I")


class AsyncioEcho(asyncio.Protocol):
    """Length-prefixed echo: every complete frame of a read, one write back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        unpack, pack = _header.unpack_from, _header.pack
        replies = []
        offset, end = 0, len(buffer)
        while end - offset >= 4:
            (length,) = unpack(buffer, offset)
            if length > MAX_LENGTH:
                self.transport.close()
                return
            stop = offset + 4 + length
            if stop > end:
                break
            replies.append(pack(length))
            replies.append(bytes(buffer[offset + 4 : stop]))
            offset = stop
        del buffer[:offset]
        if replies:
            self.transport.write(b"".join(replies))


async def serveAsyncio(port: int) -> None:
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    server = await loop.create_server(AsyncioEcho, "127.0.0.1", port, backlog=4096)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    await stopped.wait()
    server.close()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    kind, port = argv[0], int(argv[1])
    from iocpsvc.machine import raiseOpenFilesLimit

    raiseOpenFilesLimit()
    if kind == "asyncio":
        asyncio.run(serveAsyncio(port))
        return
    if kind == "uvloop":
        import uvloop

        uvloop.run(serveAsyncio(port))
        return
    from twisted.internet import reactor

    factory = protocol.Factory.forProtocol(PEERS[kind])
    factory.noisy = False
    listening = reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")  # type: ignore[attr-defined]
    print("PORT", listening.getHost().port, flush=True)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
