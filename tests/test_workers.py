"""
Tests for L{iocpsvc.workers}: the control channel, the parent's totals,
and real worker processes over real TCP (spread, a killed worker, SIGTERM,
broadcasts between workers).
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from iocpsvc import errors, workers
from iocpsvc.cluster import BROADCAST, TO_CONTEXT, firstContextId, packMessage
from iocpsvc.monitor.pool import PoolSource
from iocpsvc.tap import Options
from iocpsvc.workers.parent import _WorkerProcess
from tests.netutil import RawClient, connectRaw, echoMany, spawnTwistd, temporaryDirectory, waitUntil


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class ControlChannelTests(SynchronousTestCase):
    """The parent/worker control channel (length-prefixed JSON)."""

    def pair(self, handlersA: dict[str, Any], handlersB: dict[str, Any]) -> tuple[Any, Any]:
        a = workers.ControlChannel(handlersA)
        b = workers.ControlChannel(handlersB)
        a._write = b.dataReceived
        b._write = a.dataReceived
        return a, b

    def test_callAnswers(self) -> None:
        """A call fires with the handler's result from the other end."""
        a, _ = self.pair({}, {"stats": lambda m: {"online": m["x"] * 2}})
        answers: list[Any] = []
        a.call("stats", x=21).addCallback(answers.append)
        self.assertEqual(answers, [{"online": 42}])

    def test_deferredHandler(self) -> None:
        """A handler may answer later with a Deferred."""
        later: Deferred[Any] = Deferred()
        a, _ = self.pair({}, {"slow": lambda m: later})
        answers: list[Any] = []
        a.call("slow").addCallback(answers.append)
        self.assertEqual(answers, [])
        later.callback("done")
        self.assertEqual(answers, ["done"])

    def test_errorsAndUnknownOps(self) -> None:
        """A failing handler and an unknown op both fail the call."""

        def broken(message: dict[str, Any]) -> None:
            raise ValueError("nope")

        a, _ = self.pair({}, {"broken": broken})
        failures: list[Any] = []
        a.call("broken").addErrback(failures.append)
        a.call("missing").addErrback(failures.append)
        self.assertEqual(len(failures), 2)
        self.assertIn("nope", str(failures[0].value))
        self.assertIn("unknown op", str(failures[1].value))

    def test_sendHasNoAnswer(self) -> None:
        """A sent message reaches its handler; nothing comes back."""
        seen: list[Any] = []
        a, b = self.pair({}, {"bus": seen.append})
        a.send("bus", m="x")
        self.assertEqual(seen, [{"op": "bus", "m": "x"}])

    def test_splitAndCoalesced(self) -> None:
        """Messages split across reads and several in one read all arrive."""
        seen: list[Any] = []
        receiver = workers.ControlChannel({"n": seen.append})
        chunks: list[bytes] = []
        sender = workers.ControlChannel({}, chunks.append)
        for n in range(3):
            sender.send("n", n=n)
        wire = b"".join(chunks)
        for i in range(0, len(wire), 5):
            receiver.dataReceived(wire[i : i + 5])
        self.assertEqual([m["n"] for m in seen], [0, 1, 2])

    def test_lostFailsWaiting(self) -> None:
        """Calls waiting when the channel closes fail; later calls fail at once."""
        a = workers.ControlChannel({}, lambda data: None)
        failures: list[Any] = []
        a.call("stats").addErrback(failures.append)
        a.connectionLost()
        a.call("stats").addErrback(failures.append)
        self.assertEqual(len(failures), 2)

    def test_boundedUnread(self) -> None:
        """
        Past maxUnsent unread bytes, messages are dropped and counted and
        calls fail at once: a stopped peer makes nobody buffer without end.
        """
        written: list[bytes] = []
        unread = [0]
        channel = workers.ControlChannel({}, written.append, lambda: unread[0])
        self.assertTrue(channel.send("bus", m="a"))
        unread[0] = channel.maxUnsent + 1
        self.assertFalse(channel.send("bus", m="b"))
        failures: list[Any] = []
        channel.call("stats").addErrback(failures.append)
        self.assertEqual(len(written), 1)
        self.assertEqual(channel.droppedTotal, 2)
        self.assertIsInstance(failures[0].value, errors.ControlChannelFull)
        self.assertEqual(channel._waiting, {})

    def test_callTimeout(self) -> None:
        """A call not answered in time fails; its late answer is ignored."""
        from twisted.internet.defer import TimeoutError as DeferredTimeout
        from twisted.internet.task import Clock

        clock = Clock()
        a = workers.ControlChannel({}, lambda data: None)
        failures: list[Any] = []
        a.call("stats", timeout=2, clock=clock).addErrback(failures.append)
        clock.advance(2)
        self.assertIsInstance(failures[0].value, DeferredTimeout)
        self.assertEqual(a._waiting, {})
        a._handle({"reply": 1, "result": {"late": True}})  # nothing raises

    def test_typedErrors(self) -> None:
        """
        Each way a call gets no answer fails it with its own
        ControlChannelError: an error answered, closed, timed out, full.
        """
        from twisted.internet.task import Clock

        from iocpsvc import errors

        a, _ = self.pair({}, {})
        failures: list[Any] = []
        a.call("missing").addErrback(failures.append)
        clock = Clock()
        silent = workers.ControlChannel({}, lambda data: None)
        silent.call("stats", timeout=2, clock=clock).addErrback(failures.append)
        clock.advance(2)
        silent.call("stats").addErrback(failures.append)
        silent.connectionLost()
        silent.call("stats").addErrback(failures.append)
        full = workers.ControlChannel({}, lambda data: None, lambda: full.maxUnsent + 1)
        full.call("stats").addErrback(failures.append)
        self.assertEqual(
            [type(f.value) for f in failures],
            [
                errors.ControlCallFailed,
                errors.ControlCallTimeout,
                errors.ControlChannelClosed,
                errors.ControlChannelClosed,
                errors.ControlChannelFull,
            ],
        )
        self.assertTrue(all(isinstance(f.value, errors.ControlChannelError) for f in failures))
        self.assertEqual((failures[1].value.op, failures[1].value.timeout), ("stats", 2))

    def test_garbageFailsWaitingCalls(self) -> None:
        """Calls waiting when undecodable data closes the channel fail as BadControlMessage."""
        from iocpsvc.errors import BadControlMessage

        channel = workers.ControlChannel({})
        transport = StringTransport()
        channel.makeConnection(transport)
        failures: list[Any] = []
        channel.call("stats").addErrback(failures.append)
        channel.dataReceived(b"\x00\x00\x00\x03{{{")
        channel.connectionLost()
        channel.call("stats").addErrback(failures.append)
        self.assertEqual([type(f.value) for f in failures], [BadControlMessage, BadControlMessage])
        self.assertIn("undecodable", str(failures[0].value))

    def test_garbageClosesChannel(self) -> None:
        """Undecodable control data closes the channel instead of raising."""
        channel = workers.ControlChannel({})
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"\x00\x00\x00\x03{{{")
        self.assertTrue(transport.disconnecting)


class _FakeWorker:
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
        self.sent: list[Any] = []
        self.signals: list[str] = []
        self.unresponsiveSince: float | None = None
        self.relayDropped = 0
        self.control = self

    def call(self, op: str, timeout: float | None = None, clock: Any = None, **fields: Any) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        if self.answers:
            answer.callback({"online": 0})
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


class PoolFiguresTests(SynchronousTestCase):
    """The parent's totals over its workers, and its relay of bus messages."""

    def pool(self) -> workers.WorkerPoolService:
        from twisted.internet.task import Clock

        return workers.WorkerPoolService(["tcp:0"], [], 2, reactor=Clock(), nodeIdBase=10)

    def test_totalsAndRows(self) -> None:
        """Counters and gauges add up over workers; each worker has a row."""
        pool = self.pool()
        pool.workers = {1: _FakeWorker(1, 10), 2: _FakeWorker(2, 11)}  # type: ignore[dict-item]
        pool.snapshots = {
            1: {"online": 3, "accepted_total": 5, "closed_total": {"peer": 2}, "received_frames_total": 7},
            2: {"online": 4, "accepted_total": 6, "closed_total": {"peer": 1, "idle": 1}},
        }
        stats = PoolSource(pool).collect()
        self.assertEqual(stats["online"], 7)
        self.assertEqual(stats["accepted_total"], 11)
        self.assertEqual(stats["closed_total"], {"peer": 3, "idle": 1})
        self.assertEqual(stats["received_frames_total"], 7)
        self.assertEqual(stats["peak_online"], 7)
        self.assertEqual([row["online"] for row in stats["workers"]], [3, 4])
        self.assertEqual([row["node_id"] for row in stats["workers"]], [10, 11])

    def test_deadWorkersCountersStay(self) -> None:
        """A dead worker's counters stay in the totals: they never go back."""
        from twisted.python.failure import Failure

        pool = self.pool()
        worker = _FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        pool.snapshots = {1: {"online": 3, "accepted_total": 5, "closed_total": {"peer": 2}}}
        pool._stopping = True  # no restart in this test
        pool.workerEnded(worker, Failure(RuntimeError("gone")))  # type: ignore[arg-type]
        stats = PoolSource(pool).collect()
        self.assertEqual(stats["accepted_total"], 5)
        self.assertEqual(stats["online"], 0)
        self.assertEqual(stats["closed_total"], {"peer": 2})

    def test_metrics(self) -> None:
        """/metrics of the parent: the totals, plus one series per worker."""
        from prometheus_client.parser import text_string_to_metric_families

        from iocpsvc.monitor.prometheus import metricsText

        pool = self.pool()
        pool.workers = {1: _FakeWorker(1, 10), 2: _FakeWorker(2, 11)}  # type: ignore[dict-item]
        pool.snapshots = {1: {"online": 3, "accepted_total": 5}, 2: {"online": 4, "accepted_total": 6}}
        pool.restartsTotal = 2
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(metricsText(PoolSource(pool).collect).decode())
            for sample in family.samples
        }
        self.assertEqual(samples[("iocpsvc_connections_online", ())], 7)
        self.assertEqual(samples[("iocpsvc_worker_connections_online", (("worker", "1"),))], 3)
        self.assertEqual(samples[("iocpsvc_worker_connections_accepted_total", (("worker", "2"),))], 6)
        self.assertEqual(samples[("iocpsvc_worker_up", (("worker", "2"),))], 1)
        self.assertEqual(samples[("iocpsvc_worker_restarts_total", ())], 2)
        self.assertEqual(samples[("iocpsvc_worker_responsive", (("worker", "1"),))], 1)
        self.assertEqual(samples[("iocpsvc_worker_relay_dropped_total", ())], 0)

    def test_clusterFigures(self) -> None:
        """The workers' cluster figures add up; 'connected' only when every worker's bus is."""
        pool = self.pool()
        pool.workers = {1: _FakeWorker(1, 10), 2: _FakeWorker(2, 11)}  # type: ignore[dict-item]
        pool.snapshots = {
            1: {"cluster": {"connected": True, "published_total": 3, "dropped_total": 1, "node_id": 10}},
            2: {"cluster": {"connected": False, "published_total": 4, "dropped_total": 0, "node_id": 11}},
        }
        stats = PoolSource(pool).collect()
        self.assertEqual(stats["cluster"]["published_total"], 7)
        self.assertEqual(stats["cluster"]["dropped_total"], 1)
        self.assertEqual((stats["cluster"]["connected"], stats["cluster"]["connected_workers"]), (False, 1))
        self.assertEqual([row["cluster_connected"] for row in stats["workers"]], [True, False])

    def test_relayOfTheWorkersIsNotACluster(self) -> None:
        """Without --cluster, the workers' relay bus does not show as a cluster."""
        pool = self.pool()
        pool.workers = {1: _FakeWorker(1, 10)}  # type: ignore[dict-item]
        pool.snapshots = {1: {"cluster": {"kind": "workers", "connected": True, "published_total": 3}}}
        self.assertNotIn("cluster", PoolSource(pool).collect())

    def test_clusterClaimsAndPending(self) -> None:
        """Node-id claims and pending bytes reach totals and rows; a silent worker is not connected."""
        pool = self.pool()
        one, two = _FakeWorker(1, 10), _FakeWorker(2, 11)
        two.responsive = False
        pool.workers = {1: one, 2: two}  # type: ignore[dict-item]
        pool.snapshots = {
            1: {"cluster": {"connected": True, "node_id_claimed": False, "pending_bytes": 10}},
            2: {"cluster": {"connected": True, "node_id_claimed": True, "pending_bytes": 5}},
        }
        cluster = PoolSource(pool).collect()["cluster"]
        self.assertEqual((cluster["connected"], cluster["connected_workers"]), (False, 1))
        self.assertEqual((cluster["node_id_claimed"], cluster["node_ids_claimed"]), (False, 0))
        self.assertEqual(cluster["pending_bytes"], 15)
        rows = PoolSource(pool).collect()["workers"]
        self.assertEqual([r["cluster_node_id_claimed"] for r in rows], [False, True])
        self.assertEqual([r["cluster_pending_bytes"] for r in rows], [10, 5])

    def test_silentWorkerKilled(self) -> None:
        """
        A worker that stops answering is marked unresponsive after
        answerTimeout, and killed after unresponsiveTimeout (so that its
        replacement serves its slot's queue); one that answers is left alone.
        """
        pool = self.pool()
        clock = pool.reactor
        silent, fine = _FakeWorker(1, 10), _FakeWorker(2, 11)
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

    def test_relayDropWarnings(self) -> None:
        """Drops for a worker not reading: one warning, then a reminder at most once a minute."""
        import base64

        from twisted.logger import globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        pool = self.pool()
        sender, stuck = _FakeWorker(1, 10), _FakeWorker(2, 11, reading=False)
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

        pool = self.pool()
        one, stuck, three = _FakeWorker(1, 10), _FakeWorker(2, 11, reading=False), _FakeWorker(3, 12)
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
        pool = workers.WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 1, reactor=clock)
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
        worker = _WorkerProcess(self.pool(), 2, 11)
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
        worker = _WorkerProcess(self.pool(), 1, 10)
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
        pool = workers.WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 1, reactor=clock)
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

        pool = self.pool()
        one, two, three = _FakeWorker(1, 10), _FakeWorker(2, 11), _FakeWorker(3, 12)
        pool.workers = {1: one, 2: two, 3: three}  # type: ignore[dict-item]
        message = base64.b64encode(packMessage(BROADCAST, 10, 0, b"hi")).decode()
        pool._relay(one, {"m": message})  # type: ignore[arg-type]
        self.assertEqual((len(one.sent), len(two.sent), len(three.sent)), (0, 1, 1))
        direct = base64.b64encode(packMessage(TO_CONTEXT, 10, firstContextId(12), b"hi")).decode()
        pool._relay(one, {"m": direct})  # type: ignore[arg-type]
        self.assertEqual((len(two.sent), len(three.sent)), (1, 2))
        pool._relay(one, {"m": "not base64 at all!"})  # type: ignore[arg-type]
        self.assertEqual((len(two.sent), len(three.sent)), (1, 2))


class AvailableCoresTests(SynchronousTestCase):
    """How many cores --workers auto counts."""

    def fakeRoot(self, files: dict[str, str]) -> str:
        root = temporaryDirectory(self)
        for name, text in files.items():
            path = os.path.join(root, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        return root

    def affinity(self) -> int:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

    def test_noQuota(self) -> None:
        """Without a cgroup quota: the CPU affinity."""
        root = self.fakeRoot({"proc/self/cgroup": "0::/system.slice/x.service\n"})
        self.assertEqual(workers.availableCores(root), self.affinity())

    def test_cgroupV2QuotaOfAnAncestor(self) -> None:
        """cgroup v2: a quota of 0.5 cores on the parent cgroup gives 1."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "0::/system.slice/x.service\n",
                "sys/fs/cgroup/system.slice/x.service/cpu.max": "max 100000\n",
                "sys/fs/cgroup/system.slice/cpu.max": "50000 100000\n",
            }
        )
        self.assertEqual(workers.availableCores(root), 1)

    def test_cgroupV1Quota(self) -> None:
        """cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us, rounded up, at most the affinity."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            }
        )
        self.assertEqual(workers.availableCores(root), min(2, self.affinity()))

    def test_unlimitedV1(self) -> None:
        """cgroup v1 quota -1 means no limit."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "4:cpu,cpuacct:/\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            }
        )
        self.assertEqual(workers.availableCores(root), self.affinity())


class ListeningSocketsTests(SynchronousTestCase):
    """The parent's listening sockets."""

    def test_slotSockets(self) -> None:
        """reuseport: one listening socket per worker slot, all on the same port."""
        import socket as socketModule

        pool = workers.WorkerPoolService(
            ["tcp:0:interface=127.0.0.1"], [], 3, reactor=reactor, mode="reuseport"
        )
        pool._openSockets()
        assert pool._opener is not None
        self.addCleanup(pool._opener.close)
        slots = pool._opener.listeners[0]
        self.assertEqual(len({id(s) for s in slots}), 3)
        self.assertEqual(len({s.getsockname() for s in slots}), 1)
        for sock in slots:
            self.assertEqual(sock.getsockopt(socketModule.SOL_SOCKET, socketModule.SO_ACCEPTCONN), 1)

    def test_sharedSocket(self) -> None:
        """shared: every slot gets the same listening socket."""
        pool = workers.WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 3, reactor=reactor, mode="shared")
        pool._openSockets()
        assert pool._opener is not None
        self.addCleanup(pool._opener.close)
        self.assertEqual(len({id(s) for s in pool._opener.listeners[0]}), 1)

    def test_takenPortFails(self) -> None:
        """
        A port another process listens on fails at start, in both modes,
        even when that listener allows SO_REUSEPORT (a second server must
        not silently take half the connections).
        """
        import socket as socketModule

        from twisted.internet.error import CannotListenError

        other = socketModule.socket()
        self.addCleanup(other.close)
        other.setsockopt(socketModule.SOL_SOCKET, socketModule.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen(5)
        port = other.getsockname()[1]
        for mode in workers.MODES:
            pool = workers.WorkerPoolService(
                [f"tcp:{port}:interface=127.0.0.1"], [], 2, reactor=reactor, mode=mode
            )
            self.assertRaises(CannotListenError, pool._openSockets)

    if not hasattr(__import__("socket"), "SO_REUSEPORT"):
        skip = "no SO_REUSEPORT here"


class OptionsTests(SynchronousTestCase):
    """The worker options."""

    def test_auto(self) -> None:
        """--workers auto is the number of cores this process may use."""
        options = Options()
        options.parseOptions(["--workers", "auto"])
        self.assertEqual(options["workerCount"], workers.availableCores())

    def test_workerTimeout(self) -> None:
        """--worker-timeout: 30 s unless given; 0 turns the watchdog off."""
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["workerTimeout"], 30)
        options = Options()
        options.parseOptions(["--worker-timeout", "0"])
        self.assertEqual(options["workerTimeout"], 0)

    def test_badValues(self) -> None:
        """Bad counts, modes and listeners that cannot be shared are usage errors."""
        from twisted.python.usage import UsageError

        for args in (
            ["--workers", "0"],
            ["--workers", "two"],
            ["--workers", "2", "--worker-sockets", "magic"],
            ["--workers", "2", "--port", "unix:/tmp/iocpsvc-test.sock"],
        ):
            self.assertRaises(UsageError, Options().parseOptions, args)

    def test_unavailable(self) -> None:
        """A reactor that cannot adopt sockets (as IOCP's) is named as the reason to run one process."""
        from twisted.internet.task import Clock

        why = workers.workersAvailable(Clock())
        self.assertIsNotNone(why)
        if os.name == "posix":
            self.assertIn("cannot adopt listening sockets", str(why))

    def test_oneProcessWhereUnavailable(self) -> None:
        """--workers 2 on such a reactor builds the one-process server, with a warning."""
        from twisted.logger import globalLogPublisher

        from iocpsvc import tap
        from iocpsvc.service import SocketServerService

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.patch(
            workers, "workersAvailable", lambda reactor: "the IOCPReactor cannot adopt listening sockets"
        )
        options = Options()
        options.parseOptions(["--workers", "2", "--port", "tcp:0:interface=127.0.0.1", "--monitor", "none"])
        service = tap.makeService(options)
        self.assertIsInstance(service, SocketServerService)
        self.assertTrue(any("running one process" in str(e.get("log_format", "")) for e in events))

    def test_workerOf(self) -> None:
        """The parent's --worker-of value parses into index, node id and socket modes."""
        self.assertEqual(
            workers.parseWorkerOf("2:11:reuseport:128,shared:0"), (2, 11, ["reuseport:128", "shared:0"])
        )


_NO_WORKERS = workers.workersAvailable(reactor)


class WorkerProcessTests(TestCase):
    """Real worker processes over real TCP on 127.0.0.1."""

    timeout = 90
    if _NO_WORKERS is not None:
        skip = _NO_WORKERS

    MONITOR = re.compile(rb"monitor on http://127\.0\.0\.1:(\d+)/")
    READY = re.compile(rb"listening on tcp:127\.0\.0\.1:\d+ with \d+ worker processes")

    @inlineCallbacks
    def startServer(self, *args: str) -> Any:
        workdir = temporaryDirectory(self)
        process, transport = spawnTwistd(
            reactor,
            workdir,
            "iocpsvc",
            "--port",
            "tcp:0:interface=127.0.0.1",
            "--monitor",
            "tcp:0:interface=127.0.0.1",
            "--shutdown-timeout",
            "2",
            *args,
        )
        self.addCleanup(self.stopServer, process, transport)
        port = yield process.listening
        # Workers log their own "listening on" lines; the parent's comes
        # once every worker accepts.
        yield waitUntil(reactor, lambda: self.READY.search(bytes(process.output)) is not None)
        yield waitUntil(reactor, lambda: self.MONITOR.search(bytes(process.output)) is not None)
        match = self.MONITOR.search(bytes(process.output))
        assert match is not None
        self.process = process
        self.transport = transport
        self.monitor = f"http://127.0.0.1:{int(match.group(1))}/"
        return port

    STARTED = re.compile(rb"worker \d+ started \(pid (\d+)\)")

    @inlineCallbacks
    def stopServer(self, process: Any, transport: Any) -> Any:
        pids = [int(pid) for pid in self.STARTED.findall(bytes(process.output))]
        if not process.ended.called:
            transport.signalProcess("KILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        yield process.ended
        # Every worker this test started is gone before the next test.
        yield waitUntil(reactor, lambda: not any(_running(pid) for pid in pids), timeout=10)

    @inlineCallbacks
    def stats(self) -> Any:
        response = yield Agent(reactor).request(b"GET", (self.monitor + "stats.json").encode())
        body = yield readBody(response)
        return json.loads(body)

    @inlineCallbacks
    def waitForStats(self, condition: Any, timeout: float = 30) -> Any:
        latest: dict[str, Any] = {}

        @inlineCallbacks
        def poll() -> Any:
            latest.update((yield self.stats()))

        started = reactor.seconds()
        while True:
            yield poll()
            if condition(latest):
                return latest
            if reactor.seconds() - started > timeout:
                raise AssertionError(f"stats never matched: {latest}")
            yield deferLater(reactor, 0.2, lambda: None)

    @inlineCallbacks
    def test_spreadKillAndStop(self) -> Any:
        """
        Connections are spread over two workers; killing one loses only its
        connections and it is replaced; SIGTERM stops everything within the
        shutdown timeout.
        """
        port = yield self.startServer("--workers", "2")
        clients = yield connectRaw(reactor, port, 60)
        self.assertEqual(len(clients), 60)
        for n, client in enumerate(clients):
            client.transport.write(frame(b"hello %d" % n))
        yield waitUntil(reactor, lambda: all(len(c.received) >= 11 for c in clients))
        stats = yield self.waitForStats(lambda s: s.get("online") == 60)
        rows = stats["workers"]
        self.assertEqual(len(rows), 2)
        self.workerPids = [row["pid"] for row in rows]
        self.assertTrue(all(row["online"] > 0 for row in rows), rows)

        victim = rows[0]
        os.kill(victim["pid"], signal.SIGKILL)
        yield waitUntil(reactor, lambda: sum(c.lost.called for c in clients) == victim["online"])
        survivors = [c for c in clients if not c.lost.called]
        self.assertEqual(len(survivors), 60 - victim["online"])
        for client in survivors:
            client.received.clear()
            client.transport.write(frame(b"still here"))
        yield waitUntil(reactor, lambda: all(bytes(c.received) == frame(b"still here") for c in survivors))

        stats = yield self.waitForStats(
            lambda s: (
                s.get("worker_restarts_total") == 1
                and all(row["alive"] and row["uptime_seconds"] > 0 for row in s["workers"])
            )
        )
        replaced = [row for row in stats["workers"] if row["worker"] == victim["worker"]][0]
        self.assertNotEqual(replaced["pid"], victim["pid"])
        self.workerPids = [row["pid"] for row in stats["workers"]]
        self.assertGreaterEqual(stats["accepted_total"], 60)
        results = yield echoMany(reactor, port, [frame(b"again %d" % n) for n in range(20)])
        self.assertEqual(results, [frame(b"again %d" % n) for n in range(20)])

        started = reactor.seconds()
        self.transport.signalProcess("TERM")
        yield self.process.ended
        # Stopped gracefully, within the shutdown timeout (2 s), not by the kill after it.
        self.assertLess(reactor.seconds() - started, 2 + 1.5)
        self.assertNotIn(b"did not stop in time", bytes(self.process.output))
        for pid in self.workerPids:
            self.assertFalse(_running(pid), f"worker {pid} still running")
        for client in survivors:
            yield client.lost
        self.assertNotIn(b"Traceback", bytes(self.process.output))

    @inlineCallbacks
    def test_stoppedWorkerDoesNotFreezeTheMonitor(self) -> Any:
        """
        A worker that stops answering (SIGSTOP) is marked unresponsive; the
        monitor keeps counting the other one, and /connections.json answers
        with what it has, naming the silent worker.
        """
        port = yield self.startServer("--workers", "2")
        stats = yield self.waitForStats(lambda s: len(s.get("workers", [])) == 2)
        stopped, running = stats["workers"]
        os.kill(stopped["pid"], signal.SIGSTOP)
        self.addCleanup(os.kill, stopped["pid"], signal.SIGCONT)
        stats = yield self.waitForStats(
            lambda s: [row["responsive"] for row in s["workers"]] == [False, True]
        )
        before = stats["accepted_total"]
        # Connections that land on the running worker are counted meanwhile.
        clients = yield connectRaw(reactor, port, 20)
        for client in clients:
            client.transport.write(frame(b"ping"))
        yield self.waitForStats(lambda s: s["accepted_total"] > before)
        started = reactor.seconds()
        response = yield Agent(reactor).request(b"GET", (self.monitor + "connections.json").encode())
        listing = json.loads((yield readBody(response)))
        self.assertLess(reactor.seconds() - started, workers.WorkerPoolService.answerTimeout + 2)
        self.assertEqual(listing["unanswered"], [stopped["worker"]])
        os.kill(stopped["pid"], signal.SIGCONT)
        yield self.waitForStats(lambda s: all(row["responsive"] for row in s["workers"]))
        for client in clients:
            client.transport.loseConnection()
        for client in clients:
            yield client.lost

    @inlineCallbacks
    def test_sharedSocket(self) -> Any:
        """With --worker-sockets shared, the workers accept from one socket and echo."""
        port = yield self.startServer("--workers", "2", "--worker-sockets", "shared")
        wires = [frame(b"x" * n) for n in range(1, 41)]
        results = yield echoMany(reactor, port, wires)
        self.assertEqual(results, wires)
        stats = yield self.waitForStats(lambda s: s.get("accepted_total") == 40)
        self.assertEqual(len(stats["workers"]), 2)

    @inlineCallbacks
    def test_chatAcrossWorkers(self) -> Any:
        """
        Without --cluster, a chat line reaches clients on the other worker
        (the parent passes broadcasts on).
        """
        port = yield self.startServer("--workers", "2", "--context", "chat")
        clients: list[RawClient] = []
        for _ in range(40):
            clients.extend((yield connectRaw(reactor, port, 1)))
            # The parent's figures are up to a second old: wait for this one.
            stats = yield self.waitForStats(lambda s: s["online"] == len(clients))
            if all(row["online"] > 0 for row in stats["workers"]):
                break
        else:
            self.fail("40 connections all went to one worker")
        yield self.waitForStats(lambda s: s["online"] == len(clients))
        response = yield Agent(reactor).request(
            b"GET", (self.monitor + "connections.json?limit=1000").encode()
        )
        listing = json.loads((yield readBody(response)))
        self.assertEqual(listing["online"], len(clients))
        self.assertEqual({row["worker"] for row in listing["connections"]}, {1, 2})
        self.assertEqual(len({row["id"] for row in listing["connections"]}), len(clients))
        for client in clients:
            client.received.clear()
        clients[0].transport.write(b"hello everyone\n")
        yield waitUntil(reactor, lambda: all(b"hello everyone\n" in c.received for c in clients))
        for client in clients:
            client.transport.loseConnection()
        for client in clients:
            yield client.lost


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie is not running; it waits for its parent to reap it.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


_SYSTEMD_EXEC = """
import os, sys
# What systemd does before starting a socket-activated service: the socket
# is fd 3, and LISTEN_PID names the process that may take it.
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_FDNAMES"] = "iocpsvc"  # systemd 227+ names each socket
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1], *sys.argv[2:]])
"""


class SocketActivationTests(TestCase):
    """C{systemd:} endpoints (socket activation), alone and shared by workers."""

    timeout = 60
    if _NO_WORKERS is not None:
        skip = _NO_WORKERS

    @inlineCallbacks
    def serve(self, *args: str) -> Any:
        import socket as socketModule
        import sys

        from tests.netutil import REPO, TWISTD, TwistdProcess

        listener = socketModule.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        process = TwistdProcess()
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = [
            sys.executable,
            "-c",
            _SYSTEMD_EXEC,
            TWISTD,
            "-n",
            "--pidfile=",
            "iocpsvc",
            "--port",
            "systemd:domain=INET:index=0",
            "--monitor",
            "none",
            "--shutdown-timeout",
            "2",
            *args,
        ]
        transport = reactor.spawnProcess(
            process,
            sys.executable,
            argv,
            env=env,
            path=temporaryDirectory(self),
            childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()},
        )

        def stop() -> Any:
            if not process.ended.called:
                transport.signalProcess("TERM")
            return process.ended

        self.addCleanup(stop)
        ready = b"worker processes" if "--workers" in args else b"iocpsvc listening on"
        yield waitUntil(reactor, lambda: ready in process.output)
        wires = [frame(b"activated %d" % n) for n in range(30)]
        results = yield echoMany(reactor, port, wires)
        self.assertEqual(results, wires)
        transport.signalProcess("TERM")
        yield process.ended
        self.assertNotIn(b"Traceback", bytes(process.output))

    def test_single(self) -> Any:
        """One process serves the socket systemd handed over."""
        return self.serve()

    def test_workers(self) -> Any:
        """Two workers share the socket systemd handed over to their parent."""
        return self.serve("--workers", "2")
