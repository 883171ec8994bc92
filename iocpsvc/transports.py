"""
What Twisted's transports tell about themselves, read the same way
everywhere: the unsent bytes behind a connection, a pipe to a worker
process, or a link to Redis.

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

import sys
from collections.abc import Callable
from typing import Any

from twisted.protocols.policies import ProtocolWrapper


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
        return None
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
    if aggregator is not None and getattr(aggregator, "_buffer", None):
        # Twisted keeps _bufferLeft = MAX_BUFFER_SIZE - (bytes in _buffer):
        # read in O(1), not by summing what may be thousands of small writes
        # on each write to a blocked client.
        held += aggregator.MAX_BUFFER_SIZE - aggregator._bufferLeft
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
