"""
The data monitor (DIOCP's TIocpDataMonitor): a server's figures over HTTP
(the dashboard, C{/stats.json}, C{/metrics}, C{/connections.json}) and in a
summary line in the log::

    stats.py       the figures: a factory's snapshot, rates, connections
    prometheus.py  the figures as Prometheus metrics
    pool.py        the figures of the parent of worker processes
    site.py        the hardened HTTP server (cap, deadline, rate, no bodies)
    about.py       what is running (version, listeners, codec, limits, ...)
    web.py         the HTTP resources and L{MonitorService}

C{twisted.web} is imported only by a process that serves the monitor: the
names of C{web.py} and C{site.py} are loaded from this package on first use
(C{from iocpsvc.monitor import MonitorService}), not by importing it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MonitorService": "web",
    "makeSite": "web",
    "DEFAULT_MONITOR": "web",
    "MonitorRoot": "web",
    "StatsResource": "web",
    "MetricsResource": "web",
    "ConnectionsResource": "web",
    "HistoryResource": "web",
    "DashboardResource": "web",
    "AboutResource": "web",
    "ServerDescription": "about",
    "MonitorLimits": "site",
    "MonitorSite": "site",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
