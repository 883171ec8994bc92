"""
What this machine lets a server use: its open files (L{raiseOpenFilesLimit},
which the default connection limit is derived from) and its cores
(L{availableCores}, which C{--workers auto} starts that many workers for:
the CPU affinity, capped by the CPU quota of the process's own cgroup, a
container's or a systemd unit's C{CPUQuota=}, read from C{/proc} and
C{/sys}).
"""

from __future__ import annotations

import math
import os
from typing import Any


def availableCores(root: str = "/") -> int:
    """
    The cores this process may use: its CPU affinity, and the CPU quota of
    its own cgroup if one is set (a container's, or a systemd unit's
    C{CPUQuota=}; cgroup v2 C{cpu.max} or v1 C{cpu.cfs_quota_us}), not the
    machine's count.

    @param root: where C{/proc} and C{/sys} are (for tests).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = _cgroupQuota(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroupQuota(root: str) -> float | None:
    """The CPU quota of this process's cgroup, in cores, or C{None}."""
    try:
        with open(os.path.join(root, "proc/self/cgroup")) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        path = path.lstrip("/")
        if controllers == "":
            # cgroup v2: "0::/path"; the limit may be on any ancestor.
            while True:
                try:
                    with open(os.path.join(root, "sys/fs/cgroup", path, "cpu.max")) as f:
                        limit, period = f.read().split()[:2]
                    if limit != "max":
                        return int(limit) / int(period)
                except (OSError, ValueError):
                    pass
                if not path:
                    return None
                path = os.path.dirname(path)
        if "cpu" in controllers.split(","):
            for mount in ("cpu,cpuacct", "cpu"):
                base = os.path.join(root, "sys/fs/cgroup", mount, path)
                try:
                    with open(os.path.join(base, "cpu.cfs_quota_us")) as f:
                        microseconds = int(f.read())
                    with open(os.path.join(base, "cpu.cfs_period_us")) as f:
                        every = int(f.read())
                except (OSError, ValueError):
                    continue
                return microseconds / every if microseconds > 0 and every > 0 else None
    return None


def raiseOpenFilesLimit() -> tuple[int, int] | None:
    """
    Raise this process's soft open-files limit to its hard limit (capped at
    1,048,576 when the hard limit is unlimited).

    @return: C{(before, after)} soft limits, or C{None} where the platform
        has no such limit (Windows).
    """
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft == resource.RLIM_INFINITY or soft >= target:
        return (soft, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return (soft, soft)
    return (soft, target)


def reactorOrGlobal(reactor: Any = None) -> Any:
    """
    C{reactor}, or Twisted's global reactor when it is C{None}: the
    C{reactor=None} convention of every class that takes one.  The global
    reactor is imported only here and only then, since importing it installs
    the default reactor, which must not happen before twistd has installed
    the chosen one.
    """
    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    return reactor
