"""
Tests for L{iocpsvc.workers} as a whole: the worker options of
L{iocpsvc.tap}, and real worker processes over real TCP (spread, a killed
worker, SIGTERM, broadcasts between workers, sockets from systemd).  Each
module of the package has its own tests (C{test_workers_*.py}, and
C{test_monitor_pool.py} for the monitor's view of the pool).
"""

from __future__ import annotations

import json
import os
import re
import signal
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from iocpsvc import workers
from tests.netutil import (
    RawClient,
    connectRaw,
    echoMany,
    spawnTwistd,
    temporaryDirectory,
    twistdReactorName,
    waitUntil,
)


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


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
    def test_statsAgreeWithConnections(self) -> Any:
        """
        /stats.json asked right after /connections.json counts the
        connections the listing shows (not the last poll's figures), and
        says what is running: two workers on the port listened on.
        """
        port = yield self.startServer("--workers", "2")
        stats = yield self.waitForStats(
            lambda s: [row["state"] for row in s.get("workers", [])] == ["serving", "serving"]
        )
        self.assertEqual(stats["online"], 0)
        self.assertEqual(stats["server"]["workers"]["count"], 2)
        self.assertEqual(stats["server"]["listeners"], [f"tcp:127.0.0.1:{port}"])
        clients = yield connectRaw(reactor, port, 7)
        for client in clients:
            client.transport.write(frame(b"ping"))
        yield waitUntil(reactor, lambda: all(len(c.received) == 8 for c in clients))
        response = yield Agent(reactor).request(b"GET", (self.monitor + "connections.json").encode())
        listing = json.loads((yield readBody(response)))
        stats = yield self.stats()
        self.assertEqual((listing["online"], len(listing["connections"])), (7, 7))
        self.assertEqual(stats["online"], 7)
        self.assertEqual(sum(row["online"] for row in stats["workers"]), 7)
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
            *([f"--reactor={name}"] if (name := twistdReactorName(reactor)) else []),
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
