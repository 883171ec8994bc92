"""
The contracts of iocpsvc.

Data flows one way::

    socket -> context (receive buffer) -> IDecoder -> objectReceived
           -> writeObject -> IEncoder -> transport

A *framer* is an L{IDecoder}/L{IEncoder} pair that turns the byte stream into
frames (C{bytes}) and back.  An *object codec* is an L{IObjectDecoder} /
L{IEncoder} pair that turns one frame into one object (text, JSON, ...) and
back.  A codec chain is one framer followed by zero or more object codecs,
written as a spec string such as C{length:size=2+json}.

Codecs are pure: they see bytes and objects, never a transport, a reactor or a
context.  That is what lets the same codec run on the server side, on the
client side and in unit tests without sockets.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress
from zope.interface import Attribute, Interface


class IDecoder(Interface):
    """
    Turns a connection's byte stream into objects.

    B{One instance per connection.}  A decoder may keep state between calls
    (a parsed header, how far it has already scanned for a delimiter, ...);
    the context creates a fresh decoder for every connection by calling the
    factory's registered decoder factory.

    The context owns the receive buffer; the decoder never stores the buffer
    itself, only positions relative to the start of the bytes it was last
    given that it did not consume.

    A decoder class that keeps no state between calls (it re-reads its
    header each time) may say so with a class attribute C{stateless = True}:
    one instance then serves every connection, which saves memory per
    connection.
    """

    maxFrameLength = Attribute(
        "The largest frame, in bytes, this decoder accepts.  A header that "
        "claims more raises L{iocpsvc.errors.FrameTooLong} at once, before the "
        "payload arrives and without allocating it."
    )

    def decode(data: bytes | bytearray, out: list[object]) -> int:
        """
        Decode every complete frame at the start of C{data}.

        Each complete object found is appended to C{out}, in stream order.
        The return value is the number of bytes consumed from the start of
        C{data}: the caller discards exactly those bytes and passes the rest,
        followed by newly received bytes, to the next call.  Bytes of an
        incomplete frame are not consumed ("half packets" stay buffered);
        several frames in one call are all decoded ("sticky packets").

        Returning 0 with nothing appended means "need more bytes".  A decoder
        may consume bytes that produce no object (a keep-alive frame, a
        skipped frame).

        To stay linear in the size of the stream, a decoder must not re-scan
        bytes it has already examined on an earlier call (for example, a
        delimiter search resumes where the last one stopped), and must copy
        each frame at most once.

        @param data: the unconsumed bytes of the stream.  Do not keep a
            reference to it: the context mutates it after the call.
        @param out: the list to append decoded objects to.

        @return: the number of bytes consumed, C{0 <= n <= len(data)}.

        @raise iocpsvc.errors.DecodeError: the stream violates the wire
            format (L{iocpsvc.errors.FrameTooLong},
            L{iocpsvc.errors.CorruptFrame},
            L{iocpsvc.errors.ChecksumMismatch}).  The stream cannot be trusted
            after that: the context closes this connection, and only this
            one.  Objects appended to C{out} before the error are still
            valid and are delivered before the connection is closed.
        """

    def decodeLast(data: bytes) -> list[object]:
        """
        The connection has ended; C{data} is what was never consumed.

        Return the objects that the remaining bytes still make, if the wire
        format allows a final frame without its terminator; most framers
        return C{[]} and the context counts the discarded bytes as a
        truncated frame.  Called at most once, and never after a
        L{iocpsvc.errors.DecodeError}.
        """


class IEncoder(Interface):
    """
    Turns one object into bytes.

    An encoder is shared by all the connections of a factory: it must not
    keep per-connection state.  It is also the interface to adapt an
    application's own message class to, with
    C{twisted.python.components.registerAdapter(MyEncoder, MyMessage,
    IEncoder)}: C{writeObject(message)} then encodes the message by
    adaptation, and the framer wraps the bytes the adapter returns.

    A framer's encoder whose wire format has a keep-alive frame (one the
    peer consumes and never answers: DIOCP's zero-length frame) says so
    with an optional attribute C{keepAliveFrame}, its bytes.  Clients send
    it only when they have nothing else to send
    (L{iocpsvc.client.RequestContext.sendKeepAlive}): some peers stop
    decoding a read at a keep-alive and leave what follows it waiting.
    """

    def encode(obj: object) -> bytes | list[bytes] | tuple[bytes, ...]:
        """
        Encode C{obj}.

        @return: either one C{bytes}, or a list or tuple of C{bytes} chunks
            that are sent in order as if concatenated (so that an encoder
            need not copy a large payload to put a header before it: the
            context joins a whole batch of chunks once, in C).

        @raise iocpsvc.errors.EncodeError: C{obj} cannot be encoded (wrong
            type, or larger than the wire format allows).
        """


class IBatch(Interface):
    """
    The writes of one read's dispatch, kept in order and encoded together
    when the context flushes them: made by an L{IBatchEncoder} for each
    read.  It also takes bytes already encoded, as a list does.
    """

    def add(obj: object) -> None:
        """
        Keep C{obj} to be encoded at L{take}.  Whatever would make C{encode}
        refuse C{obj} is checked now.

        @raise iocpsvc.errors.EncodeError: as C{encode(obj)} would, now, so
            that C{writeObject} raises where it always has.
        """

    def append(chunk: bytes) -> None:
        """Keep C{chunk}, bytes already encoded, to be sent as they are."""

    def extend(chunks: Iterable[bytes]) -> None:
        """Append each of C{chunks}."""

    def take() -> bytes:
        """
        Everything kept, encoded, in order, as one C{bytes}; the batch is
        empty afterwards.
        """

    def __len__() -> int:
        """How many objects and chunks are kept."""


class IBatchEncoder(IEncoder):
    """
    An encoder that can also encode the writes of a whole read together:
    the built-in framers' compiled encoders (L{iocpsvc.accel}).  A context
    whose factory's encoder provides it collects the objects that
    C{writeObject} is given while a read is dispatched in one
    L{IBatch} and encodes them in one call at the flush, instead of one
    C{encode} call per object.  Optional: an application's own encoder,
    or an L{IEncoder} adapter, keeps being called once per object.
    """

    def newBatch() -> IBatch:
        """A new, empty L{IBatch} of this encoder."""


class IObjectDecoder(Interface):
    """
    Turns one frame into one object: the stages after the framer in a codec
    chain (C{text}, C{json}, ...).  Shared by all connections, so stateless.
    """

    def decodeObject(frame: object) -> object:
        """
        Decode one frame (the output of the previous stage).

        @raise iocpsvc.errors.CorruptFrame: the frame is not valid for this
            stage (bad UTF-8, bad JSON, ...).
        """


class ITextDocumentEncoder(Interface):
    """
    An object codec's encoder whose output is a text document (C{json}),
    UTF-8 by default, that it can also write in another text encoding.

    A chain in which a C{text:encoding=...} stage comes just before such a
    stage (C{line+text:encoding=gbk+json}) decodes each frame to C{str} in
    that encoding before parsing it; to send the same way, the chain encodes
    with C{encoderIn(encoding)} in place of both stages' encoders, rather
    than passing UTF-8 bytes through the text stage unchanged.
    """

    def encoderIn(encoding: str) -> object:
        """
        Return an encode function, C{(obj) -> bytes}, that writes documents
        in C{encoding} (a Python text encoding name) as the text stage
        would write them, raising L{iocpsvc.errors.EncodeError} as
        L{IEncoder.encode} does.
        """


class ICodecPlugin(Interface):
    """
    A codec that can be named in a codec spec string.

    iocpsvc finds its built-in codecs directly and third-party ones with
    C{twisted.plugin.getPlugins(ICodecPlugin)}, the way Twisted finds endpoint
    parsers: put a module that creates a provider of this interface in a
    C{twisted/plugins/} directory on C{sys.path}.
    """

    name = Attribute("The name used in spec strings, e.g. C{'length'}.")
    kind = Attribute(
        "C{'framer'} (bytes <-> frames; the first stage of a chain) or "
        "C{'object'} (frame <-> object; any later stage)."
    )
    description = Attribute("One line saying what the codec is, for help text.")
    parameters = Attribute(
        "A mapping of parameter name to a callable that converts the string "
        "value from the spec (raising C{ValueError} with a reason when it is "
        "bad)."
    )

    def build(defaultMaxFrameLength: int | None, **params: object) -> tuple[object, IEncoder]:
        """
        Build one stage of a chain from converted parameters.

        @param defaultMaxFrameLength: the process-wide maximum frame length
            (C{--max-frame-length}) for framers, used when the spec does not
            give C{max}; C{None} means the codec's own default.  Object
            codecs ignore it.

        @return: for a framer, C{(decoderFactory, encoder)} where
            C{decoderFactory()} returns a fresh L{IDecoder}; for an object
            codec, C{(objectDecoder, encoder)} with an L{IObjectDecoder}.

        @raise ValueError: the parameters do not fit together.
        """


class IContextHost(Interface):
    """
    What a context needs from whatever made it and keeps it: the context
    factory, on a server or on a client.  This is all a context knows of
    its factory; it is given the host, its id, its decoder and its
    encoder's C{encode} in one call, L{iocpsvc.context.ConnectionContext.bind}.

    The hot path reads C{counters} and C{seconds} once per read or send:
    they are plain attributes, not computed.
    """

    limits = Attribute("The L{iocpsvc.limits.ServerLimits} in force.")
    maxPendingWrite = Attribute(
        "Bytes written and not yet sent past which a connection is closed as "
        "C{slow-client} (the limit given, or one derived from the codec)."
    )
    counters = Attribute(
        "The L{iocpsvc.counters.Counters} the contexts add their events to "
        "(write blocked, backlog paused, decode and handler errors, ...)."
    )
    rateLimitedLog = Attribute("The L{iocpsvc.logs.RateLimitedLog} for the contexts' events.")
    seconds = Attribute(
        "The host's clock: a function of no arguments, the reactor's C{seconds}, "
        "one object shared by all its contexts."
    )
    clock = Attribute("The reactor, as C{IReactorTime}: for a context's own timers.")
    directWrites = Attribute(
        "Whether contexts may send a reply straight to the socket when nothing "
        "is queued (L{iocpsvc.transports.sendNow})."
    )

    def holdConnection(context: Any, transport: Any) -> bool:
        """
        Admission: C{context} is asked to connect on C{transport}.  Return
        true to hold it back (behind C{haproxy:}, until the PROXY header is
        in); the host connects it later, or never.
        """

    def contextConnected(context: Any) -> None:
        """C{context}'s connection is made (it is online from now on)."""

    def contextDisconnected(context: Any) -> None:
        """C{context}'s connection is gone; called once, last."""


class IAcceptGate(Interface):
    """
    Judges each connection a listening port accepts, before any protocol
    is built for it, and counts what the port could not accept (see
    L{iocpsvc.accept}).  A factory provides it, or wraps one that does
    (C{wrappedFactory}).  Called in the reactor thread, once per accepted
    connection: keep it cheap.
    """

    def admit(address: IAddress, proxied: bool) -> bool:
        """
        Whether to serve a connection from C{address}.  When this returns
        false the gate has counted and logged the refusal; the port closes
        the socket at once, in the same reactor turn, with a reset.

        @param proxied: C{address} is a load balancer's that will name the
            real client in a PROXY header: judge only what does not depend
            on the client (the connection limit).
        """

    def acceptFailed(error: str, closed: int) -> None:
        """
        The port could not accept: C{error} is the C{errno} name
        (C{EMFILE}, C{ENFILE}, C{ENOBUFS}, C{ENOMEM}).  With no descriptor
        left, the port accepted and closed the C{closed} connections that
        were waiting (on a descriptor it keeps in reserve); count them as
        refused.
        """


class IClusterReceiver(Interface):
    """
    What a cluster bus delivers messages from other nodes to: the context
    factory.  Payloads are bytes already encoded by the sending node (every
    node of a cluster runs the same codec), written to sockets as they are.
    """

    def deliverBroadcast(payload: bytes, excludeContextId: int) -> int:
        """
        Write C{payload} to every online context of this node but the one
        with id C{excludeContextId} (0: none).

        @return: how many contexts it was written to.
        """

    def deliverTo(contextId: int, payload: bytes) -> bool:
        """
        Write C{payload} to the online context C{contextId} of this node.

        @return: whether that context was online here.
        """


class IClusterBus(Interface):
    """
    Carries broadcasts and directed messages between the nodes of a cluster
    (iocpsvc processes that serve the same clients: the workers of one
    machine, or the nodes behind a load balancer).

    Every node has a I{node id}, unique in the cluster, which is the high
    part of its context ids (see L{iocpsvc.cluster.nodeOfContext}), so a
    context id names the node that holds its socket.

    Delivery is at most once and best effort: while the bus is down, a
    publish is dropped (and counted) and the node keeps serving its own
    clients; the bus reconnects by itself.  Messages from one node arrive
    at another in the order they were published.
    """

    nodeId = Attribute("This node's id (an int from 1 to 2**21 - 1).")
    connected = Attribute("Whether messages currently reach the other nodes.")

    def start(receiver: IClusterReceiver) -> None:
        """
        Start delivering messages from other nodes to C{receiver} and
        connecting (and reconnecting) to the bus.  Never fails: an
        unreachable bus is a warning and a retry.
        """

    def stop() -> object:
        """Stop delivering and disconnect; may return a Deferred."""

    def publishBroadcast(payload: bytes, excludeContextId: int) -> None:
        """
        Have every other node deliver C{payload} to all its contexts but
        C{excludeContextId}.  (The publishing node delivers locally itself.)
        """

    def publishTo(contextId: int, payload: bytes) -> None:
        """Have the node holding C{contextId} deliver C{payload} to it."""

    def stats() -> dict[str, object]:
        """
        The bus's figures for the monitor: C{connected}, C{node_id},
        C{published_total} (handed to the bus), C{received_total},
        C{dropped_total} (publishes not known to have reached the bus:
        made while it was down, over its buffer cap, or unanswered when
        its link failed), and anything the bus adds.
        """


class IWorkerPool(Interface):
    """
    The parent of C{--workers} processes, as its monitor reads it: the
    workers, their last figures and the totals over them, and questions
    to every live worker.  (L{iocpsvc.workers.WorkerPoolService} provides
    it; L{iocpsvc.monitor.pool.PoolSource} reads it, so that neither
    imports the other.)
    """

    reactor = Attribute("The reactor; its C{seconds()} is the clock of the figures.")
    startedAt = Attribute("When the pool was made, in C{reactor.seconds()}.")
    restartsTotal = Attribute("Workers restarted after dying.")
    relayDroppedTotal = Attribute(
        "Cluster messages between workers dropped because the worker they were for was not reading."
    )
    workers = Attribute(
        "Slot index -> the slot's current worker, with C{index}, C{pid}, C{nodeId}, C{alive} "
        "(its process runs), C{ready} (it listens), C{responsive} (it answered its last question "
        "in time), C{answeredAt} (when it last gave its figures, in C{reactor.seconds()}, or "
        "C{None}) and C{restarts} (workers of its slot restarted before it)."
    )
    generation = Attribute("A number that changes whenever a worker's figures in C{snapshots} do.")
    snapshots = Attribute(
        "Slot index -> the figures the slot's worker last answered: what C{/stats.json} shows "
        "of one process (L{iocpsvc.monitor.stats.collect})."
    )

    def totals() -> dict[str, Any]:
        """
        The workers' figures added up, under the names of C{/stats.json}:
        every counter (those of workers that died included, up to their
        last answer, so that totals never go backwards), every gauge of the
        workers there are, C{closed_total} per reason, and under
        C{cluster} the C{*_total} counters of the workers' cluster buses
        (empty without C{--cluster}).
        """

    def poll() -> Deferred[Any]:
        """
        Ask every live worker for its figures now (a worker already being
        asked is not asked twice).

        @return: a Deferred that fires with C{None}, never failing, once
            each has answered (its figures are in C{snapshots}) or missed.
        """

    def recordSnapshot(index: int, snapshot: dict[str, Any]) -> None:
        """
        Keep C{snapshot} as the figures the worker of slot C{index} gave
        just now (as the C{stats} of its C{connections} answer).
        """

    def ask(op: str, **fields: Any) -> list[tuple[int, Deferred[Any]]]:
        """
        Ask every live worker C{op} (with C{fields}) over its control
        channel.

        @return: per worker asked, its slot index and the Deferred of its
            answer, which fails if the answer does not come within the
            pool's answer timeout.
        """
