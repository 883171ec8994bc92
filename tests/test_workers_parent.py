"""
Tests for L{iocpsvc.workers.parent}: the pool of worker processes without
processes (totals, the watchdog, restarts, the relay between workers, the
relay of their logs).
"""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.cluster import BROADCAST, TO_CONTEXT, firstContextId, packMessage
from iocpsvc.monitor.pool import PoolSource
from iocpsvc.workers.parent import WorkerPoolService, _WorkerProcess, reactorName
from tests.fakeworkers import FakeWorker, clockedPool


class WorkerPoolTests(SynchronousTestCase):
    """The parent's totals, watchdog, restarts and relay of bus messages."""

    def test_deadWorkersCountersStay(self) -> None:
        """A dead worker's counters stay in the totals: they never go back."""
        pool = clockedPool()
        worker = FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        pool.snapshots = {1: {"online": 3, "accepted_total": 5, "closed_total": {"peer": 2}}}
        pool._stopping = True  # no restart in this test
        pool.workerEnded(worker, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        stats = PoolSource(pool).collect()
        self.assertEqual(stats["accepted_total"], 5)
        self.assertEqual(stats["online"], 0)
        self.assertEqual(stats["closed_total"], {"peer": 2})

    def test_restartsCountedPerSlot(self) -> None:
        """A slot's restarts are counted, and its next worker knows how many there were."""
        from iocpsvc.workers.parent import _WorkerProcess

        pool = clockedPool()
        worker = FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        pool.workerEnded(worker, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        pool.workerEnded(worker, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        self.assertEqual((pool.slotRestarts, pool.restartsTotal), ({1: 2}, 2))
        self.assertEqual(_WorkerProcess(pool, 1, 10).restarts, 2)
        self.assertEqual(_WorkerProcess(pool, 2, 11).restarts, 0)
        pool._stopping = True
        for call in pool._pendingRestarts.values():
            call.cancel()

    def test_deadWorkersRelayIsNotACluster(self) -> None:
        """
        A dead worker's relay-bus figures (the parent's own relay, not a
        cluster) do not make a cluster appear in the totals.
        """
        pool = clockedPool()
        worker = FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        relay = {"kind": "workers", "connected": True, "published_total": 4}
        pool.snapshots = {1: {"accepted_total": 5, "cluster": relay}}
        pool._stopping = True  # no restart in this test
        pool.workerEnded(worker, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        stats = PoolSource(pool).collect()
        self.assertEqual(stats["accepted_total"], 5)
        self.assertNotIn("cluster", stats)

    def test_everyFigureAddsUp(self) -> None:
        """The totals over the workers have every figure of the one table."""
        from iocpsvc.counters import FIGURES

        pool = clockedPool()
        pool.workers = {1: FakeWorker(1, 10)}  # type: ignore[dict-item]
        pool.snapshots = {1: {figure.key: 2 for figure in FIGURES}}
        stats = PoolSource(pool).collect()
        for figure in FIGURES:
            self.assertIn(figure.key, stats)
            if figure.overWorkers is not None:
                self.assertEqual(stats[figure.key], 2, figure.key)

    def test_silentWorkerKilled(self) -> None:
        """
        A worker that stops answering is marked unresponsive after
        answerTimeout, and killed after unresponsiveTimeout (so that its
        replacement serves its slot's queue); one that answers is left alone.
        """
        pool = clockedPool()
        clock = pool.reactor
        silent, fine = FakeWorker(1, 10), FakeWorker(2, 11)
        silent.answers = False
        pool.workers = {1: silent, 2: fine}  # type: ignore[dict-item]
        for _ in range(int(pool.unresponsiveTimeout) + 5):
            pool.poll()
            clock.advance(1)
        self.assertFalse(silent.responsive)
        self.assertIn("KILL", silent.signals)
        self.assertEqual(fine.signals, [])
        pool.unresponsiveTimeout = 0
        silent.signals.clear()
        for _ in range(60):
            pool.poll()
            clock.advance(1)
        self.assertEqual(silent.signals, [])

    def test_pollFiresWhenAnswered(self) -> None:
        """
        poll() fires once every live worker has answered or missed, a
        worker already being asked included (it is not asked twice); the
        answers are the snapshots, and the pool's generation moves on.
        """
        pool = clockedPool()
        quick, slow = FakeWorker(1, 10), FakeWorker(2, 11)
        slow.answers = False
        pool.workers = {1: quick, 2: slow}  # type: ignore[dict-item]
        quick.answer = {"online": 3}
        first = pool.poll()
        generation = pool.generation
        self.assertEqual(pool.snapshots, {1: {"online": 3}})
        self.assertEqual(quick.answeredAt, 0.0)
        pool.reactor.advance(1)
        second = pool.poll()  # the slow one is still being asked: not asked again
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertGreater(pool.generation, generation)
        pool.reactor.advance(pool.answerTimeout)
        self.assertIsNone(self.successResultOf(first))
        self.assertIsNone(self.successResultOf(second))
        self.assertFalse(slow.responsive)
        self.assertIsNone(slow.answeredAt)

    def test_pollTickDoesNotWait(self) -> None:
        """
        The periodic poll asks a worker that answers every interval, while
        another one stays silent (its question is asked once at a time).
        """
        from twisted.internet.task import LoopingCall

        pool = clockedPool()
        silent, fine = FakeWorker(1, 10), FakeWorker(2, 11)
        silent.answers = False
        pool.workers = {1: silent, 2: fine}  # type: ignore[dict-item]
        loop = LoopingCall(pool.pollTick)
        loop.clock = pool.reactor
        loop.start(pool.pollInterval)
        pool.reactor.pump([pool.pollInterval] * 4)
        loop.stop()
        self.assertEqual(len(fine.calls), 5)
        self.assertEqual(len(silent.calls), 3)  # again each time its question timed out: at 0, 2, 4 s
        pool.reactor.advance(pool.answerTimeout)

    def test_recordSnapshot(self) -> None:
        """A snapshot given with a worker's connections is kept as its figures; not for a dead slot."""
        pool = clockedPool()
        worker = FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        pool.reactor.advance(5)
        pool.recordSnapshot(1, {"online": 7})
        self.assertEqual((pool.snapshots[1], worker.answeredAt, pool.generation), ({"online": 7}, 5.0, 1))
        worker.alive = False
        pool.recordSnapshot(1, {"online": 9})
        pool.recordSnapshot(2, {"online": 9})
        self.assertEqual((pool.snapshots, pool.generation), ({1: {"online": 7}}, 1))

    def test_relayDropWarnings(self) -> None:
        """Drops for a worker not reading: one warning, then a reminder at most once a minute."""
        import base64

        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = clockedPool()
        sender, stuck = FakeWorker(1, 10), FakeWorker(2, 11, reading=False)
        pool.workers = {1: sender, 2: stuck}  # type: ignore[dict-item]
        message = base64.b64encode(packMessage(BROADCAST, 10, 0, b"hi")).decode()
        for _ in range(100):
            pool._relay(sender, {"m": message})  # type: ignore[arg-type]
            pool.reactor.advance(1)
        warnings = [e for e in events if "not reading its control channel" in e.get("log_format", "")]
        self.assertEqual([e["count"] for e in warnings], [1, 61])

    def test_relayDropsForAWorkerNotReading(self) -> None:
        """A worker that does not read its channel loses relayed messages, counted; others get theirs."""
        import base64

        pool = clockedPool()
        one, stuck, three = FakeWorker(1, 10), FakeWorker(2, 11, reading=False), FakeWorker(3, 12)
        pool.workers = {1: one, 2: stuck, 3: three}  # type: ignore[dict-item]
        message = base64.b64encode(packMessage(BROADCAST, 10, 0, b"hi")).decode()
        pool._relay(one, {"m": message})  # type: ignore[arg-type]
        self.assertEqual((len(three.sent), pool.relayDroppedTotal), (1, 1))
        self.assertEqual(PoolSource(pool).collect()["worker_relay_dropped_total"], 1)

    def test_spawnFailureRetried(self) -> None:
        """A worker that cannot be started (no processes left) is tried again later."""
        from twisted.internet.task import Clock

        class Reactor(Clock):
            attempts = 0

            def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
                self.attempts += 1
                raise OSError(11, "Resource temporarily unavailable")

        clock = Reactor()
        pool = WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 1, reactor=clock)
        pool._openSockets()
        self.addCleanup(lambda: pool._opener and pool._opener.close())
        pool._spawn(1)
        self.assertEqual((clock.attempts, pool.workers), (1, {}))
        clock.advance(30)
        self.assertEqual(clock.attempts, 2)
        self.assertIn(1, pool._pendingRestarts)
        pool._stopping = True
        clock.advance(60)
        self.assertEqual(clock.attempts, 2)

    def test_logLevelsKept(self) -> None:
        """A worker's warning comes out of the parent as a warning, tagged with the worker."""
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        worker = _WorkerProcess(clockedPool(), 2, 11)
        worker.childDataReceived(
            1, b"2026-11-27T11:00:00+0000 [iocpsvc.factory#warn] refused 10.1.2.3\nplain "
        )
        worker.childDataReceived(1, b"line\n")
        mine = [e for e in events if e.get("worker") == 2]
        self.assertEqual([e["log_level"] for e in mine], [LogLevel.warn, LogLevel.info])
        self.assertEqual([e["line"] for e in mine], ["refused 10.1.2.3", "plain line"])
        self.assertEqual(mine[0]["source"], "iocpsvc.factory")

    def test_tracebackKeepsItsLevel(self) -> None:
        """The tab-indented lines of a multi-line event (a traceback) keep that event's level."""
        from twisted.logger import LogLevel, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        worker = _WorkerProcess(clockedPool(), 1, 10)
        worker.childDataReceived(
            1,
            b"2026-11-27T11:00:00+0000 [iocpsvc.context#critical] handler failed\n"
            b"\tTraceback (most recent call last):\n"
            b'\t  File "x.py", line 1, in f\n'
            b"\tbuiltins.ValueError: boom\n"
            b"2026-11-27T11:00:01+0000 [-] next\n",
        )
        mine = [e for e in events if e.get("worker") == 1]
        self.assertEqual([e["log_level"] for e in mine], [LogLevel.critical] * 4 + [LogLevel.info])
        self.assertEqual({e["source"] for e in mine[:4]}, {"iocpsvc.context"})

    def test_spawnFailuresCountAsFailedStarts(self) -> None:
        """Workers that cannot even be spawned lead to the critical 'no worker has started' line."""
        from twisted.internet.task import Clock
        from twisted.logger import LogLevel, globalLogPublisher

        class Reactor(Clock):
            def spawnProcess(self, *args: Any, **kwargs: Any) -> Any:
                raise PermissionError(13, "Permission denied")

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Reactor()
        pool = WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 1, reactor=clock)
        pool._openSockets()
        self.addCleanup(lambda: pool._opener and pool._opener.close())
        pool._spawn(1)
        for _ in range(10):
            clock.advance(30)
        pool._stopping = True
        critical = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertIn("no worker has started", critical[0]["log_format"])

    def test_relay(self) -> None:
        """Broadcasts go to the other workers; directed messages to the node's worker."""
        import base64

        pool = clockedPool()
        one, two, three = FakeWorker(1, 10), FakeWorker(2, 11), FakeWorker(3, 12)
        pool.workers = {1: one, 2: two, 3: three}  # type: ignore[dict-item]
        message = base64.b64encode(packMessage(BROADCAST, 10, 0, b"hi")).decode()
        pool._relay(one, {"m": message})  # type: ignore[arg-type]
        self.assertEqual((len(one.sent), len(two.sent), len(three.sent)), (0, 1, 1))
        direct = base64.b64encode(packMessage(TO_CONTEXT, 10, firstContextId(12), b"hi")).decode()
        pool._relay(one, {"m": direct})  # type: ignore[arg-type]
        self.assertEqual((len(two.sent), len(three.sent)), (1, 2))
        pool._relay(one, {"m": "not base64 at all!"})  # type: ignore[arg-type]
        self.assertEqual((len(two.sent), len(three.sent)), (1, 2))

    def test_totals(self) -> None:
        """
        totals(): counters of the living and the dead, gauges of the
        workers there are, closed_total per reason, and the cluster
        counters of real buses only (not the parent's relay).
        """
        pool = clockedPool(3)
        dead, one, two = FakeWorker(1, 10), FakeWorker(2, 11), FakeWorker(3, 12)
        pool.workers = {1: dead}  # type: ignore[dict-item]
        pool.snapshots = {1: {"accepted_total": 4, "online": 9, "closed_total": {"idle": 1}}}
        pool._stopping = True
        pool.workerEnded(dead, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        pool.workers = {2: one, 3: two}  # type: ignore[dict-item]
        pool.snapshots = {
            2: {"accepted_total": 1, "online": 1, "cluster": {"kind": "workers", "published_total": 5}},
            3: {
                "accepted_total": 2,
                "online": 2,
                "closed_total": {"idle": 2},
                "cluster": {"published_total": 7},
            },
        }
        totals = pool.totals()
        self.assertEqual((totals["accepted_total"], totals["online"]), (7, 3))
        self.assertEqual(totals["closed_total"], {"idle": 3})
        self.assertEqual(totals["cluster"], {"published_total": 7})
        self.assertEqual(totals["refused_total"], 0)

    def test_askLiveWorkers(self) -> None:
        """ask() asks each live worker, with the pool's answer timeout; the dead are not asked."""
        pool = clockedPool(3)
        one, dead, three = FakeWorker(1, 10), FakeWorker(2, 11), FakeWorker(3, 12)
        dead.alive = False
        three.answers = False
        pool.workers = {1: one, 2: dead, 3: three}  # type: ignore[dict-item]
        asked = pool.ask("connections", sort="id")
        self.assertEqual([index for index, _ in asked], [1, 3])
        results: list[Any] = []
        for _, answer in asked:
            answer.addBoth(results.append)
        pool.reactor.advance(pool.answerTimeout)
        self.assertEqual(results[0], {"online": 0})
        self.assertIsInstance(results[1], Failure)


class ReactorNameTests(SynchronousTestCase):
    """reactorName: the --reactor a parent gives its workers."""

    def test_uvloop(self) -> None:
        """The asyncio reactor on a uvloop event loop is named uvloop."""
        loop = type("Loop", (), {"__module__": "uvloop.Loop"})()
        reactor = type("AsyncioSelectorReactor", (), {"__module__": "twisted.internet.asyncioreactor"})()
        reactor._asyncioEventloop = loop
        self.assertEqual(reactorName(reactor), "uvloop")

    def test_asyncio(self) -> None:
        """The asyncio reactor on the standard library's loop stays asyncio."""
        loop = type("Loop", (), {"__module__": "asyncio.unix_events"})()
        reactor = type("AsyncioSelectorReactor", (), {"__module__": "twisted.internet.asyncioreactor"})()
        reactor._asyncioEventloop = loop
        self.assertEqual(reactorName(reactor), "asyncio")

    def test_epoll(self) -> None:
        reactor = type("EPollReactor", (), {"__module__": "twisted.internet.epollreactor"})()
        self.assertEqual(reactorName(reactor), "epoll")
