"""
The assembly: the services a L{ServerConfig} describes, built and joined
together.  One of three shapes::

    buildService(config, reactor)
      -> the parent of worker processes   config.isParent: the pool and
                                          the one monitor (no factory)
      -> one of those workers             config.isWorker: the factory on
                                          its parent's sockets, the control
                                          service, the relay bus
      -> one process                      the factory, its listeners, the
                                          cluster bus, the monitor

It is the one module outside L{iocpsvc.workers} that knows the worker
processes, and with L{iocpsvc.tap} the one that knows the configuration.

A process imports only what its configuration uses: the worker processes,
the monitor (C{twisted.web}) and the Redis bus are imported here, in the
shape that needs them, so that one process with C{--monitor none} pays
for none of them (tests/test_lazy_imports.py keeps it so).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import endpoints
from twisted.logger import Logger

from iocpsvc.accept import guardedReactor
from iocpsvc.addresses import withDefaultBacklog
from iocpsvc.cluster import MAX_NODE_ID, randomNodeId
from iocpsvc.config import ServerConfig
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import (
    RESERVED_FILES,
    ServerLimits,
    defaultMaxConnections,
    descriptorShortfall,
)
from iocpsvc.machine import raiseOpenFilesLimit
from iocpsvc.service import ClusterService, SocketServerService

_log = Logger(namespace="iocpsvc.assembly")


def buildService(config: ServerConfig, reactor: Any) -> MultiService:
    """
    The server C{config} describes: one process, the parent of worker
    processes, or one of those (see the module docstring).

    Raises the open-files limit to its hard limit and, unless a connection
    limit was given, derives it from the open-files limit.
    """
    if config.isParent:
        from iocpsvc.workers import workersAvailable

        why = workersAvailable(reactor)
        if why is None:
            return buildWorkerPool(config, reactor)
        _log.warn("--workers {count}: {why}; running one process", count=config.workerCount, why=why)
    limits, notes = descriptorBudget(config)
    factory = ConnectionContextFactory(config.contextClass, config.codec, reactor=reactor, limits=limits)
    # Listening ports that refuse in the accept's own turn (iocpsvc.accept).
    endpointReactor: Any = guardedReactor(reactor)
    nodeId = config.nodeId
    if config.workerOf is not None:
        from iocpsvc import workers  # a worker: its parent's sockets, its control channel and bus

        index, nodeId, modes = config.workerOf
        notes.insert(0, f"worker {index} (node {nodeId})")
        try:
            # Out of the terminal's process group: Ctrl-C goes to the
            # parent, which stops the workers in order.
            os.setsid()
        except OSError:
            pass
        endpointReactor = workers.SocketAdoptingReactor(endpointReactor, list(modes))
    service = SocketServerService(
        factory,
        [
            workers.adoptedEndpoint(endpointReactor, description, position)
            if config.isWorker and description.startswith("systemd:")
            else endpoints.serverFromString(endpointReactor, withDefaultBacklog(description))
            for position, description in enumerate(config.ports)
        ],
        reactor=reactor,
        shutdownTimeout=config.shutdownTimeout,
        startNotes=notes,
        descriptions=list(config.ports),
    )
    bus: Any = None
    if config.cluster is not None:
        from iocpsvc.cluster.redis import RedisBus  # only a cluster node pays for the Redis client

        bus = RedisBus(config.cluster, nodeId or randomNodeId(), reactor=reactor)
    elif config.workerOf is not None:
        bus = workers.ParentBus(config.workerOf[1])
    if bus is not None:
        factory.joinCluster(bus)
        ClusterService(bus, factory).setServiceParent(service)
    if config.workerOf is not None:
        from iocpsvc.monitor.stats import FactorySource

        parentBus = bus if isinstance(bus, workers.ParentBus) else None
        workers.WorkerControlService(
            FactorySource(factory), reactor, config.workerOf[0], parentBus
        ).setServiceParent(service)
    elif config.monitor is not None:
        from iocpsvc.monitor.about import ServerDescription
        from iocpsvc.monitor.stats import FactorySource

        about = ServerDescription(
            config,
            factory.limits,
            reactor,
            lambda: [port.getHost() for port in service.ports],
            nodeIds=[bus.nodeId] if bus is not None else None,
        )
        monitorService(FactorySource(factory), config, reactor, about).setServiceParent(service)
    return service


def descriptorBudget(config: ServerConfig) -> tuple[ServerLimits, list[str]]:
    """
    The connection limits in force, with C{maxConnections} derived from the
    open-files limit (raised to its hard limit) unless one was given, and
    the start line's notes about it.  An explicit limit that leaves too few
    descriptors is warned of.
    """
    limits = config.limits
    notes: list[str] = []
    # A worker's monitor is its parent's: it keeps no descriptors for one.
    monitorConnections = (
        config.monitorMaxConnections if config.monitor is not None and not config.isWorker else 0
    )
    openFiles = raiseOpenFilesLimit()
    if openFiles is None:
        return limits, notes
    before, after = openFiles
    notes.append(
        f"open files limit raised from {before} to {after}"
        if after != before
        else f"open files limit {after}"
    )
    if limits.maxConnections is None:
        limits = dataclasses.replace(limits, maxConnections=defaultMaxConnections(after, monitorConnections))
        notes.append("max connections derived from it")
    shortfall = descriptorShortfall(after, limits.maxConnections, monitorConnections)
    if shortfall:
        _log.warn(
            "--max-connections {maxConnections}: the open-files limit {openFiles} is {shortfall} "
            "descriptors short of it, the monitor's {monitor} and a reserve of {reserve}; "
            "connections past the limit will be closed at accept as no-descriptors",
            maxConnections=limits.maxConnections,
            openFiles=after,
            shortfall=shortfall,
            monitor=monitorConnections,
            reserve=RESERVED_FILES,
        )
    return limits, notes


def buildWorkerPool(config: ServerConfig, reactor: Any) -> MultiService:
    """The parent of C{config.workerCount} worker processes, and the one monitor."""
    from iocpsvc import workers
    from iocpsvc.monitor.about import ServerDescription
    from iocpsvc.monitor.pool import PoolSource

    openFiles = raiseOpenFilesLimit()
    # The limits each worker derives (on this machine's open-files limit), for the monitor.
    workerLimits = config.limits
    if workerLimits.maxConnections is None and openFiles is not None:
        workerLimits = dataclasses.replace(workerLimits, maxConnections=defaultMaxConnections(openFiles[1]))
    nodeIdBase = min(config.nodeId or randomNodeId(), MAX_NODE_ID - config.workerCount + 1)
    pool = workers.WorkerPoolService(
        list(config.ports),
        list(config.arguments),
        config.workerCount,
        reactor=reactor,
        mode=config.workerSockets,
        shutdownTimeout=config.shutdownTimeout,
        nodeIdBase=nodeIdBase,
    )
    pool.unresponsiveTimeout = config.workerTimeout
    if config.monitor is not None:
        about = ServerDescription(
            config,
            workerLimits,
            reactor,
            lambda: pool.addresses,
            nodeIds=[nodeIdBase + index for index in range(config.workerCount)],
            workerMode=pool.mode,
        )
        monitorService(PoolSource(pool), config, reactor, about).setServiceParent(pool)
    return pool


def monitorService(source: Any, config: ServerConfig, reactor: Any, about: Any = None) -> Any:
    """
    The monitor of C{source} (a factory's or the pool's figures), as
    C{config} says; C{about} is what is running
    (L{iocpsvc.monitor.about.ServerDescription}).
    """
    from iocpsvc.monitor.site import MonitorLimits  # twisted.web: only with a monitor
    from iocpsvc.monitor.web import MonitorService

    assert config.monitor is not None
    limits = MonitorLimits(maxConnections=config.monitorMaxConnections, requestTimeout=config.monitorTimeout)
    return MonitorService(source, config.monitor, config.statsInterval, reactor, limits, about)
