"""
The one seam between iocpsvc and the internals of Twisted's transports:
everything that knows more of a transport than its public interfaces is
here, so that the context (and the next transport kinds) have one place to
ask::

    unsentBytes          the bytes written and not yet sent (a connection,
                         a pipe to a worker process, a link to Redis)
    canSendNow, sendNow  a reply sent straight to the socket from the turn
                         that made it
    isProducerOf         whether a producer is registered with a transport
    writingTransport     where what is written to standard I/O waits
    abortOrClose         a close at once, whatever the transport offers
    lowestTransport      the socket's own transport beneath TLS/haproxy:
    proxyWrapperClass, isProxyWrapper
                         Twisted's PROXY-protocol wrapper (haproxy:), found
                         through its public API, not imported
    setWriteHighWater    the mark past which a transport pauses its producer
    enableKeepAlive, setKeepAlive
                         TCP keep-alive and its probe timing
    isTlsError, tlsHandshakeDone, describeTlsError
                         what a TLS failure was, for one log line

Where written bytes wait in Twisted 26.10 (this module is the one that
reads these buffers; the rest of iocpsvc asks it)::

    context.writeBytes / writeObject
      -> BufferingTLSTransport._aggregator   plaintext, small writes joined
                                             until the next reactor turn
                                             (at most 64,000 bytes)
      -> TLSMemoryBIOProtocol._appSendBuffer plaintext OpenSSL could not
                                             take yet (before the handshake
                                             has finished, or while it wants
                                             to read first)
      -> the memory BIO of its OpenSSL       ciphertext not yet moved on
         connection                          (Twisted moves 32 KiB a time)
      -> the TCP transport's dataBuffer,     ciphertext the socket has not
         offset and _tempDataBuffer          taken yet
      -> the kernel's socket buffer          not counted, TLS or not

Over plain TCP only the TCP transport's buffer is there.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

_log = Logger(namespace="iocpsvc.transports")


def unsentBytes(transport: Any) -> int | None:
    """
    Bytes handed to C{transport} and not yet written to its descriptor:
    for Twisted's own descriptor-based transports (TCP, pipes, standard
    I/O), what waits in their buffer; behind Twisted's TLS, the plaintext
    that TLS holds unencrypted plus the ciphertext not yet written to the
    socket (so a little more than the plaintext itself: a record's header
    and tag, and any handshake or session ticket bytes still queued);
    behind another protocol wrapper (C{haproxy:}), what the transport
    beneath it holds.  C{None} for a transport that does not tell (a
    wrapper over one that does not, a test double).
    """
    # One class check sends wrappers their own way; a TCP transport pays
    # only it before reading its buffer.
    if isinstance(transport, ProtocolWrapper):
        return _wrappedUnsent(transport)
    data = getattr(transport, "dataBuffer", None)
    if data is None:
        native = getattr(transport, "unsentBytes", None)  # iocpsvc.native's connections
        return native() if native is not None else None
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)


def _wrappedUnsent(wrapper: ProtocolWrapper) -> int | None:
    """
    What C{wrapper} holds itself (only TLS holds anything) plus what the
    transport beneath it holds.  TLS's attributes are read from the
    instance's own dict: a C{ProtocolWrapper} forwards the names it lacks
    to the transport beneath it (so a TLS transport's C{dataBuffer} is the
    TCP transport's, and TLS over TLS would find the outer one's buffers).
    """
    below = unsentBytes(wrapper.transport)
    if below is None:
        return None
    tls = sys.modules.get("twisted.protocols.tls")
    if tls is not None and isinstance(wrapper, tls.TLSMemoryBIOProtocol):
        return below + _tlsHeldBytes(wrapper)
    return below


def _tlsHeldBytes(transport: Any) -> int:
    """
    The bytes Twisted's TLS protocol C{transport} (a
    C{TLSMemoryBIOProtocol}) holds and has not yet written to the transport
    beneath it: plaintext in its small-write aggregator and in
    C{_appSendBuffer}, and ciphertext in its OpenSSL memory BIO.  Not
    what the transport beneath it holds (see L{unsentBytes}).
    """
    own = transport.__dict__
    held = 0
    aggregator = own.get("_aggregator")
    # A _NullAggregator (after the connection is lost) has no buffer; an
    # empty buffer holds nothing, whatever _bufferLeft says (Twisted's flush
    # drops writes made from inside it without restoring _bufferLeft).
    buffered = getattr(aggregator, "_buffer", None)
    if buffered:
        # Twisted keeps _bufferLeft = MAX_BUFFER_SIZE - (bytes in _buffer):
        # read in O(1), not by summing what may be thousands of small writes
        # on each write to a blocked client.  A Twisted without it (23.10)
        # is summed instead: slower, not wrong.
        try:
            held += aggregator.MAX_BUFFER_SIZE - aggregator._bufferLeft
        except AttributeError:
            held += sum(map(len, buffered))
    waiting = own.get("_appSendBuffer")
    if waiting:
        held += sum(map(len, waiting))
    connection = own.get("_tlsConnection")
    if connection is not None:
        held += _memoryBioBytes(connection)
    return held


_bioPending: Callable[[Any], int] | None = None


def _memoryBioBytes(connection: Any) -> int:
    """
    Ciphertext waiting in the memory BIO of the pyOpenSSL C{Connection}
    C{connection}, read without taking it out.  pyOpenSSL has no public
    call for it; its own binding of C{BIO_get_mem_data} (which pyOpenSSL
    uses itself) says it.  0 if that binding is not there.
    """
    global _bioPending
    if _bioPending is None:
        _bioPending = _bioPendingReader()
    try:
        return _bioPending(connection)
    except Exception:  # torn down under us, or a pyOpenSSL without these names
        return 0


def _bioPendingReader() -> Callable[[Any], int]:
    """A reader of a pyOpenSSL connection's memory BIO, or of 0s without the binding."""
    try:
        from OpenSSL._util import ffi, lib

        getMemData = lib.BIO_get_mem_data
        null = ffi.NULL
    except Exception:
        return lambda connection: 0

    def pending(connection: Any) -> int:
        bio = connection._from_ssl
        return int(getMemData(bio, null)) if bio is not None else 0

    return pending


# -- sending now, from this reactor turn -------------------------------------------

_DIRECT: tuple[type, ...] | None = None


def _directTransports() -> tuple[type, ...]:
    """Twisted's POSIX TCP transport classes (matched exactly: subclasses may differ)."""
    global _DIRECT
    if _DIRECT is None:
        try:
            from twisted.internet import tcp

            _DIRECT = (tcp.Server, tcp.Client)
        except ImportError:
            _DIRECT = ()
    return _DIRECT


def canSendNow(transport: Any) -> bool:
    """
    Whether L{sendNow} can ever send on C{transport}: Twisted's own POSIX
    TCP transports; TLS, the IOCP reactor, wrappers and anything unknown
    take C{transport.write}.
    """
    return type(transport) in _directTransports()


def sendNow(transport: Any, data: bytes) -> int:
    """
    Send C{data} straight to the socket of C{transport} (one that
    L{canSendNow} accepted), from this reactor turn, if nothing is queued
    before it: rather than queue it and arm the writer for a later turn,
    which costs two C{epoll_ctl} calls and a loop turn per reply.

    @return: how many bytes the socket took (0 if it would block, or on an
        error Twisted's own write will report); -1 when the transport must
        be written to as usual (something is queued, it is closing).  What
        the socket did not take goes through C{transport.write}, after it,
        in order.
    """
    # Hot path: plain attribute reads of Twisted's tcp.Connection, in the
    # order that rules a send out soonest.
    if (
        transport.dataBuffer
        or transport._tempDataBuffer
        or not transport.connected
        or transport.disconnecting
        or transport.TLS
        or transport._writeDisconnected
    ):
        return -1
    try:
        sent: int = transport.socket.send(data)
        return sent
    except OSError:
        return 0


def isProducerOf(transport: Any, producer: object) -> bool:
    """
    Whether C{producer} is the producer registered with C{transport}
    (behind TLS, it sits inside Twisted's producer membrane).
    """
    registered = getattr(transport, "producer", None)
    if registered is None:
        registered = getattr(transport, "_producer", None)
    return registered is producer or getattr(registered, "_producer", None) is producer


def writingTransport(transport: Any) -> Any:
    """
    The transport that holds what is written to C{transport}: standard
    I/O's writer (which keeps its writing end apart), else C{transport}.
    """
    return getattr(transport, "_writer", transport)


RESET_LINGER = struct.pack("ii", 1, 0)
"""
SO_LINGER on, 0 seconds: closing the socket resets the connection at once,
leaving no TIME_WAIT on this side (a refusal at accept is not a
conversation).
"""


def resetOnClose(sock: Any) -> None:
    """Make closing C{sock} reset the connection (L{RESET_LINGER}); a socket already gone is left be."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_LINGER)
    except OSError:
        pass



def abortOrClose(transport: Any) -> None:
    """
    Close C{transport} at once, dropping what was not sent: its
    C{abortConnection} where it has one, else C{loseConnection}.
    """
    abortConnection = getattr(transport, "abortConnection", None)
    if abortConnection is not None:
        abortConnection()
    else:
        transport.loseConnection()


# -- the socket beneath wrappers: high water, keep-alive ------------------------------


def lowestTransport(transport: Any) -> Any:
    """Past protocol wrappers (TLS, C{haproxy:}) to the socket's own transport."""
    # A ProtocolWrapper forwards unknown attributes to what it wraps, so ask
    # its class, not hasattr, whether it is a wrapper.
    for _ in range(4):
        if not isinstance(transport, ProtocolWrapper) or transport.transport is None:
            break
        transport = transport.transport
    return transport


_proxyWrapper: tuple[Any, type | None] | None = None


@implementer(IStreamServerEndpoint)
class _FactoryRecorder:
    """An endpoint that listens on nothing and keeps the factory it was given."""

    factory: Any = None

    def listen(self, protocolFactory: Any) -> Deferred[Any]:
        self.factory = protocolFactory
        return succeed(None)


def proxyWrapperClass() -> type | None:
    """
    Twisted's PROXY-protocol wrapper class (what a C{haproxy:} endpoint
    wraps each connection in) if C{twisted.protocols.haproxy} has been
    imported already, else C{None}.  Before that, no transport and no
    factory can be one: asking this instead of importing it leaves
    C{twisted.protocols.haproxy} (and L{iocpsvc.proxy}) out of a server
    that is not behind C{haproxy:}.

    The class lives in a private module of Twisted's; it is found through
    the package's public C{proxyEndpoint} instead of imported: the wrapping
    factory it gives the endpoint it wraps is a C{WrappingFactory}, whose
    C{protocol} is the wrapper.  C{None} too, with a warning logged once,
    if a Twisted release stops building it so (L{iocpsvc.proxy} then leaves
    Twisted's wrapper to itself; the tests of C{haproxy:} fail first).
    """
    global _proxyWrapper
    haproxy = sys.modules.get("twisted.protocols.haproxy")
    if haproxy is None:
        return None
    if _proxyWrapper is None or _proxyWrapper[0] is not haproxy:
        recorder = _FactoryRecorder()
        wrapper: type | None = None
        try:
            haproxy.proxyEndpoint(recorder).listen(Factory())
        except Exception:
            pass  # not built as expected either: warned about below
        protocol = getattr(recorder.factory, "protocol", None)
        if (
            isinstance(recorder.factory, WrappingFactory)
            and isinstance(protocol, type)
            and issubclass(protocol, ProtocolWrapper)
        ):
            wrapper = protocol
        else:
            _log.warn(
                "Twisted's haproxy: endpoint does not wrap connections as iocpsvc expects "
                "(a WrappingFactory of ProtocolWrappers); their PROXY headers are left to "
                "Twisted's own wrapper, without iocpsvc's checks, counters and held contexts"
            )
        _proxyWrapper = (haproxy, wrapper)
    return _proxyWrapper[1]


def isProxyWrapper(transport: Any) -> bool:
    """Whether C{transport} is Twisted's PROXY-protocol wrapper (see L{proxyWrapperClass})."""
    wrapperClass = proxyWrapperClass()
    return wrapperClass is not None and isinstance(transport, wrapperClass)


def setWriteHighWater(transport: Any, size: int) -> None:
    """
    Set the unsent-bytes mark past which a transport pauses its producer:
    C{bufferSize} on Twisted's POSIX transports, C{writeBufferSize} on the
    IOCP reactor's.  Behind TLS the mark applies to the encrypted bytes.
    """
    lowest = lowestTransport(transport)
    if hasattr(lowest, "writeBufferSize"):
        lowest.writeBufferSize = size
    elif hasattr(lowest, "bufferSize"):
        lowest.bufferSize = size


def enableKeepAlive(transport: Any, idle: int, interval: int, count: int) -> None:
    """
    TCP keep-alive on the socket beneath C{transport}, with the probe
    timing (seconds of silence, seconds between probes, probes) where the
    platform lets it be set.  Transports that are not TCP are left alone,
    and so are those whose socket took it from its listening socket
    (C{keepAliveInherited}: L{iocpsvc.native} on Linux).
    """
    transport = lowestTransport(transport)
    if getattr(transport, "setTcpKeepAlive", None) is None:
        return  # not a TCP transport
    if getattr(transport, "keepAliveInherited", False):
        return
    try:
        # A socket, or an event loop's socket-like object (iocpsvc.native):
        # asked for once, and every option set on it.
        handle = transport.getHandle()
    except Exception:
        return
    setKeepAlive(handle, idle, interval, count)


def setKeepAlive(handle: Any, idle: int, interval: int, count: int) -> bool:
    """
    Turn TCP keep-alive on for the socket (or socket-like object)
    C{handle}, with its probe timing where the platform has the options.

    @return: whether keep-alive itself could be turned on.
    """
    import socket

    try:
        handle.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    except Exception:
        return False
    for option, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count)):
        constant = getattr(socket, option, None)
        if constant is not None:
            try:
                handle.setsockopt(socket.IPPROTO_TCP, constant, value)
            except OSError:
                pass
    return True


# -- TLS diagnostics --------------------------------------------------------------


def isTlsError(reason: Any) -> bool:
    """
    Whether C{reason} (a C{Failure}) is OpenSSL's: the connection was lost
    to a TLS error (a client that sent something other than a handshake,
    shared no protocol or cipher, rejected the certificate, or broke a
    record later).
    """
    # Only a TLS transport raises OpenSSL errors, and it has imported
    # OpenSSL by then: plain TCP closes pay a dict lookup, not an import.
    openssl = sys.modules.get("OpenSSL.SSL")
    return openssl is not None and bool(reason.check(openssl.Error))


def tlsHandshakeDone(transport: Any) -> bool:
    """
    Whether the TLS handshake on C{transport} completed: the peer's Finished
    message arrived.  When that cannot be told, say it did.
    """
    try:
        return transport.getHandle().get_peer_finished() is not None
    except Exception:  # not pyOpenSSL underneath, or already torn down
        return True


def describeTlsError(error: BaseException | None, separator: str = "; ") -> str:
    """
    OpenSSL's reasons (C{"wrong version number"}), without library names
    or codes, joined with C{separator}; the error's own text when it has
    none.
    """
    queue = error.args[0] if error is not None and error.args else None
    if isinstance(queue, list):
        reasons = [str(e[2]) for e in queue if isinstance(e, tuple) and len(e) == 3 and e[2]]
        if reasons:
            return separator.join(reasons)
    return str(error) or type(error).__name__
