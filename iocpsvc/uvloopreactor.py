"""
The C{uvloop} reactor: Twisted's asyncio reactor on uvloop's event loop
(libuv), installed by C{twistd -r uvloop ...} through the reactor plugin in
C{twisted/plugins/iocpsvc_reactors.py}.

uvloop is an optional extra (C{pip install 'iocpsvc[uvloop]'}; not on
Windows, where Twisted's IOCP reactor is the completion-port centre).
Asking for this reactor without it fails at start with one line (twistd
reports the C{ImportError} as a usage error).

One obstacle, worked around here: child processes.  Twisted learns that a
child exited from C{SIGCHLD}, through the signal wake-up descriptor it
sets; uvloop, when its loop starts running, sets that descriptor to its
own and ignores C{SIGCHLD} there (it refuses handlers for it, keeping it
for its own subprocesses).  A child whose pipes close before it has
exited (so that Twisted's reap at the pipes' close finds it still
running) was then never reaped: its C{processEnded} never came -- a
worker process the parent would not see die, a test's process never
stopped.  L{UvloopReactor} installs a C{SIGCHLD} handler, after
Twisted's own, that has the reactor reap its children on its next turn.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from twisted.internet.asyncioreactor import AsyncioSelectorReactor


class UvloopReactor(AsyncioSelectorReactor):
    """
    Twisted's asyncio reactor on a uvloop event loop, with child processes
    reaped on C{SIGCHLD} (see the module docstring).
    """

    def startRunning(self, installSignalHandlers: bool = True) -> None:
        super().startRunning(installSignalHandlers=installSignalHandlers)
        sigchld = getattr(signal, "SIGCHLD", None)
        if installSignalHandlers and sigchld is not None and signal.getsignal(sigchld) != signal.SIG_DFL:
            # Twisted installed its (empty) handler: one that asks for a reap
            # instead.  Twisted puts its own back when the reactor stops.
            signal.signal(sigchld, self._childSignal)
            signal.siginterrupt(sigchld, False)
            # Children that exited while no handler was there (between runs).
            self.callFromThread(_reapChildren)

    def _childSignal(self, signum: int, frame: Any) -> None:
        # A signal handler: only hand the work to the reactor's next turn.
        self.callFromThread(_reapChildren)


def _reapChildren() -> None:
    from twisted.internet import process

    process.reapAllProcesses()


def install() -> None:
    """
    Make a uvloop event loop the current one and install Twisted's asyncio
    reactor on it (L{UvloopReactor}).

    @raise ImportError: uvloop is not installed.
    """
    try:
        import uvloop
    except ImportError:
        raise ImportError(
            "the uvloop reactor needs uvloop: pip install 'iocpsvc[uvloop]' (not available on Windows)"
        ) from None
    from twisted.internet.main import installReactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    installReactor(UvloopReactor(loop))
