"""
What a server is to be, checked and frozen: L{ServerConfig}.  The command
line (L{iocpsvc.tap}) parses options into one; the assembly
(L{iocpsvc.assembly}) builds the services from one.  Nothing here parses a
command line or builds a service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from iocpsvc.codecs import Codec
from iocpsvc.context import ConnectionContext
from iocpsvc.limits import ServerLimits

WorkerOf = tuple[int, int, tuple[str, ...]]
"""A worker's place: its index, its node id, and its inherited sockets' modes."""

SHARED = "shared"
REUSEPORT = "reuseport"
WORKER_SOCKET_MODES = (SHARED, REUSEPORT)
"""The ways workers can share a listening socket (C{--worker-sockets})."""


def workerOfArgument(index: int, nodeId: int, sockets: list[str]) -> str:
    """
    The C{--worker-of} value for the worker of slot C{index} with node id
    C{nodeId}, given the C{MODE:BACKLOG} entry of each listening socket it
    inherits (the format is drawn in L{iocpsvc.workers.handover}).
    """
    return f"{index}:{nodeId}:{','.join(sockets)}"


def parseWorkerOf(value: str) -> tuple[int, int, list[str]]:
    """
    A C{--worker-of} value as its parts: the slot index, the node id, and
    the C{MODE:BACKLOG} entry of each inherited listening socket.

    @raise ValueError: C{value} is not what a parent passes.
    """
    index, nodeId, sockets = value.split(":", 2)
    return int(index), int(nodeId), [entry for entry in sockets.split(",") if entry]


@dataclass(frozen=True)
class ServerConfig:
    """
    One server's configuration.

    @ivar ports: the endpoint descriptions to listen on.
    @ivar contextClass: the context class of every connection.
    @ivar codec: the codec every connection uses.
    @ivar limits: the connection limits as given (L{iocpsvc.assembly} may
        derive C{maxConnections} from the open-files limit, on a copy).
    @ivar shutdownTimeout: seconds connections may take to close on stop.
    @ivar monitor: the monitor's endpoint description, or C{None}.
    @ivar statsInterval: seconds between summary lines (0: none).
    @ivar monitorMaxConnections: the monitor's connection cap.
    @ivar monitorTimeout: seconds a monitor request may take to arrive.
    @ivar workerCount: worker processes to run (1: this process serves).
    @ivar workerTimeout: seconds of silence after which a worker is killed.
    @ivar workerSockets: how workers share a listening socket, or C{None}
        for the platform's default.
    @ivar workerOf: this process's place among its parent's workers, or
        C{None} when it is not a worker.
    @ivar nodeId: this node's cluster id, or C{None} for a random one.
    @ivar cluster: the cluster bus's Redis URL, or C{None}.
    @ivar arguments: the command-line arguments as given, for workers to be
        started with the same.
    """

    ports: tuple[str, ...]
    contextClass: type[ConnectionContext]
    codec: Codec
    limits: ServerLimits
    shutdownTimeout: float = 10.0
    monitor: str | None = None
    statsInterval: float = 60.0
    monitorMaxConnections: int = 16
    monitorTimeout: float = 10.0
    workerCount: int = 1
    workerTimeout: float = 30.0
    workerSockets: str | None = None
    workerOf: WorkerOf | None = None
    nodeId: int | None = None
    # Both may hold a Redis password: not in the repr, so that no log line
    # or traceback that shows a ServerConfig shows it.
    cluster: str | None = field(default=None, repr=False)
    arguments: tuple[str, ...] = field(default=(), repr=False)

    @property
    def isWorker(self) -> bool:
        """Whether this process is one of a parent's workers."""
        return self.workerOf is not None

    @property
    def isParent(self) -> bool:
        """Whether this process is to start workers rather than serve."""
        return self.workerOf is None and self.workerCount > 1
