"""
The smallest server: echo every length-prefixed frame, without twistd.

    python -m examples.echo            # listens on 127.0.0.1:9983
"""

from __future__ import annotations

from iocpsvc import ConnectionContext, ConnectionContextFactory, SocketServerService


class Echo(ConnectionContext):
    __slots__ = ()

    def objectReceived(self, obj: object) -> None:
        self.writeObject(obj)


def main() -> None:
    from twisted.internet import reactor

    factory = ConnectionContextFactory(Echo, codec="length", reactor=reactor)
    service = SocketServerService(factory, ["tcp:9983:interface=127.0.0.1"], reactor=reactor)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
