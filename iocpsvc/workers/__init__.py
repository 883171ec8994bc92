"""
Worker processes: one set of listening sockets, N processes serving them,
so that a server uses every core of its machine.

::

    twistd iocpsvc --workers N          (the parent: parent.py)
      | opens the listening sockets (once: a taken port fails at start)
      | serves the one monitor: totals over the workers + per-worker rows
      | restarts a worker that dies; on SIGTERM stops them all gracefully
      | relays broadcasts and sendTo between workers (without --cluster)
      |
      |   control channel (channel.py): fds 3 and 4 of each worker
      |
      +-- worker 1: twistd iocpsvc ... --worker-of 1:NODE:SOCKETS
      +-- worker 2: ...                 each accepts and serves connections
                                        (child.py)

A worker runs the parent's own command line plus C{--worker-of
INDEX:NODE:SOCKETS}: its slot, its node id, and one C{MODE:BACKLOG}
entry per listening socket it inherits (L{iocpsvc.workers.handover} has
the descriptors and the format).  The workers adopt the sockets they are
given (Twisted's C{adoptStreamPort}) and open nothing themselves; how they
share them (C{--worker-sockets reuseport} or C{shared}) is in
L{iocpsvc.workers.sockets}.

The modules, one role each:

  - L{iocpsvc.machine} (outside this package): how many cores C{--workers auto} counts;
  - L{handover}: what a worker inherits, and its C{--worker-of} argument;
  - L{channel}: the control channel (length-prefixed JSON over the pipes);
  - L{sockets}: the parent's listening sockets;
  - L{parent}: the pool of worker processes (L{WorkerPoolService});
  - L{logrelay}: a worker's log lines, logged again by the parent;
  - L{child}: what runs in a worker.

The monitor reads the pool through L{iocpsvc.interfaces.IWorkerPool}
(L{iocpsvc.monitor.pool}), and a worker answers its parent from the
figures C{tap.py} gives it: nothing here imports the monitor.
"""

from iocpsvc.workers.channel import ControlChannel
from iocpsvc.workers.child import ParentBus, SocketAdoptingReactor, WorkerControlService, adoptedEndpoint
from iocpsvc.workers.parent import WorkerPoolService, workersAvailable
from iocpsvc.workers.sockets import MODES, REUSEPORT, SHARED, defaultMode

__all__ = [
    "MODES",
    "REUSEPORT",
    "SHARED",
    "ControlChannel",
    "ParentBus",
    "SocketAdoptingReactor",
    "WorkerControlService",
    "WorkerPoolService",
    "adoptedEndpoint",
    "defaultMode",
    "workersAvailable",
]
