"""
Run blocking handler code in a thread pool without losing per-connection
order::

    from iocpsvc.threads import inThreadPool

    class LookupContext(ConnectionContext):
        @inThreadPool
        def objectReceived(self, key):
            return database.fetch(key)      # blocking; runs in a thread

The decorated method runs in the reactor's thread pool; what it returns (if
not C{None}) is written with C{writeObject} back in the reactor thread.  The
context waits for it before dispatching the connection's next object, so
replies keep the order of requests, while other connections are served
meanwhile.  Inside the method, do not touch the transport or call
C{writeObject}: they are not thread-safe; return the reply instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

from iocpsvc.context import ConnectionContext

C = TypeVar("C", bound=ConnectionContext)


def inThreadPool(
    method: Callable[[C, Any], Any],
) -> Callable[[C, Any], Deferred[None]]:
    """
    Decorate C{objectReceived} so that it runs in the reactor's thread pool
    (see the module docstring).
    """

    @functools.wraps(method)
    def objectReceived(self: C, obj: Any) -> Deferred[None]:
        reactor = self.factory.clock
        running = deferToThreadPool(reactor, reactor.getThreadPool(), method, self, obj)

        def reply(result: Any) -> None:
            if result is not None and self.closeReason is None:
                self.writeObject(result)

        return running.addCallback(reply)

    return objectReceived
