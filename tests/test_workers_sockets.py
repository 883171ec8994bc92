"""
Tests for L{iocpsvc.workers.sockets}: the parent's listening sockets, one
per worker slot (C{reuseport}) or one for all (C{shared}).
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.workers.parent import WorkerPoolService
from iocpsvc.workers.sockets import MODES


class ListeningSocketsTests(SynchronousTestCase):
    """The parent's listening sockets."""

    def test_slotSockets(self) -> None:
        """reuseport: one listening socket per worker slot, all on the same port."""
        import socket as socketModule

        pool = WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 3, reactor=reactor, mode="reuseport")
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
        pool = WorkerPoolService(["tcp:0:interface=127.0.0.1"], [], 3, reactor=reactor, mode="shared")
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
        for mode in MODES:
            pool = WorkerPoolService([f"tcp:{port}:interface=127.0.0.1"], [], 2, reactor=reactor, mode=mode)
            self.assertRaises(CannotListenError, pool._openSockets)

    if not hasattr(__import__("socket"), "SO_REUSEPORT"):
        skip = "no SO_REUSEPORT here"
