"""
The connecting side: the same contexts, codecs and factory, on a connection
that this process opens instead of accepts.

A context works on either side.  A L{ConnectionContext} subclass, a codec
spec and a L{ConnectionContextFactory} do the same things whether the
connection came in through a listening port or went out through a client
endpoint: the factory creates the context and gives it its decoder and
encoder, the context buffers, decodes, dispatches to C{objectReceived},
batches what C{writeObject} writes and applies flow control::

    connect(reactor, "tcp:host=127.0.0.1:port=9983", MyContext, "length")
      -> clientFromString(...).connect(factory)   Twisted's endpoint
      -> factory.buildProtocol -> context         the same factory servers use
      -> Deferred fired with the connected context

Three ways to use it:

  - L{connect}: one connection; a Deferred fires with its context.
  - L{reconnectingClient}: a Twisted C{ClientService} that keeps one
    connection up, reconnecting with backoff when it drops.
  - L{RequestContext}: a context whose L{RequestContext.request} writes an
    object and returns a Deferred fired with the reply, for protocols whose
    replies come back in the order the requests went out.

A client's factory normally gets L{clientLimits}: no idle timeout (a client
waits as long as it likes between requests) and no connection limit; every
other limit (maximum frame length, write high water, close timeout) guards
the client against a misbehaving server exactly as it guards a server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from iocpsvc import errors
from iocpsvc.codecs import Codec
from iocpsvc.context import ConnectionContext
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.request import RequestContext

__all__ = [
    "ReconnectingClientService",
    "RequestContext",
    "clientEndpoint",
    "clientFactory",
    "clientLimits",
    "connect",
    "reconnectingClient",
]

_log = Logger(namespace="iocpsvc.client")

ContextT = TypeVar("ContextT", bound=ConnectionContext)


CLIENT_MAX_PENDING_WRITE = 256 * 1024 * 1024


def clientLimits() -> ServerLimits:
    """
    The limits a client's factory gets unless it is given others:
    L{ServerLimits}'s defaults with no idle timeout (C{idleTimeout=0}), no
    connection limit (C{maxConnections=None}), and room for 256 MiB of
    requests waiting to be sent (C{maxPendingWrite}): a client's backlog is
    its own requests, which it should pace by C{writable}, and past that
    bound the connection is closed as C{slow-client}.
    """
    return ServerLimits(idleTimeout=0, maxConnections=None, maxPendingWrite=CLIENT_MAX_PENDING_WRITE)


def clientEndpoint(reactor: Any, description: str | IStreamClientEndpoint) -> IStreamClientEndpoint:
    """
    The client endpoint for C{description}: a Twisted client endpoint
    string (C{"tcp:host=127.0.0.1:port=9983"}, C{"unix:path=/run/s.sock"},
    C{"tls:example.com:443"}), parsed with C{clientFromString}, or an
    L{IStreamClientEndpoint} provider, returned as it is.

    @raise ValueError: the string is not a valid endpoint description.
    @raise TypeError: C{description} is neither.
    """
    if isinstance(description, str):
        return clientFromString(reactor, description)
    if IStreamClientEndpoint.providedBy(description):
        return description
    raise TypeError(f"{description!r} is neither an endpoint description nor an IStreamClientEndpoint")


def clientFactory(
    reactor: Any,
    contextClass: type[ConnectionContext] = ConnectionContext,
    codec: str | Codec | None = None,
    limits: ServerLimits | None = None,
) -> ConnectionContextFactory:
    """
    A L{ConnectionContextFactory} for outgoing connections: the same class
    servers use, with L{clientLimits} unless C{limits} are given.  Pass it
    to any client endpoint's C{connect} to share one factory (its registry
    of online contexts and its counters) among many connections.

    @param codec: a codec spec or L{Codec}; by default C{contextClass}'s
        own C{defaultCodec}, else C{"length"}, as on the server side.

    @raise iocpsvc.errors.CodecSpecError: the codec spec is malformed.
    """
    return ConnectionContextFactory(
        contextClass,
        codec,
        reactor=reactor,
        limits=limits if limits is not None else clientLimits(),
    )


def _connectedContext(protocol: object) -> ConnectionContext:
    if not isinstance(protocol, ConnectionContext):
        # The factory's own limits refused the connection (maxConnections,
        # or an allow/deny list that the server's address fails); the
        # protocol it returned instead has already closed it.
        raise ConnectError(string="refused by the client factory's limits")
    return protocol


@overload
def connect(
    reactor: Any,
    description: str | IStreamClientEndpoint,
    contextClass: type[ContextT],
    codec: str | Codec | None = None,
    limits: ServerLimits | None = None,
) -> Deferred[ContextT]: ...


@overload
def connect(
    reactor: Any,
    description: str | IStreamClientEndpoint,
    *,
    codec: str | Codec | None = None,
    limits: ServerLimits | None = None,
    factory: ConnectionContextFactory | None = None,
) -> Deferred[ConnectionContext]: ...


def connect(
    reactor: Any,
    description: str | IStreamClientEndpoint,
    contextClass: type[ConnectionContext] | None = None,
    codec: str | Codec | None = None,
    limits: ServerLimits | None = None,
    factory: ConnectionContextFactory | None = None,
) -> Deferred[Any]:
    """
    Open one connection and give it a context.

    The context is built by a L{ConnectionContextFactory} exactly as on a
    server (decoder, encoder, limits, counters); its C{connectionMade} has
    run by the time the Deferred fires.  Closing the context
    (C{context.close()} or C{abort()}) closes the connection; nothing
    reconnects it (see L{reconnectingClient} for that).

    @param reactor: the reactor to connect with and to time with.
    @param description: a client endpoint string (C{"tcp:host=H:port=P"},
        with C{timeout=SECONDS} for the connect timeout) or an
        L{IStreamClientEndpoint}; see L{clientEndpoint}.
    @param contextClass: the L{ConnectionContext} subclass to instantiate;
        C{ConnectionContext} itself when not given.
    @param codec: a codec spec (C{"line+json"}) or L{Codec}, the same specs
        as the server side; by default C{contextClass.defaultCodec}, else
        C{"length"}.
    @param limits: the factory's limits; L{clientLimits} by default.
    @param factory: keyword only: connect with this factory (and so share
        its counters and online registry with other connections) instead
        of building one; C{contextClass}, C{codec} and C{limits} must not
        be given with it.

    @return: a Deferred that fires with the connected context, or fails
        with the endpoint's error (C{ConnectionRefusedError},
        C{DNSLookupError}, C{TimeoutError}, ...), or with C{ConnectError}
        when the factory's own limits refuse the connection.  Cancelling
        it cancels the connection attempt.

    @raise TypeError: C{factory} was given with C{contextClass}, C{codec}
        or C{limits}, or C{description} is not a description or endpoint.
    @raise iocpsvc.errors.CodecSpecError: the codec spec is malformed.
    """
    if factory is None:
        factory = clientFactory(reactor, contextClass or ConnectionContext, codec, limits)
    elif contextClass is not None or codec is not None or limits is not None:
        raise TypeError("give either factory, or contextClass/codec/limits, not both")
    endpoint = clientEndpoint(reactor, description)
    connecting: Deferred[Any] = endpoint.connect(factory)
    return connecting.addCallback(_connectedContext)


class ReconnectingClientService(ClientService):
    """
    Twisted's C{ClientService} with a context factory: it keeps one
    connection up, reconnecting after the retry policy's delay whenever a
    connection attempt fails or an established connection is lost.

    Start it with C{startService()} (or add it to an application's
    C{MultiService}); C{whenConnected()} fires with the current context, or
    with the next one once connected.  C{stopService()} closes the context
    (reason C{shutdown}, what it was asked to write is sent first), stops
    reconnecting, and returns a Deferred that fires when the connection is
    gone.

    @ivar factory: the L{ConnectionContextFactory} that builds a context for
        each connection (its counters cover every connection so far).
    @ivar clock: the reactor that times the retries.
    """

    def __init__(
        self,
        endpoint: IStreamClientEndpoint,
        factory: ConnectionContextFactory,
        retryPolicy: Callable[[int], float] | None = None,
        clock: Any = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        # No prepareConnection: ClientService leaves a connection it rejected
        # open, and its loss then breaks the service's state machine.
        super().__init__(endpoint, factory, retryPolicy=retryPolicy, clock=clock)
        self.factory = factory
        self.clock = clock

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[Any]:
        """
        The current context, or the next one to connect.

        Unlike C{ClientService}'s own, the Deferred fires from the reactor
        (one turn later), outside the service's state machine, so that its
        callbacks may stop the service or ask for C{whenConnected} again;
        C{ClientService} raises C{RuntimeError} ("reentrantly") for those.

        @param failAfterFailures: fail after this many connection attempts
            in a row have failed; C{None}: wait until connected or stopped.

        @return: a Deferred that fires with the context, or fails with
            C{CancelledError} when the service stops first, or with the
            last attempt's error after C{failAfterFailures} failures.
        """
        return self._outsideMachine(super().whenConnected(failAfterFailures))

    def stopService(self) -> Deferred[None]:
        """
        Close the current context (reason C{shutdown}) and stop
        reconnecting.

        @return: a Deferred that fires (from the reactor, as
            L{whenConnected}'s does) once the connection is closed and no
            attempt is in progress.
        """
        # ClientService would close the transport under the context, which
        # would record the close as the peer's doing.
        for context in self.factory.contexts():
            context.close(errors.SHUTDOWN)
        return self._outsideMachine(super().stopService())

    def _outsideMachine(self, machine: Deferred[Any]) -> Deferred[Any]:
        """
        A Deferred that fires like C{machine}, but one reactor turn later:
        C{ClientService}'s Deferreds fire from inside its state machine,
        which refuses to be called again from their callbacks.
        """
        relayed: Deferred[Any] = Deferred(lambda _: machine.cancel())

        def relay(result: object) -> None:
            self.clock.callLater(0, _fireUnlessCancelled, relayed, result)

        machine.addBoth(relay)
        return relayed


def _fireUnlessCancelled(deferred: Deferred[Any], result: object) -> None:
    if deferred.called:
        return  # cancelled meanwhile
    if isinstance(result, Failure):
        deferred.errback(result)
    else:
        deferred.callback(result)


def reconnectingClient(
    reactor: Any,
    description: str | IStreamClientEndpoint,
    contextClass: type[ConnectionContext] = ConnectionContext,
    codec: str | Codec | None = None,
    limits: ServerLimits | None = None,
    retryPolicy: Callable[[int], float] | None = None,
) -> ReconnectingClientService:
    """
    A service that keeps one connection to C{description} up, with a fresh
    context of C{contextClass} for every connection it makes.

    Nothing happens until the service is started: call C{startService()}
    (or give it a parent service), and C{stopService()} when done, which
    closes the connection and stops retrying::

        service = reconnectingClient(reactor, "tcp:host=10.0.0.5:port=9983",
                                     RequestContext, "line+json")
        service.startService()
        context = await service.whenConnected()
        reply = await context.request({"op": "ping"})
        ...
        await service.stopService()

    C{service.whenConnected()} fires with the connected context, or waits
    for the next connection; C{whenConnected(failAfterFailures=N)} fails
    after N attempts in a row have failed.  A context is not reused: after
    a reconnection C{whenConnected()} gives the new one, and requests that
    were waiting on the old one have failed with its connection loss.

    @param description: a client endpoint string or an
        L{IStreamClientEndpoint}, as for L{connect}.
    @param contextClass: the L{ConnectionContext} subclass to instantiate.
    @param codec: a codec spec or L{Codec}, as for L{connect}.
    @param limits: the factory's limits; L{clientLimits} by default.
    @param retryPolicy: given how many attempts in a row have failed,
        the seconds to wait before the next one; by default
        C{twisted.application.internet.backoffPolicy()} (1 second, growing
        by 1.5 each time up to a minute, plus up to a second of jitter).

    @return: a L{ReconnectingClientService}, a Twisted C{ClientService}.
    """
    return ReconnectingClientService(
        clientEndpoint(reactor, description),
        clientFactory(reactor, contextClass, codec, limits),
        retryPolicy=retryPolicy if retryPolicy is not None else backoffPolicy(),
        clock=reactor,
    )
