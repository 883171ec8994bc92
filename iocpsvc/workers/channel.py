"""
The control channel between a parent and each of its worker processes
(descriptors 3 and 4 of the worker, see L{iocpsvc.workers.handover}): the
same protocol at both ends.

It carries length-prefixed JSON objects (the C{length} and C{json} codecs
of this package)::

    {"op": "stats", "id": 7}                  a request; answered with
    {"reply": 7, "result": {...}}             its result, or
    {"reply": 7, "error": "unknown op ..."}   an error
    {"op": "ready"}                           a message without an answer
    {"op": "bus", "m": "BASE64"}              (no "id"), such as a cluster
                                              message (L{iocpsvc.cluster})

A call that gets no answer fails with a
L{iocpsvc.errors.ControlChannelError} saying why.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from iocpsvc.codecs import encodedBytes, parseCodecSpec
from iocpsvc.errors import (
    BadControlMessage,
    ControlCallFailed,
    ControlCallTimeout,
    ControlChannelClosed,
    ControlChannelFull,
)
from iocpsvc.transports import unsentBytes, writingTransport

_log = Logger(namespace="iocpsvc.workers")

# Big enough for a /connections.json answer of 1,000 rows.
_CONTROL_CODEC = parseCodecSpec("length:max=64MiB+json")


class ControlChannel(Protocol):
    """
    One end of the parent/worker control channel: requests with answers
    (L{call}), messages without (L{send}), and handlers for what the other
    end asks (C{handlers[op](message)}, whose result, or Deferred, is the
    answer).

    What is written and not yet read by the other end is bounded: past
    C{maxUnsent} bytes (as C{unsent()} tells), a message is dropped and
    counted in C{droppedTotal}, and a call fails with L{ControlChannelFull}
    -- a stopped worker must not make its parent (or a worker its parent)
    buffer without end.

    A call that gets no answer fails with a
    L{iocpsvc.errors.ControlChannelError}: L{ControlChannelClosed} (or
    L{BadControlMessage}, when the other end's bytes made no sense),
    L{ControlChannelFull}, L{ControlCallTimeout}, or L{ControlCallFailed}
    when the other end answered with an error.

    @ivar onLost: called with the reason when the channel closes.
    """

    maxUnsent = 16 * 1024 * 1024

    def __init__(
        self,
        handlers: dict[str, Callable[[dict[str, Any]], Any]],
        write: Callable[[bytes], None] | None = None,
        unsent: Callable[[], int | None] | None = None,
    ) -> None:
        self.handlers = handlers
        self._write = write
        self._unsent = unsent
        self._decoder = _CONTROL_CODEC.newDecoder()
        self._encode = _CONTROL_CODEC.encoder.encode
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._waiting: dict[int, Deferred[Any]] = {}
        self.onLost: Callable[[Failure], None] | None = None
        self.lost = False
        self.droppedTotal = 0
        self._undecodable: str | None = None

    def connectionMade(self) -> None:
        if self._write is None and self.transport is not None:
            self._write = self.transport.write
        if self._unsent is None and self.transport is not None:
            writer = writingTransport(self.transport)
            self._unsent = lambda: unsentBytes(writer)

    def _sendObject(self, message: dict[str, Any]) -> bool:
        if self.lost or self._write is None:
            return False
        if self._unsent is not None and (self._unsent() or 0) > self.maxUnsent:
            self.droppedTotal += 1
            return False
        self._write(encodedBytes(self._encode(message)))
        return True

    def send(self, op: str, **fields: Any) -> bool:
        """
        Send a message that has no answer.

        @return: whether it was sent (not dropped: closed, or too much unread).
        """
        return self._sendObject({"op": op, **fields})

    def call(self, op: str, timeout: float | None = None, clock: Any = None, **fields: Any) -> Deferred[Any]:
        """
        Ask the other end; the Deferred fires with its answer, or fails
        with a L{iocpsvc.errors.ControlChannelError} (closed, full, an
        error answered, or no answer within C{timeout} seconds of
        C{clock}).
        """
        if self.lost:
            return fail(self._closedError())
        requestId = next(self._ids)

        def forget(_: Deferred[Any]) -> None:
            # Cancelled (as the timeout does): a late answer is ignored.
            self._waiting.pop(requestId, None)

        answer: Deferred[Any] = Deferred(forget)
        self._waiting[requestId] = answer
        if not self._sendObject({"op": op, "id": requestId, **fields}):
            self._waiting.pop(requestId, None)
            return fail(ControlChannelFull(f"control channel: {op} not sent"))
        if timeout is not None and clock is not None:

            def timedOut(result: Any, timeout: float) -> Any:
                if isinstance(result, Failure) and result.check(CancelledError):
                    raise ControlCallTimeout(op, timeout)
                return result

            answer.addTimeout(timeout, clock, timedOut)
        return answer

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        messages: list[Any] = []
        try:
            used = self._decoder.decode(buffer, messages)
        except Exception as e:
            self._undecodable = str(e)
            _log.error("control channel: undecodable data ({error}); closing it", error=e)
            del buffer[:]
            if self.transport is not None:
                self.transport.loseConnection()
            return
        del buffer[:used]
        for message in messages:
            self._handle(message)

    def _handle(self, message: Any) -> None:
        if not isinstance(message, dict):
            return
        if "reply" in message:
            answer = self._waiting.pop(message["reply"], None)
            if answer is None or answer.called:
                return
            if "error" in message:
                answer.errback(ControlCallFailed(message["error"]))
            else:
                answer.callback(message.get("result"))
            return
        handler = self.handlers.get(message.get("op", ""))
        requestId = message.get("id")
        if handler is None:
            if requestId is not None:
                self._sendObject({"reply": requestId, "error": f"unknown op {message.get('op')!r}"})
            return
        result = maybeDeferred(handler, message)
        if requestId is None:
            result.addErrback(lambda f: _log.failure("control handler {op} failed", f, op=message["op"]))
            return

        def answered(value: Any) -> None:
            self._sendObject({"reply": requestId, "result": value})

        def failed(failure: Failure) -> None:
            self._sendObject({"reply": requestId, "error": str(failure.value)})

        result.addCallbacks(answered, failed)

    def _closedError(self) -> ControlChannelClosed:
        """Why a call fails once the channel is closed."""
        if self._undecodable is not None:
            return BadControlMessage(f"control channel closed: undecodable data ({self._undecodable})")
        return ControlChannelClosed("control channel closed")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost = True
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.called:
                answer.errback(self._closedError())
        if self.onLost is not None:
            self.onLost(reason)
