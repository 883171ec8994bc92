"""
The smallest server: echo every length-prefixed frame, without twistd.

    python -m examples.echo            # listens on 127.0.0.1:9983
    python -m examples.echo 7000       # or on another port

It logs to stdout, so it says where it listens; a port that is taken is
one line and exit status 1.
"""

from __future__ import annotations

import sys

from twisted.internet.error import CannotListenError
from twisted.logger import globalLogBeginner, textFileLogObserver

from iocpsvc import ConnectionContext, ConnectionContextFactory, SocketServerService


class Echo(ConnectionContext):
    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        self.writeObject(obj)


def main(argv: list[str] | None = None) -> None:
    from twisted.internet import reactor

    arguments = sys.argv[1:] if argv is None else argv
    port = arguments[0] if arguments else "9983"
    if not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise SystemExit(f"examples.echo: the port must be a number from 0 to 65535, not {port!r}")
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)], redirectStandardIO=False)
    factory = ConnectionContextFactory(Echo, codec="length", reactor=reactor)
    service = SocketServerService(factory, [f"tcp:{port}:interface=127.0.0.1"], reactor=reactor)
    try:
        service.startService()  # logs "iocpsvc listening on tcp:127.0.0.1:9983; codec=length ..."
    except CannotListenError as e:
        why = getattr(e.socketError, "strerror", None) or e.socketError
        raise SystemExit(f"examples.echo: cannot listen on 127.0.0.1:{port}: {why}") from None
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
