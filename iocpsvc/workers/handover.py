"""
What a parent hands each of its worker processes, in one place so that
the two sides cannot disagree: the descriptors a worker inherits, the
C{--worker-of} argument that tells it who it is and what it inherited,
and the name the parent's relay goes by in the worker's figures.

The descriptors::

    fd 0      unused (a pipe)          fd 3   control, parent -> worker
    fd 1, 2   its log, read by the     fd 4   control, worker -> parent
              parent and re-logged     fd 5.. the listening sockets, in
              as "worker N: ..."              --port order

The argument, C{--worker-of INDEX:NODE:SOCKETS}, is added by the parent
to the worker's command line (otherwise the parent's own)::

    --worker-of 2:11:reuseport:128,shared:0
                | |  |              |
                | |  |              `-- fd 6: shared with every worker
                | |  |                  (a socket from systemd: backlog 0,
                | |  |                  it was listening already)
                | |  `-- fd 5: this slot's own SO_REUSEPORT socket,
                | |      opened with a backlog of 128
                | `-- the worker's node id (the high part of its context ids)
                `-- the worker's slot, 1 to N

SOCKETS has one C{MODE:BACKLOG} entry per inherited listening socket, in
C{--port} order, as the parent opened it (L{iocpsvc.workers.sockets}).
The argument is one of the configuration's fields: it is written and read
by L{iocpsvc.config.workerOfArgument} and L{iocpsvc.config.parseWorkerOf}.  The
worker only counts them: it adopts each socket as it is
(L{iocpsvc.workers.child.SocketAdoptingReactor}).
"""

from __future__ import annotations

CONTROL_IN = 3
"""A worker's descriptor of the control channel's parent-to-worker pipe."""
CONTROL_OUT = 4
"""A worker's descriptor of the control channel's worker-to-parent pipe."""
FIRST_LISTENER = 5
"""A worker's descriptor of the first inherited listening socket; the others follow."""


RELAY_BUS_KIND = "workers"
"""
The C{kind} in the figures of a worker's L{iocpsvc.workers.child.ParentBus}:
the parent's relay between its workers, which is not counted as a cluster.
"""
