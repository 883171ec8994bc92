"""
The monitor's view of a worker pool (C{twistd iocpsvc --workers N}): what
the parent's one monitor serves about its workers.

  - C{/stats.json} (and C{/metrics}): the pool's totals over its workers,
    plus a C{workers} row per worker and the C{worker_*} figures;
  - C{/connections.json}: every live worker's top rows, merged, with the
    workers that did not answer in time listed in C{unanswered}.

The two agree: a worker answers C{connections} with its figures of the same
turn, which become its snapshot (so C{/stats.json} asked after a listing
shows at least what the listing saw), and C{/stats.json} older than the
sampler's C{maxAge} first asks the workers again (L{PoolSource.refresh}),
so that the parent's figures are as fresh as one process's.

The pool is read through L{iocpsvc.interfaces.IWorkerPool}: this module
imports nothing of L{iocpsvc.workers}, and the pool nothing of the monitor.
The assembly (L{iocpsvc.assembly}) hands the monitor a L{PoolSource} of
the pool, as it hands it a factory's figures in one process.
"""

from __future__ import annotations

import heapq
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred

from iocpsvc.interfaces import IWorkerPool
from iocpsvc.monitor.stats import SORT_KEYS, connectionSortKey

# The "kind" of a worker's figures for the parent's relay between workers
# (iocpsvc.workers.handover.RELAY_BUS_KIND): not a cluster.
_RELAY_BUS_KIND = "workers"


def _clusterBus(snapshot: dict[str, Any]) -> dict[str, Any] | None:
    """A worker's cluster bus figures, or C{None} (no bus, or only the parent's relay)."""
    bus = snapshot.get("cluster")
    if not bus or bus.get("kind") == _RELAY_BUS_KIND:
        return None
    return bus


class PoolSource:
    """
    The figures of a worker pool as the monitor reads them: C{collect()},
    C{connections(...)} and C{reactor}, like the
    L{iocpsvc.monitor.stats.FactorySource} of one process.

    @ivar pool: the L{IWorkerPool} read.
    @ivar peakOnline: the most connections online at once over all the
        workers, as far as L{collect} saw.
    """

    freshWithin = 0.5
    """Seconds L{refresh} waits for the workers' answers at most."""

    def __init__(self, pool: IWorkerPool) -> None:
        self.pool = pool
        self.reactor = pool.reactor
        self.peakOnline = 0

    @property
    def generation(self) -> int:
        """Changes whenever a worker's figures do (the sampler then collects again)."""
        return int(self.pool.generation)

    def refresh(self) -> Deferred[None]:
        """
        Ask the workers for their figures now; fire once they have all
        answered, or after L{freshWithin} seconds (a slow worker's figures
        are then its last ones, and its answer is kept when it comes).
        """
        done: Deferred[None] = Deferred()

        def fire(_: object = None) -> None:
            if not done.called:
                done.callback(None)
            if timer.active():
                timer.cancel()

        timer = self.reactor.callLater(self.freshWithin, fire)
        maybeDeferred(self.pool.poll).addBoth(fire)  # a poll that raises fires it too
        return done

    def collect(self) -> dict[str, Any]:
        """
        The figures of C{/stats.json}: totals over the workers (counters
        include workers that died, up to their last answer), plus a
        C{workers} row per worker.
        """
        pool = self.pool
        result = pool.totals()
        cluster = result.pop("cluster")
        closed = result.pop("closed_total")
        clusterSeen = bool(cluster)
        connectedWorkers = claimedWorkers = pendingBytes = 0
        now = self.reactor.seconds()
        rows = []
        for index in sorted(pool.workers):
            worker = pool.workers[index]
            snapshot = pool.snapshots.get(index, {})
            bus = _clusterBus(snapshot)
            responsive = worker.alive and worker.responsive
            if bus:
                clusterSeen = True
                # A worker that does not answer is not known to be connected.
                connectedWorkers += 1 if bus.get("connected") and responsive else 0
                claimedWorkers += 1 if bus.get("node_id_claimed", True) and responsive else 0
                pendingBytes += int(bus.get("pending_bytes", 0))
            rows.append(
                {
                    "worker": index,
                    "pid": worker.pid,
                    "alive": worker.alive,
                    "responsive": responsive,
                    "node_id": worker.nodeId,
                    "state": workerState(worker),
                    "restarts": int(getattr(worker, "restarts", 0)),
                    "answered_seconds_ago": _age(now, getattr(worker, "answeredAt", None)),
                    "online": snapshot.get("online", 0),
                    "accepted_total": snapshot.get("accepted_total", 0),
                    "received_frames_total": snapshot.get("received_frames_total", 0),
                    "sent_frames_total": snapshot.get("sent_frames_total", 0),
                    "received_bytes_total": snapshot.get("received_bytes_total", 0),
                    "sent_bytes_total": snapshot.get("sent_bytes_total", 0),
                    "uptime_seconds": snapshot.get("uptime_seconds", 0),
                    "cluster_connected": bool(bus and bus.get("connected")),
                    "cluster_node_id_claimed": bool(bus and bus.get("node_id_claimed", True)),
                    "cluster_pending_bytes": int(bus.get("pending_bytes", 0)) if bus else 0,
                }
            )
        self.peakOnline = max(self.peakOnline, result["online"])
        result["peak_online"] = self.peakOnline
        result["closed_total"] = closed
        result["uptime_seconds"] = round(now - pool.startedAt, 3)
        result["node_id"] = 0
        result["worker_restarts_total"] = pool.restartsTotal
        result["worker_relay_dropped_total"] = pool.relayDroppedTotal
        result["workers"] = rows
        if clusterSeen:
            # "connected": every worker's bus is up; "connected_workers" says how many are.
            cluster["connected"] = connectedWorkers == len(rows) and bool(rows)
            cluster["connected_workers"] = connectedWorkers
            # Another node holding a worker's id would take its messages.
            cluster["node_id_claimed"] = claimedWorkers == len(rows) and bool(rows)
            cluster["node_ids_claimed"] = claimedWorkers
            cluster["pending_bytes"] = pendingBytes
            result["cluster"] = cluster
        return result

    def connections(self, sort: str, limit: int, descending: bool | None) -> Deferred[dict[str, Any]]:
        """
        C{/connections.json} over every worker: each one's top rows,
        merged; workers that do not answer within the pool's answer
        timeout are listed in C{unanswered}.
        """
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}")
        asked = self.pool.ask("connections", sort=sort, limit=limit, descending=descending)

        def merge(answers: list[tuple[bool, Any]]) -> dict[str, Any]:
            rows = []
            online = 0
            unanswered = []
            chosenOrder = "desc" if descending else "asc"
            for (index, _), (ok, answer) in zip(asked, answers, strict=True):
                if not ok or not isinstance(answer, dict):
                    unanswered.append(index)
                    continue
                snapshot = answer.get("stats")
                if isinstance(snapshot, dict):
                    # The worker's figures of the listing's turn: /stats.json agrees.
                    self.pool.recordSnapshot(index, snapshot)
                online += answer.get("online", 0)
                chosenOrder = answer.get("order", chosenOrder)
                for row in answer.get("connections", []):
                    rows.append(dict(row, worker=index))
            pick = heapq.nlargest if chosenOrder == "desc" else heapq.nsmallest
            return {
                "online": online,
                "sort": sort,
                "order": chosenOrder,
                "limit": limit,
                "unanswered": unanswered,
                "connections": pick(limit, rows, key=connectionSortKey(sort)),
            }

        return DeferredList([answer for _, answer in asked], consumeErrors=True).addCallback(merge)


def _age(now: float, then: float | None) -> float | None:
    return None if then is None else round(max(0.0, now - then), 3)


def workerState(worker: Any) -> str:
    """
    A worker's state in words: C{serving}, C{starting} (its process runs,
    it does not listen yet), C{unresponsive} (it did not answer in time) or
    C{down} (its process ended; the slot is being restarted).
    """
    if not worker.alive:
        return "down"
    if not worker.responsive:
        return "unresponsive"
    if not getattr(worker, "ready", True):
        return "starting"
    return "serving"
