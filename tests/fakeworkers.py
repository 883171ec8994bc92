"""
A worker pool without worker processes, for the tests of the parent
(L{iocpsvc.workers.parent}) and of the monitor's view of it
(L{iocpsvc.monitor.pool}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from iocpsvc.workers import WorkerPoolService


class FakeWorker:
    """
    A worker as the pool sees it, without a process: it is its own control
    channel, answers every call with C{answer} at once (or, when C{answers}
    is false, never: the call times out), and records what is sent and
    signalled to it.
    """

    def __init__(self, index: int, nodeId: int, reading: bool = True) -> None:
        self.index = index
        self.nodeId = nodeId
        self.alive = True
        self.ready = True
        self.responsive = True
        self.polling = False
        self.pid = 1000 + index
        self.reading = reading
        self.answers = True
        self.answer: Any = {"online": 0}
        self.sent: list[Any] = []
        self.signals: list[str] = []
        self.unresponsiveSince: float | None = None
        self.relayDropped = 0
        self.answeredAt: float | None = None
        self.restarts = 0
        self.startedAt = 0.0
        self.calls: list[str] = []
        self.pollWaiters: list[Deferred[None]] = []
        self.control = self

    def call(self, op: str, timeout: float | None = None, clock: Any = None, **fields: Any) -> Deferred[Any]:
        self.calls.append(op)
        answer: Deferred[Any] = Deferred()
        if self.answers:
            answer.callback(self.answer)
        elif timeout is not None:
            answer.addTimeout(timeout, clock)
        return answer

    def signal(self, name: str) -> None:
        self.signals.append(name)

    def send(self, op: str, **fields: Any) -> bool:
        if not self.reading:
            return False
        self.sent.append((op, fields))
        return True


def clockedPool(count: int = 2) -> WorkerPoolService:
    """A pool of C{count} slots (node ids from 10) on a C{Clock}, never started."""
    return WorkerPoolService(["tcp:0"], [], count, reactor=Clock(), nodeIdBase=10)
