"""
What is running, as the monitor tells it: C{/about.json}, the C{server}
part of C{/stats.json} (the dashboard's "What is running" panel) and the
C{iocpsvc_build_info} and C{iocpsvc_start_time_seconds} metrics.

L{ServerDescription} is made by the assembly (L{iocpsvc.assembly}) from
the configuration and what it derived from it (the limits in force, the
node id chosen); the listening addresses are read when asked, since a
C{tcp:0} port has its number only once it listens.  A cluster URL is shown
through L{iocpsvc.cluster.redactURL}: its password never reaches a page.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import twisted
from iocpsvc._version import __version__
from iocpsvc.addresses import describeAddress
from iocpsvc.cluster import redactURL
from iocpsvc.config import ServerConfig
from iocpsvc.limits import ServerLimits
from iocpsvc.service import describeContext, describeReactor

ONE_PROCESS = "one process"
"""The C{workers.mode} of a server without worker processes."""


class ServerDescription:
    """
    What a server is: its software, its reactor, its listeners, codec,
    context, limits, workers and cluster node.

    @ivar startedAt: when it was made, in wall-clock seconds.
    """

    def __init__(
        self,
        config: ServerConfig,
        limits: ServerLimits,
        reactor: Any,
        listening: Callable[[], list[Any]],
        nodeIds: list[int] | None = None,
        workerMode: str | None = None,
    ) -> None:
        """
        @param limits: the limits in force (a derived C{maxConnections}
            included; per worker process under C{--workers}).
        @param listening: the addresses listened on now (an
            L{twisted.internet.interfaces.IAddress} each).
        @param nodeIds: the cluster node id of this process, or of each
            worker; C{None} when not known (no cluster, no workers).
        @param workerMode: how worker processes share the listening
            sockets; C{None} for one process.
        """
        self.config = config
        self.limits = limits
        self.reactor = reactor
        self.listening = listening
        self.nodeIds = list(nodeIds or [])
        self.workerMode = workerMode
        self.startedAt = time.time()
        # What does not change while the server runs, worked out once.
        self._fixed = self._describeFixed()

    def _describeFixed(self) -> dict[str, Any]:
        config, limits = self.config, self.limits
        codec = config.codec
        workers = config.workerCount if self.workerMode is not None else 1
        return {
            "version": __version__,
            "python": platform.python_version(),
            "twisted": twisted.__version__,
            "reactor": describeReactor(self.reactor),
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.startedAt)),
            "started_at_seconds": round(self.startedAt, 3),
            "ports": list(config.ports),
            "codec": codec.spec,
            "max_frame_length": codec.maxFrameLength,
            "context": describeContext(config.contextClass),
            "limits": {
                "max_connections": limits.maxConnections,
                "idle_timeout": limits.idleTimeout,
                "keep_alive": limits.keepAlive,
                "write_high_water": limits.writeHighWater,
                "max_pending_write": limits.pendingWriteLimit(codec.maxFrameLength),
                "max_pending_objects": limits.maxPendingObjects,
                "max_pending_object_bytes": limits.maxPendingObjectBytes,
                "close_timeout": limits.closeTimeout,
                "shutdown_timeout": config.shutdownTimeout,
                "per": "worker" if workers > 1 else "server",
            },
            "workers": {"count": workers, "mode": self.workerMode or ONE_PROCESS},
            "cluster": {
                "url": redactURL(config.cluster) if config.cluster is not None else None,
                "node_ids": self.nodeIds,
            },
            "monitor": config.monitor,
        }

    def describe(self) -> dict[str, Any]:
        """
        The description (a new dict each time): the fixed part, the
        listening addresses now (C{tcp:127.0.0.1:9983}) and the uptime.
        """
        result = dict(self._fixed)
        result["listeners"] = [describeAddress(address) for address in self.listening()]
        result["uptime_seconds"] = round(time.time() - self.startedAt, 3)
        return result
