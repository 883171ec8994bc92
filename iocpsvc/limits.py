"""
The server's limits, in one place: every limit has a default, a counter on
the factory, and a log line when it bites (see docs/hardening.rst).

Also: the accept filter (CIDR allow/deny lists) and raising the process's
open-files limit, from which the default connection limit is derived.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from iocpsvc.addresses import parseNetwork
from iocpsvc.units import KiB, MiB

DEFAULT_MAX_PENDING_WRITE = 4 * MiB
"""The least C{maxPendingWrite} is by default, whatever the codec."""

PENDING_WRITE_HEADROOM = 1 * MiB
"""
What the default C{maxPendingWrite} allows beyond the codec's largest frame
(at least twice the write high water mark): the replies of one read, and
what was already waiting below the mark.
"""

# File descriptors kept back from --max-connections for listeners, log
# files, pipes, the Redis link, and the connections refused at accept
# (each holds one for a moment); the monitor's connections come on top.
RESERVED_FILES = 64


@dataclass
class ServerLimits:
    """
    Limits a factory enforces on its connections.

    @ivar maxConnections: connections online at once; beyond it a new one is
        closed at accept (reason C{refused}).  C{None}: no limit.
    @ivar idleTimeout: seconds without receiving anything after which a
        connection is closed (reason C{idle}); 0 turns it off.
    @ivar keepAlive: turn TCP keep-alive on for every connection, with the
        probe timing below, to find dead peers.
    @ivar keepAliveIdle: seconds of silence before the first probe.
    @ivar keepAliveInterval: seconds between probes.
    @ivar keepAliveCount: unanswered probes before the kernel drops it.
    @ivar writeHighWater: bytes written but not yet sent above which the
        connection stops reading from its client (and stops dispatching),
        until everything written has been sent.
    @ivar maxPendingWrite: bytes written but not yet sent above which the
        connection is closed (reason C{slow-client}).  C{None} (the
        default): derived from the codec's largest frame, so that a reply
        that large can be sent (see L{pendingWriteLimit}).
    @ivar maxPendingObjects: objects received but not yet dispatched (behind
        a slow handler) above which reading from that client pauses.
    @ivar maxPendingObjectBytes: the same bound in received bytes: the
        frames whose objects wait behind a slow handler.  (A frame can
        decode to many times its size: JSON, say.)
    @ivar closeTimeout: seconds a closing connection may take to send what
        it was asked to, before it is aborted.
    @ivar proxyHeaderTimeout: behind C{haproxy:}, seconds a new connection
        may take to send its complete PROXY header before it is closed
        (reason C{idle}); checked by the same periodic sweep as the idle
        timeout.  0: the idle timeout applies instead.
    """

    maxConnections: int | None = None
    idleTimeout: float = 300.0
    keepAlive: bool = True
    keepAliveIdle: int = 60
    keepAliveInterval: int = 10
    keepAliveCount: int = 6
    writeHighWater: int = 64 * KiB
    maxPendingWrite: int | None = None
    maxPendingObjects: int = 128
    maxPendingObjectBytes: int = 1 * MiB
    closeTimeout: float = 10.0
    allow: list[Any] = field(default_factory=list)
    deny: list[Any] = field(default_factory=list)
    proxyHeaderTimeout: float = 10.0

    def __post_init__(self) -> None:
        if self.maxConnections is not None and self.maxConnections < 1:
            raise ValueError("maxConnections must be at least 1")
        if self.idleTimeout < 0:
            raise ValueError("idleTimeout must be >= 0")
        if self.writeHighWater <= 0:
            raise ValueError("writeHighWater must be > 0")
        if self.maxPendingWrite is not None and self.maxPendingWrite < self.writeHighWater:
            raise ValueError(
                f"maxPendingWrite ({self.maxPendingWrite}) must be at least "
                f"writeHighWater ({self.writeHighWater})"
            )
        if self.maxPendingObjects < 1:
            raise ValueError("maxPendingObjects must be at least 1")
        if self.maxPendingObjectBytes < 1:
            raise ValueError("maxPendingObjectBytes must be at least 1")
        if self.closeTimeout < 0:
            raise ValueError("closeTimeout must be >= 0")
        if self.proxyHeaderTimeout < 0:
            raise ValueError("proxyHeaderTimeout must be >= 0")
        self.allow = [parseNetwork(n) for n in self.allow]
        self.deny = [parseNetwork(n) for n in self.deny]

    def pendingWriteLimit(self, maxFrameLength: int | None) -> int:
        """
        The C{maxPendingWrite} in force for a codec whose largest frame is
        C{maxFrameLength} bytes: the one given, or by default that frame
        plus L{PENDING_WRITE_HEADROOM} (or twice C{writeHighWater}, if
        more), and at least L{DEFAULT_MAX_PENDING_WRITE}.
        """
        if self.maxPendingWrite is not None:
            return self.maxPendingWrite
        headroom = max(PENDING_WRITE_HEADROOM, 2 * self.writeHighWater)
        return max(DEFAULT_MAX_PENDING_WRITE, (maxFrameLength or 0) + headroom)

    def sweepInterval(self) -> float:
        """How often the factory's sweep looks for idle and stuck connections."""
        if self.idleTimeout:
            return max(0.25, min(5.0, self.idleTimeout / 10))
        return max(0.25, min(5.0, self.closeTimeout / 4 or 5.0))


def defaultMaxConnections(openFiles: int | None, monitorConnections: int = 0) -> int | None:
    """
    The connection limit derived from the open-files limit: each connection
    is one descriptor, less a reserve for everything else and the
    monitor's own connections, so that neither can starve the other.
    """
    if openFiles is None:
        return None
    return max(16, openFiles - RESERVED_FILES - monitorConnections)


def descriptorShortfall(openFiles: int | None, maxConnections: int | None, monitorConnections: int) -> int:
    """
    How many descriptors short the open-files limit is of C{maxConnections}
    connections, the monitor's and the reserve (0: none).  A server short
    of descriptors runs out of them at accept before its connection limit.
    """
    if openFiles is None or maxConnections is None:
        return 0
    return max(0, maxConnections + monitorConnections + RESERVED_FILES - openFiles)
