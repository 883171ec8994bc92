"""
The Redis cluster bus: nodes publish broadcasts and directed messages to
Redis pub/sub channels and deliver what the others publish.

Channels, for C{--cluster redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]}::

    {prefix}:all              every node subscribes; broadcasts
    {prefix}:node:{nodeId}    only that node subscribes; messages to its contexts
    {prefix}:nodes:{nodeId}   a key, not a channel: who holds the node id
                              (SET ... NX EX 30, refreshed every 10 s)

The messages are those of L{iocpsvc.cluster} (a 13-byte header, then the
payload the sending node has already encoded).  Redis pub/sub does not see
database numbers, so C{prefix} is what keeps clusters apart; C{DB} only
chooses where the node-id keys live.

Each bus holds two connections to Redis, one subscribed and one for
commands (a RESP2 connection that has subscribed can run nothing else), and
treats them as one link: when either ends, both are closed and reopened
together after a backoff, so C{connected} means "publishes reach the other
nodes and their messages reach us".

What waits for Redis is bounded in bytes, not in time: a publish that would
take the bytes not yet taken by the command connection's socket beyond
C{maxPendingBytes} is dropped and counted (C{overflow_total}, and
C{dropped_total}), so a Redis that is paused, or slower than this node
publishes, costs at most that much memory here until the refresh finds it
unresponsive and the link is given up.  The publishes still awaiting a
reply when the link fails are counted as dropped too: nothing confirms that
they reached Redis.

Logging in and TLS (see L{iocpsvc.cluster.redisurl} for the URL): on
every connection and every reconnection, before anything else, the bus
sends C{AUTH} (C{AUTH PASSWORD}, or C{AUTH USER PASSWORD} for a Redis 6 ACL
user) when the URL has a password, then C{SELECT DB} on the command
connection when C{DB} is not 0 (pub/sub ignores databases: the subscriber
needs none).  A refused C{AUTH} (a wrong password, an unknown or disabled
user) is a failed attempt like a refused connection: it is said in one
line, counted (C{auth_failures_total}; C{auth_refused} while it lasts) and
retried with the same backoff, so that a password fixed on the server
side is picked up without a restart.  C{rediss://} puts TLS under both
connections (Twisted's own, with the server's certificate verified); a
failed handshake is a failed attempt too.  Nothing logged or shown shows
the password: the URL appears as L{iocpsvc.cluster.redactURL} gives it.

Why not txredisapi: version 1.6.0 (read on Python 3.11, Twisted 26.10)
depends on Twisted alone (no C{six}; C{hiredis} only if installed) and is
maintained, but it does not serve this bus:
  1. it imports the global reactor when imported (installing the default
     one as a side effect) and uses it for its endpoints and timers, so a
     bus could not honour its C{reactor} argument, nor be tested on a
     L{twisted.internet.task.Clock};
  2. a refused C{AUTH} (or C{SELECT}) makes its factory stop trying for
     good, where the bus must say it, count it and retry with backoff; and
     its C{SubscriberFactory} takes no password or user name at all;
  3. its TLS takes an old-style context factory (C{ssl_context_factory=True}
     is C{ClientContextFactory()}: no certificate verification, no host
     name check): the C{optionsForClientTLS} it needs is all the TLS code
     there is here anyway;
  4. it converts replies by their content (C{convertNumbers}, C{charset}),
     so one binary message arrives as C{str}, C{int}, C{float} or C{bytes}
     unless both are turned off, which its C{SubscriberFactory} does not
     offer;
  5. a command given while no connection is up waits in its pool for the
     next one, unbounded, where the bus must drop it and count it, and bound
     what waits by the socket's unsent bytes (C{maxPendingBytes}), which it
     does not expose;
  6. it does not resubscribe, and its subscriber and command pools
     reconnect independently, where the bus treats its two connections as
     one link;
  7. it ships no type information (no C{py.typed}): mypy sees C{Any}.
The part of RESP2 needed here (L{iocpsvc.cluster.resp}) is short, and this
way the log-in, the reconnection, the resubscription and the outage
counters are all in one place, and a server that does not use the cluster
imports none of it.

Long: one bus, L{RedisBus}, whose link (its two connections, the backoff,
the heartbeat, the node-id claim) and publishing (the buffer cap, the
drops) share the link's state and its failure; the wire protocol is
L{iocpsvc.cluster.resp}'s.
"""

from __future__ import annotations

import os
import random
import socket
from collections import deque
from collections.abc import Mapping
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList, FirstError, gatherResults, succeed
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from iocpsvc.cluster import (
    BROADCAST,
    MAX_NODE_ID,
    TO_CONTEXT,
    checkNodeId,
    deliver,
    nodeOfContext,
    packMessage,
)
from iocpsvc.cluster.redisurl import DEFAULT_PORT, DEFAULT_PREFIX, RedisURL, parseRedisURL
from iocpsvc.cluster.resp import RedisConnection, RedisConnectionLost, RedisError, Waiter, encodeCommand
from iocpsvc.interfaces import IClusterBus, IClusterReceiver
from iocpsvc.limits import DEFAULT_MAX_PENDING_WRITE
from iocpsvc.logs import RateLimitedLog, Reminders
from iocpsvc.machine import reactorOrGlobal
from iocpsvc.transports import describeTlsError

_log = Logger(namespace="iocpsvc.cluster.redis")

DEFAULT_MAX_PENDING_BYTES = DEFAULT_MAX_PENDING_WRITE
"""
Bytes a bus lets wait for Redis to read them before it drops publishes: the
same as the server's C{--max-pending-write} default for a client (4 MiB).
"""
__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "RedisBus", "RedisURL", "parseRedisURL"]

# Deletes the node-id key only if this node still holds it (atomically).
_RELEASE_SCRIPT = (
    b"if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)


class AuthRefused(RedisError):
    """Redis refused the bus's C{AUTH} (a wrong password, an unknown or disabled user)."""


class _OneConnection(Factory):
    """
    Hands one protocol to one connection attempt.  (Not C{connectProtocol}:
    its factory logs two lines per attempt, a stream while Redis is down.)
    """

    noisy = False

    def __init__(self, connection: Protocol) -> None:
        self.connection = connection

    def buildProtocol(self, addr: Any) -> Protocol:
        return self.connection


class _Link:
    """
    One attempt at the two connections (subscriber and commands).  Once
    C{over}, nothing it reports matters any more: a later attempt has its
    own link.
    """

    def __init__(self) -> None:
        self.subscriber: RedisConnection | None = None
        self.commands: RedisConnection | None = None
        self.connecting: list[Deferred[Any]] = []
        self.ready = False
        self.over = False
        self.heartbeat: Any = None
        # The sizes of the publishes written on this link that Redis has not
        # answered yet, oldest first (it answers in order), and their sum.
        self.awaiting: deque[int] = deque()
        self.awaitingBytes = 0
        # The waiters of its publishes; set by the bus, which knows the link.
        self.broadcastReplied: Waiter = _ignoreReply
        self.directReplied: Waiter = _ignoreReply

    def connections(self) -> list[RedisConnection]:
        return [c for c in (self.subscriber, self.commands) if c is not None]

    def lastAnswerAt(self) -> float | None:
        """When Redis last sent anything on either connection, or C{None}: never."""
        times = [c.lastReceivedAt for c in self.connections() if c.lastReceivedAt is not None]
        return max(times) if times else None

    def close(self) -> Deferred[Any]:
        """Cancel what is connecting, abort what is connected; fires once all have ended."""
        self.over = True
        if self.heartbeat is not None and self.heartbeat.active():
            self.heartbeat.cancel()
        for attempt in self.connecting:
            attempt.cancel()
        ended = [c.notifyLost() for c in self.connections()]
        for connection in self.connections():
            connection.abort()
        return DeferredList(ended)


@implementer(IClusterBus)
class RedisBus:
    """
    An L{IClusterBus} over Redis pub/sub (see the module docstring).

    @ivar connected: whether both connections are up and subscribed.
    @ivar nodeIdClaimed: whether this node holds its id's key in Redis.
    @ivar nodeIdHolder: who holds it when another does (C{host/pid}), else C{None}.
    @ivar publishedTotal: messages handed to Redis (written to the command
        connection); those later lost with the link are also in C{droppedTotal}.
    @ivar receivedTotal: messages from other nodes delivered here.
    @ivar droppedTotal: publishes known not to have reached Redis, or not
        known to: made while disconnected, over C{maxPendingBytes}, refused
        by Redis, or still awaiting its reply when the link failed.
    @ivar overflowTotal: the publishes of C{droppedTotal} that were over
        C{maxPendingBytes}.
    @ivar reconnectsTotal: times the link came back after being lost.
    @ivar malformedTotal: messages received that were not cluster messages.
    @ivar unroutedTotal: directed messages no node was subscribed to receive
        (the node that held the context is gone).
    @ivar authFailuresTotal: connection attempts on which Redis refused the
        bus's C{AUTH}.
    @ivar authRefused: whether the last attempt was refused its C{AUTH}
        (until one succeeds).
    @ivar lastError: why the last attempt failed or the link was lost, in a
        few words (never the password), or C{None} while connected.
    @ivar target: the parsed URL (L{RedisURL}).
    @ivar address: the URL as logs and C{stats()} show it (its password as C{***}).
    """

    def __init__(
        self,
        url: str,
        nodeId: int,
        reactor: Any = None,
        retryDelay: float = 0.5,
        maxRetryDelay: float = 10.0,
        claimInterval: float = 10.0,
        claimTTL: int = 30,
        connectTimeout: float = 5.0,
        identity: str | None = None,
        maxPendingBytes: int = DEFAULT_MAX_PENDING_BYTES,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """
        @param url: C{redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTIONS]}
            (see L{iocpsvc.cluster.redisurl}).
        @param nodeId: this node's id (1 to L{MAX_NODE_ID}).
        @param reactor: the reactor; the global one by default.
        @param retryDelay: seconds before the first reconnection attempt;
            doubled after each failed one, up to C{maxRetryDelay}.
        @param claimInterval: seconds between refreshes of the node-id key
            (each one also checks that both connections still answer).
        @param claimTTL: seconds the node-id key lives without a refresh.
        @param connectTimeout: seconds an attempt (connect, subscribe,
            claim) or a refresh may take before the link counts as down.
        @param identity: what the node-id key holds; C{host/pid} by default.
        @param maxPendingBytes: bytes written to Redis and not yet taken by
            the socket above which a publish is dropped (see the module
            docstring); a transport that does not tell its unsent bytes is
            bounded by the bytes of the publishes awaiting a reply instead.
            A single publish larger than this is still sent when nothing
            waits.
        @param environ: where the URL's password may come from
            (C{IOCPSVC_CLUSTER_PASSWORD}); C{os.environ} by default.
        @raise ValueError: a bad URL (see L{parseRedisURL}).
        """
        if maxPendingBytes < 1:
            raise ValueError(f"maxPendingBytes must be at least 1, not {maxPendingBytes}")
        self.reactor = reactor = reactorOrGlobal(reactor)
        self.target = target = parseRedisURL(url, environ)
        self.host, self.port, self.db, self.prefix = target.host, target.port, target.db, target.prefix
        self.nodeId = checkNodeId(nodeId)
        self.address = target.shown
        self.broadcastChannel = f"{self.prefix}:all".encode()
        self.nodeChannel = self.channelOf(self.nodeId)
        self.claimKey = f"{self.prefix}:nodes:{self.nodeId}".encode()
        self.identity = (identity or f"{socket.gethostname()}/{os.getpid()}").encode()
        self.retryDelay = retryDelay
        self.maxRetryDelay = maxRetryDelay
        self.claimInterval = claimInterval
        self.claimTTL = claimTTL
        self.connectTimeout = connectTimeout
        self.maxPendingBytes = maxPendingBytes

        self.connected = False
        self.nodeIdClaimed = False
        self.nodeIdHolder: str | None = None
        self.publishedTotal = 0
        self.receivedTotal = 0
        self.droppedTotal = 0
        self.overflowTotal = 0
        self.reconnectsTotal = 0
        self.malformedTotal = 0
        self.unroutedTotal = 0
        self.authFailuresTotal = 0
        self.authRefused = False
        self.lastError: str | None = None

        self._receiver: Any = None
        self._running = False
        self._link: _Link | None = None
        self._retryCall: Any = None
        self._failedAttempts = 0
        self._everConnected = False
        self._downSince: float | None = None
        self._droppedWhenLost = 0
        self._refresher: LoopingCall | None = None
        self._random = random.Random()
        # Link changes are rare but a flapping Redis must not flood the log;
        # bad messages come a few per ten seconds at most; a lasting problem
        # (still down, id still taken) is repeated once per reminderInterval.
        self._changesLog = RateLimitedLog(_log, reactor.seconds, burst=3, interval=60.0)
        self._messagesLog = RateLimitedLog(_log, reactor.seconds, burst=5, interval=10.0)
        self._reminders = Reminders(reactor.seconds, 60.0)
        # The overflow warning: when it was last said, the overflow count
        # then, and when the last publish overflowed (whether it goes on).
        self._overflowSaidAt = float("-inf")
        self._overflowWhenSaid = 0
        self._lastOverflowAt = float("-inf")

    @property
    def reminderInterval(self) -> float:
        """Seconds between reminders of a lasting problem."""
        return self._reminders.interval

    def channelOf(self, nodeId: int) -> bytes:
        """The channel of node C{nodeId}'s directed messages."""
        return f"{self.prefix}:node:{nodeId}".encode()

    # -- IClusterBus -----------------------------------------------------------

    def start(self, receiver: IClusterReceiver) -> None:
        """Deliver to C{receiver}; connect now and reconnect whenever the link is lost."""
        self._receiver = receiver
        if self._running:
            return
        self._running = True
        self._connect()

    def stop(self) -> Deferred[Any]:
        """
        Stop reconnecting, release the node-id key if this node holds it,
        and close both connections.

        @return: a Deferred that fires once both have ended.
        """
        self._running = False
        self._receiver = None
        if self._retryCall is not None and self._retryCall.active():
            self._retryCall.cancel()
        self._retryCall = None
        self._stopRefreshing()
        link, self._link = self._link, None
        if self.connected:
            _log.info(
                "left the cluster at Redis {redis} (node {nodeId})", redis=self.address, nodeId=self.nodeId
            )
        self.connected = False
        if link is None:
            return succeed(None)
        if not (link.ready and self.nodeIdClaimed and link.commands is not None):
            self.nodeIdClaimed = False
            return self._closeLink(link)
        self.nodeIdClaimed = False
        # Let the next run with this --node-id claim it at once; give up on
        # it quickly rather than hold up the shutdown.
        release = link.commands.execute(b"EVAL", _RELEASE_SCRIPT, 1, self.claimKey, self.identity)
        release.addTimeout(1.0, self.reactor)
        release.addErrback(lambda _: None)
        # Its reply comes after those of the publishes before it: whatever
        # still awaits one then is counted as dropped.
        return release.addCallback(lambda _: self._closeLink(link))

    def publishBroadcast(self, payload: bytes, excludeContextId: int) -> None:
        """
        Publish a broadcast to every node (dropped and counted while down, or
        while more than C{maxPendingBytes} wait for Redis).
        """
        link = self._link
        if not self.connected or link is None or link.commands is None:
            self.droppedTotal += 1
            return
        message = packMessage(BROADCAST, self.nodeId, excludeContextId, payload)
        command = encodeCommand((b"PUBLISH", self.broadcastChannel, message))
        self._publish(link, link.commands, command, link.broadcastReplied)

    def publishTo(self, contextId: int, payload: bytes) -> None:
        """
        Publish a message to the node holding C{contextId} (dropped and
        counted while down, or while more than C{maxPendingBytes} wait for
        Redis).

        @raise ValueError: C{contextId} is no node's (beyond the id range).
        """
        node = nodeOfContext(contextId)
        if not 0 < contextId or node > MAX_NODE_ID:
            raise ValueError(f"context id {contextId} is out of range")
        link = self._link
        if not self.connected or link is None or link.commands is None:
            self.droppedTotal += 1
            return
        message = packMessage(TO_CONTEXT, self.nodeId, contextId, payload)
        command = encodeCommand((b"PUBLISH", self.channelOf(node), message))
        self._publish(link, link.commands, command, link.directReplied)

    def _publish(self, link: _Link, commands: RedisConnection, command: bytes, waiter: Waiter) -> None:
        """Write one encoded PUBLISH, unless it would take what waits for Redis over the cap."""
        pending = self._pendingBytes(link, commands)
        # "pending and": a publish larger than the cap on its own still goes
        # when nothing waits, rather than never.
        if pending and pending + len(command) > self.maxPendingBytes:
            self._overflowed(pending)
            return
        self.publishedTotal += 1
        link.awaiting.append(len(command))
        link.awaitingBytes += len(command)
        commands.writeCommand(command, waiter)

    @staticmethod
    def _pendingBytes(link: _Link, commands: RedisConnection) -> int:
        """
        What the cap applies to: the bytes the command connection has not
        handed to its socket yet (read per publish: a few attribute reads),
        or, when its transport does not tell, the bytes of the publishes
        awaiting a reply (which include those).
        """
        unsent = commands.unsentBytes()
        return link.awaitingBytes if unsent is None else unsent

    def _overflowed(self, pending: int) -> None:
        """Drop a publish over the cap: count it; warn once, then at most once a minute while it goes on."""
        self.droppedTotal += 1
        self.overflowTotal += 1
        now = self.reactor.seconds()
        previous, self._lastOverflowAt = self._lastOverflowAt, now
        if now - self._overflowSaidAt < self.reminderInterval:
            return
        if now - previous < self.reminderInterval:
            _log.warn(
                "cluster bus still over its buffer: Redis {redis} is not reading fast enough; "
                "publishes dropped over the cap of {maxPendingBytes} bytes in the last {seconds:.0f}s: "
                "{dropped}",
                redis=self.address,
                maxPendingBytes=self.maxPendingBytes,
                pendingBytes=pending,
                seconds=now - self._overflowSaidAt,
                dropped=self.overflowTotal - self._overflowWhenSaid,
            )
        else:
            _log.warn(
                "cluster bus over its buffer: {pendingBytes} bytes wait for Redis {redis} to read "
                "them (the cap is {maxPendingBytes}); publishes are dropped and counted until it "
                "catches up",
                redis=self.address,
                maxPendingBytes=self.maxPendingBytes,
                pendingBytes=pending,
            )
        self._overflowSaidAt = now
        self._overflowWhenSaid = self.overflowTotal

    def stats(self) -> dict[str, object]:
        """The figures of L{IClusterBus.stats}, and this bus's own."""
        link = self._link
        pending = 0
        if self.connected and link is not None and link.commands is not None:
            pending = self._pendingBytes(link, link.commands)
        return {
            "connected": self.connected,
            "node_id": self.nodeId,
            "node_id_claimed": self.nodeIdClaimed,
            "redis": self.address,
            "prefix": self.prefix,
            "published_total": self.publishedTotal,
            "received_total": self.receivedTotal,
            "dropped_total": self.droppedTotal,
            "overflow_total": self.overflowTotal,
            "pending_bytes": pending,
            "max_pending_bytes": self.maxPendingBytes,
            "reconnects_total": self.reconnectsTotal,
            "malformed_total": self.malformedTotal,
            "unrouted_total": self.unroutedTotal,
            "tls": self.target.tls,
            "auth_failures_total": self.authFailuresTotal,
            "auth_refused": self.authRefused,
            "last_error": self.lastError,
        }

    # -- replies to publishes ----------------------------------------------------

    def _publishReplied(self, link: _Link, reply: Any, direct: bool) -> None:
        """The reply to the oldest publish on C{link} that awaits one."""
        if link.over or reply.__class__ is RedisConnectionLost:
            # No reply will come for it or those after it: the link is (or is
            # about to be) given up, which counts them all as dropped at once.
            return
        link.awaitingBytes -= link.awaiting.popleft()
        if reply.__class__ is int:  # how many subscribers got it
            if direct and reply == 0:
                self.unroutedTotal += 1
        elif isinstance(reply, RedisError):
            self.droppedTotal += 1
            self._messagesLog.warn(
                "Redis at {redis} refused a publish: {error}", redis=self.address, error=reply
            )

    def _closeLink(self, link: _Link) -> Deferred[Any]:
        """
        Give C{link} up: the publishes it still awaits a reply for are
        counted as dropped (Redis may have delivered some of them before it
        failed, but none is confirmed), then both connections are closed.
        """
        if not link.over:
            self.droppedTotal += len(link.awaiting)
            link.awaiting.clear()
            link.awaitingBytes = 0
        return link.close()

    # -- what the other nodes send ---------------------------------------------

    def _messageReceived(self, channel: bytes, message: bytes) -> None:
        receiver = self._receiver
        if receiver is None:
            return
        try:
            delivered = deliver(receiver, self.nodeId, message)
        except ValueError as e:
            self.malformedTotal += 1
            self._messagesLog.warn(
                "ignored a malformed cluster message on {channel} ({size} bytes): {error}",
                channel=channel.decode("utf-8", "replace"),
                size=len(message),
                error=e,
            )
            return
        except Exception:
            # A bug in delivery must not end the subscriber connection.
            self._messagesLog.failure("delivering a cluster message failed", Failure())
            return
        if delivered:
            self.receivedTotal += 1

    # -- the link: connect, set up, lose, retry ----------------------------------

    def _endpoint(self) -> Any:
        endpoint: Any
        if isIPAddress(self.host):
            endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.connectTimeout)
        elif isIPv6Address(self.host):
            endpoint = TCP6ClientEndpoint(self.reactor, self.host, self.port, timeout=self.connectTimeout)
        else:
            # Resolves without blocking the reactor (getaddrinfo in a thread).
            endpoint = HostnameEndpoint(self.reactor, self.host, self.port, timeout=self.connectTimeout)
        if self.target.tls:
            # Connects with the RedisConnection itself, under TLS; what it
            # writes before the handshake is done waits for it.
            endpoint = wrapClientTLS(self.target.tlsOptions, endpoint)
        return endpoint

    def _connect(self) -> None:
        self._retryCall = None
        link = self._link = _Link()
        link.broadcastReplied = lambda reply: self._publishReplied(link, reply, False)
        link.directReplied = lambda reply: self._publishReplied(link, reply, True)
        onLost = lambda reason: self._linkFailed(link, _reason(reason))  # noqa: E731
        seconds = self.reactor.seconds
        subscriber = RedisConnection(onMessage=self._messageReceived, onLost=onLost, seconds=seconds)
        commands = RedisConnection(onLost=onLost, seconds=seconds)
        connecting = [
            self._endpoint().connect(_OneConnection(subscriber)),
            self._endpoint().connect(_OneConnection(commands)),
        ]
        link.connecting = connecting
        connecting[0].addCallback(lambda p: setattr(link, "subscriber", p))
        connecting[1].addCallback(lambda p: setattr(link, "commands", p))
        # The whole attempt (connect, subscribe, claim) has a deadline: a
        # Redis that accepts and never answers is as down as one that refuses.
        link.heartbeat = self.reactor.callLater(
            self.connectTimeout, self._linkFailed, link, f"no answer within {self.connectTimeout:g}s"
        )
        setUp = gatherResults(connecting, consumeErrors=True)
        setUp.addCallback(lambda _: self._setUp(link))
        setUp.addCallbacks(lambda _: self._linkReady(link), lambda f: self._setUpFailed(link, f))

    def _setUpFailed(self, link: _Link, failure: Failure) -> None:
        """An attempt failed: to connect, to log in, to subscribe or to claim."""
        cause = _cause(failure)
        if self.target.password is None and cause.check(RedisError) and str(cause.value).startswith("NOAUTH"):
            # A Redis that wants a password, and the URL gives none: a
            # login problem that will not pass by itself, said as one.
            cause = Failure(AuthRefused(f"NOAUTH: Redis needs a password; {_GIVE_PASSWORD}"))
        refused = cause.check(AuthRefused) is not None
        self._linkFailed(link, _reason(cause), authRefused=refused)

    def _setUp(self, link: _Link) -> Deferred[Any]:
        link.connecting = []
        if link.over:  # closed the moment both connected (stopped, or timed out)
            return succeed(None)
        assert link.subscriber is not None and link.commands is not None
        # Pipelined, in this order on each connection: AUTH first; if Redis
        # refuses it, what follows is refused too (NOAUTH), and the link
        # fails with the AUTH's refusal, which comes first.
        steps = []
        auth = self.target.authArguments()
        if auth is not None:
            for connection in (link.subscriber, link.commands):
                steps.append(connection.execute(b"AUTH", *auth).addErrback(_authRefused))
        steps.append(link.subscriber.execute(b"SUBSCRIBE", self.broadcastChannel))
        steps.append(link.subscriber.execute(b"SUBSCRIBE", self.nodeChannel))
        if self.db:
            steps.append(link.commands.execute(b"SELECT", self.db))
        steps.append(self._claim(link.commands))
        return gatherResults(steps, consumeErrors=True)

    def _linkReady(self, link: _Link) -> None:
        if link.over:
            return
        if link.heartbeat is not None and link.heartbeat.active():
            link.heartbeat.cancel()
        link.heartbeat = None
        link.ready = True
        self.connected = True
        self._failedAttempts = 0
        self.authRefused = False
        self.lastError = None
        if not self._everConnected:
            self._everConnected = True
            self._downSince = None
            self._changesLog.info(
                "joined the cluster at Redis {redis} as node {nodeId} (channels {broadcastChannel} "
                "and {nodeChannel})",
                redis=self.address,
                nodeId=self.nodeId,
                broadcastChannel=self.broadcastChannel.decode(),
                nodeChannel=self.nodeChannel.decode(),
            )
        else:
            self.reconnectsTotal += 1
            downSince = self._downSince if self._downSince is not None else self.reactor.seconds()
            self._changesLog.info(
                "cluster bus back: reconnected to Redis {redis} {downSeconds:.1f}s after its last "
                "answer; publishes dropped meanwhile: {dropped}",
                redis=self.address,
                downSeconds=self.reactor.seconds() - downSince,
                dropped=self.droppedTotal - self._droppedWhenLost,
            )
            self._downSince = None
        self._refresher = LoopingCall(self._refresh, link)
        self._refresher.clock = self.reactor
        self._refresher.start(self.claimInterval, now=False)

    def _linkFailed(self, link: _Link, why: str, authRefused: bool = False) -> None:
        """
        Any failure of C{link}, however it shows: close it, warn once, retry.

        @param authRefused: whether it failed because Redis refused C{AUTH}
            (said at once, once per outage, as an error: it will not pass
            by itself).
        """
        if link.over:
            return
        # Whatever a reply said, the password never reaches a log line or
        # /stats.json (AUTH's replies are not shown at all: _authRefused).
        password = self.target.password
        if password:
            why = why.replace(password.decode("utf-8", "replace"), "***")
        self.lastError = why
        if authRefused:
            self.authFailuresTotal += 1
        wasConnected = self.connected and link.ready
        now = self.reactor.seconds()
        # Redis may have stopped answering well before this shows (a paused
        # process is found by the next refresh): the outage is measured from
        # its last answer, not from now.
        lastAnswer = link.lastAnswerAt()
        droppedBefore = self.droppedTotal
        unanswered = len(link.awaiting)
        self._closeLink(link).addErrback(lambda _: None)
        if self._link is link:
            self._link = None
            self.connected = False
            # Nothing refreshes the key while down: it may expire and be
            # taken; the next link claims it again.
            self.nodeIdClaimed = False
            self._stopRefreshing()
        if not self._running:
            return
        refusedBefore, self.authRefused = self.authRefused, authRefused
        if authRefused:
            if self._downSince is None:
                self._outageStarts(now)
            # Said when it starts (at most once a minute, should it come and
            # go), then reminded once a minute while it lasts.
            if not refusedBefore and self._reminders.due("auth", now):
                self._reminders.said("down", now)
                source = self.target.passwordSource
                _log.error(
                    "cluster: Redis at {redis} refused AUTH ({error}); {advice}; this node serves "
                    "its own clients only; retrying",
                    redis=self.address,
                    error=why,
                    advice=(
                        f"check the user name and password (given by {source})"
                        if source is not None
                        else "the URL gives no password"
                    ),
                    passwordSource=source,
                )
            elif self._reminders.due("down", now):
                self._remindStillDown(now, why)
        elif wasConnected:
            self._downSince = lastAnswer if lastAnswer is not None else now
            # The publishes lost with the link belong to this outage.
            self._droppedWhenLost = droppedBefore
            self._reminders.said("down", now)
            self._changesLog.warn(
                "cluster bus down: lost Redis {redis} ({error}; last answer {silentSeconds:.1f}s "
                "ago); broadcasts and messages reach this node's clients only until it is back; "
                "reconnecting; publishes awaiting its reply, counted as dropped: {unanswered}",
                redis=self.address,
                error=why,
                silentSeconds=now - self._downSince,
                unanswered=unanswered,
            )
        elif self._failedAttempts == 0 and self._downSince is None:
            self._outageStarts(now)
            self._reminders.said("down", now)
            self._changesLog.warn(
                "cluster bus down: cannot reach Redis {redis} ({error}); this node serves its own "
                "clients only until it can; retrying",
                redis=self.address,
                error=why,
            )
        elif self._reminders.due("down", now):
            self._remindStillDown(now, why)
        self._failedAttempts += 1
        self._scheduleRetry()

    def _outageStarts(self, now: float) -> None:
        """An outage begins now: its publishes dropped are counted from here."""
        self._downSince = now
        self._droppedWhenLost = self.droppedTotal

    def _remindStillDown(self, now: float, why: str) -> None:
        """The once-a-minute reminder of an outage: how long, why, and what it has cost."""
        if self.authRefused:  # a login problem does not pass by itself: an error
            log, text = _log.error, "cluster bus still down: Redis at {redis} refuses AUTH for "
        else:
            log, text = _log.warn, "cluster bus still down: Redis {redis} unreachable for "
        log(
            text + "{downSeconds:.0f}s ({error}); publishes dropped so far: {dropped}",
            redis=self.address,
            downSeconds=now - (now if self._downSince is None else self._downSince),
            error=why,
            dropped=self.droppedTotal - self._droppedWhenLost,
        )

    def _scheduleRetry(self) -> None:
        if self._retryCall is not None and self._retryCall.active():
            return
        delay = min(self.maxRetryDelay, self.retryDelay * 2 ** min(self._failedAttempts - 1, 30))
        # Jitter, so that the nodes of a cluster do not all come back at once.
        delay *= self._random.uniform(0.8, 1.2)
        self._retryCall = self.reactor.callLater(delay, self._connect)

    def _stopRefreshing(self) -> None:
        if self._refresher is not None and self._refresher.running:
            self._refresher.stop()
        self._refresher = None

    def _refresh(self, link: _Link) -> None:
        """
        Refresh the node-id key, and check that both connections still
        answer: a Redis that stopped answering without closing them (a
        paused process, a lost route) counts as down.
        """
        if link.over or link.commands is None or link.subscriber is None:
            return
        if link.heartbeat is not None and link.heartbeat.active():
            return  # the last check is still waiting: its deadline decides
        checks = gatherResults(
            [self._claim(link.commands), link.subscriber.execute(b"PING")], consumeErrors=True
        )
        deadline = link.heartbeat = self.reactor.callLater(
            self.connectTimeout, self._linkFailed, link, f"no answer within {self.connectTimeout:g}s"
        )

        def answered(result: object) -> object:
            if deadline.active():
                deadline.cancel()
            return result

        checks.addBoth(answered)
        checks.addErrback(lambda f: self._linkFailed(link, _reason(f)))

    # -- the node-id key -----------------------------------------------------------

    def _claim(self, commands: RedisConnection) -> Deferred[None]:
        """
        Hold C{{prefix}:nodes:{nodeId}} for C{claimTTL} seconds, or learn
        who does.  Fails only when Redis does not answer.
        """
        key, ttl = self.claimKey, self.claimTTL

        def setReplied(reply: Any) -> Any:
            if reply is not None:
                self._claimHeld()
                return None
            return commands.execute(b"GET", key).addCallback(holderKnown)

        def holderKnown(holder: bytes | None) -> Any:
            if holder == self.identity:
                # Still ours (from before a short outage): extend it.
                return commands.execute(b"EXPIRE", key, ttl).addCallback(lambda _: self._claimHeld())
            if holder is None:
                return None  # expired in between: the next refresh claims it
            return commands.execute(b"TTL", key).addCallback(lambda left: self._claimTaken(holder, left))

        return commands.execute(b"SET", key, self.identity, b"NX", b"EX", ttl).addCallback(setReplied)

    def _claimHeld(self) -> None:
        if self.nodeIdHolder is not None:
            _log.info(
                "node id {nodeId} is now held by this node ({identity})",
                nodeId=self.nodeId,
                identity=self.identity.decode("utf-8", "replace"),
            )
        self.nodeIdClaimed = True
        self.nodeIdHolder = None

    def _claimTaken(self, holder: bytes, secondsLeft: Any) -> None:
        self.nodeIdClaimed = False
        changed = self.nodeIdHolder != holder.decode("utf-8", "replace")
        self.nodeIdHolder = holder.decode("utf-8", "replace")
        if changed:
            self._reminders.said("claim")
        elif not self._reminders.due("claim"):
            return
        _log.error(
            "node id {nodeId} is already held by {holder} (the claim {key} expires in {secondsLeft}s "
            "unless that node refreshes it); two nodes with one id receive each other's messages: "
            "give every node its own --node-id",
            nodeId=self.nodeId,
            holder=self.nodeIdHolder,
            key=self.claimKey.decode(),
            secondsLeft=secondsLeft,
        )


def _ignoreReply(reply: Any) -> None:
    """The waiter of a link's publishes until the bus sets its own."""


_GIVE_PASSWORD = (
    "give one in the URL (redis://:PASSWORD@...), with password_file= or in $IOCPSVC_CLUSTER_PASSWORD"
)

# What an AUTH's error reply means, by how it starts.  The reply itself is
# never shown: a server without AUTH (renamed away, or a Redis-compatible
# proxy) answers "ERR unknown command 'AUTH', with args beginning with:"
# and the user name and password.
_AUTH_REPLIES = (
    ("WRONGPASS", "WRONGPASS: the user name or password is wrong, or the user is disabled"),
    ("NOPERM", "NOPERM: the user may not log in"),
    ("ERR unknown command", "ERR: this server does not know AUTH"),
    ("ERR AUTH", "ERR: the server has no password configured for this user"),
)


def _authRefused(failure: Failure) -> Failure:
    """
    An C{AUTH}'s error reply, as L{AuthRefused} saying what it means (not
    the reply's text, which may repeat the password); anything else (a
    lost connection) as it is.
    """
    if failure.check(RedisError) and not failure.check(RedisConnectionLost):
        reply = str(failure.value)
        for start, meaning in _AUTH_REPLIES:
            if reply.startswith(start):
                return Failure(AuthRefused(meaning))
        code = reply.split(" ", 1)[0]
        code = code if code.isascii() and code.isalpha() and code.isupper() else "an error"
        return Failure(AuthRefused(f"{code} (the reply is not shown: it may repeat the password)"))
    return failure


def _cause(failure: Failure) -> Failure:
    """The failure inside C{gatherResults}'s L{FirstError}s."""
    while isinstance(failure.value, FirstError):
        failure = failure.value.subFailure
    return failure


def _reason(failure: Failure) -> str:
    """A failure in a few words, for a log line (the bus takes the password out of it)."""
    failure = _cause(failure)
    value = failure.value
    if isinstance(value, AuthRefused):
        return str(value)
    if isinstance(value, RedisConnectionLost) and value.reason is not None:
        return _reason(value.reason)
    if isinstance(value, RedisError):
        return f"Redis error: {value}"
    if isinstance(value, ConnectionDone):
        return "Redis closed the connection"
    if isinstance(value, ConnectionRefusedError):
        return "connection refused"
    module = type(value).__module__
    if module.startswith("OpenSSL"):
        # The TLS handshake failed: OpenSSL's reasons, not its nested list.
        return f"TLS handshake failed: {describeTlsError(value, ', ')}"
    if module.startswith("service_identity"):
        # A valid certificate, for another name.
        names = []
        for error in getattr(value, "errors", ()):
            wanted = getattr(error, "mismatched_id", None)
            name = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
            names.append(name.decode("ascii", "replace") if isinstance(name, bytes) else str(name))
        return f"TLS handshake failed: the server's certificate is not for {' or '.join(names) or '?'}"
    return failure.getErrorMessage() or type(value).__name__
