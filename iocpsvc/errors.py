"""
Errors raised by codecs (and by the PROXY header check behind C{haproxy:}),
the fixed set of reasons a connection closes, and the errors of worker
processes and of their control channel to the parent.

A decoder raises a L{DecodeError} subclass when the stream breaks its wire
format.  Each carries C{closeReason}, the close reason the context records
when it closes the connection because of it.

A call over the control channel between a parent and its worker processes
(L{iocpsvc.workers.channel}) fails with a L{ControlChannelError} subclass
that says why there is no answer.
"""

from __future__ import annotations

from typing import Final

from twisted.internet.defer import TimeoutError as DeferredTimeoutError

# The reasons a connection can close.  Every close carries exactly one,
# visible to connectionLost handlers as ``context.closeReason`` and counted
# per reason on the factory.
PEER: Final = "peer"
"""The peer closed the connection, or it was lost (reset, network error)."""
IDLE: Final = "idle"
"""Nothing was received for longer than the idle timeout."""
FRAME_TOO_LONG: Final = "frame-too-long"
"""A header claimed a frame larger than the codec's maximum."""
PROTOCOL_ERROR: Final = "protocol-error"
"""
The stream broke the wire format: bad header, flag, checksum, encoding; or,
behind TLS, a failed handshake or a broken TLS record.
"""
SLOW_CLIENT: Final = "slow-client"
"""The peer did not read what was sent to it fast enough."""
REFUSED: Final = "refused"
"""The connection was refused at accept (limit or address filter)."""
NO_DESCRIPTORS: Final = "no-descriptors"
"""
The process had no file descriptor left for the connection (C{EMFILE} or
C{ENFILE} at accept): it was accepted on a reserve descriptor and closed at
once.
"""
HANDLER_ERROR: Final = "handler-error"
"""Application code (objectReceived, an encoder) raised."""
SHUTDOWN: Final = "shutdown"
"""The server is stopping."""
LOCAL: Final = "local"
"""The application closed the connection itself (close() or abort())."""

CLOSE_REASONS: Final = (
    PEER,
    IDLE,
    FRAME_TOO_LONG,
    PROTOCOL_ERROR,
    SLOW_CLIENT,
    REFUSED,
    NO_DESCRIPTORS,
    HANDLER_ERROR,
    SHUTDOWN,
    LOCAL,
)


class DecodeError(Exception):
    """
    The byte stream violates the wire format; the connection cannot be
    trusted any more and is closed.

    @ivar reason: a human-readable description of what was wrong.
    """

    closeReason: str = PROTOCOL_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameTooLong(DecodeError):
    """
    A frame is (or a header claims it is) longer than the maximum.

    @ivar length: the claimed length, or C{None} when it is not known (a
        delimiter was not found within the maximum).
    @ivar maximum: the maximum frame length in force.
    """

    closeReason = FRAME_TOO_LONG

    def __init__(self, length: int | None, maximum: int) -> None:
        if length is None:
            reason = f"no frame end within the maximum of {maximum} bytes"
        else:
            reason = f"frame of {length} bytes exceeds the maximum of {maximum}"
        super().__init__(reason)
        self.length = length
        self.maximum = maximum


class CorruptFrame(DecodeError):
    """
    A header, flag, length or payload is malformed (negative length,
    wrong magic, invalid UTF-8 or JSON, ...).
    """


class ChecksumMismatch(CorruptFrame):
    """A frame's checksum does not match its payload."""

    def __init__(self, expected: int, actual: int) -> None:
        super().__init__(f"checksum mismatch: header says {expected:#x}, data sums to {actual:#x}")
        self.expected = expected
        self.actual = actual


class ProxyHeaderError(DecodeError):
    """
    Behind C{haproxy:}, a connection's PROXY protocol header is malformed
    (L{iocpsvc.proxy}); the connection is closed before it reaches a
    context.  The reason names what is wrong, e.g. C{"invalid client port
    '+80' in PROXY header"}.
    """


class EncodeError(Exception):
    """
    An object cannot be encoded: wrong type for the codec, no L{IEncoder}
    adapter for its class, or too long for the wire format.
    """


class CodecSpecError(ValueError):
    """
    A codec spec string is malformed; the message names the bad part.
    """


class ControlChannelError(Exception):
    """
    A call over the control channel between a parent and one of its
    worker processes got no answer; the subclass says why.
    """


class ControlChannelClosed(ControlChannelError):
    """
    The control channel is closed (the worker, or its parent, is gone):
    the call was made after it closed, or was waiting when it closed.
    """


class BadControlMessage(ControlChannelClosed):
    """
    The control channel was closed because the other end sent bytes that
    are not a message (not length-prefixed JSON, or longer than the
    channel's maximum); the calls waiting on it fail with this.
    """


class ControlChannelFull(ControlChannelError):
    """
    A control message was dropped: the other end is not reading, and more
    than the channel's C{maxUnsent} bytes wait for it.
    """


class ControlCallTimeout(ControlChannelError, DeferredTimeoutError):
    """
    The other end did not answer a call within its timeout.  Also a
    C{twisted.internet.defer.TimeoutError}, what C{Deferred.addTimeout}
    raises.

    @ivar op: the operation asked for.
    @ivar timeout: the seconds it was given.
    """

    def __init__(self, op: str, timeout: float) -> None:
        super().__init__(f"control channel: no answer to {op} within {timeout:g}s")
        self.op = op
        self.timeout = timeout


class ControlCallFailed(ControlChannelError):
    """
    The other end answered a call with an error: it has no handler for the
    operation, or its handler failed.  The message is the other end's.
    """


class NoInheritedSocket(Exception):
    """
    A worker process was asked to listen more times than its parent handed
    it listening sockets: its C{--port} descriptions are not its parent's.
    """


class UnboundContext(RuntimeError):
    """
    A context was asked to encode before it was bound to a host (given its
    decoder and encoder by L{iocpsvc.context.ConnectionContext.bind}, which
    its factory does when it makes it).
    """


class NoDecoderRegistered(RuntimeError):
    """A factory was asked for a decoder before one was registered (C{registerCodec}, C{registerDecoder})."""
