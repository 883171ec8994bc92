"""
Tests for L{iocpsvc.monitor.about}: what is running, as C{/about.json},
the C{server} part of C{/stats.json} and C{iocpsvc_build_info} tell it,
and as the assembly (L{iocpsvc.assembly}) fills it in.
"""

from __future__ import annotations

import json
import os
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

import iocpsvc
import twisted
from iocpsvc import assembly
from iocpsvc.apps import ChatContext, EchoContext
from iocpsvc.codecs import parseCodecSpec
from iocpsvc.config import ServerConfig
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.limits import ServerLimits
from iocpsvc.monitor.about import ONE_PROCESS, ServerDescription
from iocpsvc.monitor.prometheus import metricsText
from iocpsvc.monitor.web import MonitorService


def config(**changes: Any) -> ServerConfig:
    fields: dict[str, Any] = {
        "ports": ("tcp:0:interface=127.0.0.1",),
        "contextClass": EchoContext,
        "codec": parseCodecSpec("line:max=4096"),
        "limits": ServerLimits(maxConnections=500, idleTimeout=30.0),
        "monitor": "tcp:0:interface=127.0.0.1",
    }
    fields.update(changes)
    return ServerConfig(**fields)


class ServerDescriptionTests(SynchronousTestCase):
    """The description itself."""

    def test_whatIsRunning(self) -> None:
        """Version, software, reactor, codec, context, limits and listeners as they are."""
        listening = [IPv4Address("TCP", "127.0.0.1", 4242)]
        about = ServerDescription(config(), config().limits, Clock(), lambda: listening)
        described = about.describe()
        self.assertEqual(described["version"], iocpsvc.__version__)
        self.assertEqual(described["twisted"], twisted.__version__)
        self.assertEqual(described["reactor"], "task")  # Clock's module: twisted.internet.task
        self.assertEqual(described["pid"], os.getpid())
        self.assertEqual((described["codec"], described["max_frame_length"]), ("line:max=4096", 4096))
        self.assertEqual(described["context"], "echo")
        self.assertEqual(described["ports"], ["tcp:0:interface=127.0.0.1"])
        self.assertEqual(described["listeners"], ["tcp:127.0.0.1:4242"])
        self.assertEqual(described["limits"]["max_connections"], 500)
        self.assertEqual(described["limits"]["idle_timeout"], 30.0)
        self.assertEqual(described["limits"]["max_pending_write"], 4 * 1024 * 1024)
        self.assertEqual(described["workers"], {"count": 1, "mode": ONE_PROCESS})
        self.assertEqual(described["cluster"], {"url": None, "node_ids": []})
        # Addresses are read when asked: a port listening later shows.
        listening.append(IPv4Address("TCP", "127.0.0.1", 4343))
        self.assertEqual(about.describe()["listeners"], ["tcp:127.0.0.1:4242", "tcp:127.0.0.1:4343"])

    def test_clusterPasswordNeverShown(self) -> None:
        """A cluster URL's password is *** in the description."""
        cluster = config(cluster="redis://app:s3cret@cache:6380/2")
        about = ServerDescription(cluster, cluster.limits, Clock(), list, nodeIds=[7])
        described = about.describe()
        self.assertEqual(described["cluster"], {"url": "redis://app:***@cache:6380/2", "node_ids": [7]})
        self.assertNotIn("s3cret", json.dumps(described))

    def test_customContextByDottedName(self) -> None:
        """A context that is not built in is named by its dotted name."""
        about = ServerDescription(config(contextClass=ChatContext), config().limits, Clock(), list)
        self.assertEqual(about.describe()["context"], "chat")

        class Mine(EchoContext):
            pass

        about = ServerDescription(config(contextClass=Mine), config().limits, Clock(), list)
        self.assertEqual(about.describe()["context"], f"{__name__}.{Mine.__qualname__}")


class MonitorTellsTests(SynchronousTestCase):
    """The monitor's endpoints tell the description."""

    def setUp(self) -> None:
        clock = Clock()
        factory = ConnectionContextFactory(EchoContext, reactor=clock)
        self.about = ServerDescription(config(), config().limits, clock, list)
        self.monitor = MonitorService(factory, statsInterval=0, reactor=clock, about=self.about)

    def test_statsServerPart(self) -> None:
        """/stats.json has the description under server."""
        server = self.monitor.sampler.stats()["server"]
        self.assertEqual((server["version"], server["codec"]), (iocpsvc.__version__, "line:max=4096"))

    def test_aboutJSON(self) -> None:
        """/about.json is the description."""
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b"about.json"])
        resource = self.monitor.site.resource.getChildWithDefault(b"about.json", request)
        described = json.loads(resource.render(request))
        self.assertEqual(described["context"], "echo")
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])

    def test_buildInfo(self) -> None:
        """/metrics: iocpsvc_build_info 1 with what runs in its labels, and the start time."""
        families = {
            family.name: family
            for family in text_string_to_metric_families(metricsText(self.monitor.sampler.stats).decode())
        }
        [sample] = families["iocpsvc_build_info"].samples
        self.assertEqual(sample.name, "iocpsvc_build_info")
        self.assertEqual(sample.value, 1)
        self.assertEqual(sample.labels["version"], iocpsvc.__version__)
        self.assertEqual(sample.labels["codec"], "line:max=4096")
        self.assertEqual(sample.labels["context"], "echo")
        self.assertEqual(sample.labels["reactor"], "task")
        [start] = families["iocpsvc_start_time_seconds"].samples
        self.assertAlmostEqual(start.value, self.about.startedAt, places=2)


class AssemblyTests(SynchronousTestCase):
    """The assembly gives the monitor what it built."""

    def test_oneProcess(self) -> None:
        """One process: the factory's limits in force and the listening ports."""
        from twisted.internet import reactor

        service = assembly.buildService(config(limits=ServerLimits()), reactor)
        [monitor] = [child for child in service if isinstance(child, MonitorService)]
        assert monitor.about is not None
        described = monitor.about.describe()
        self.assertEqual(described["listeners"], [])  # not listening yet
        self.assertIsNotNone(described["limits"]["max_connections"])  # derived from the open-files limit
        self.assertEqual(described["limits"]["max_connections"], service.factory.limits.maxConnections)  # type: ignore[attr-defined]
        self.assertEqual(described["workers"]["mode"], ONE_PROCESS)

    def test_workerPool(self) -> None:
        """The parent of workers: their count and mode, each worker's node id."""
        from twisted.internet import reactor

        from iocpsvc import workers

        if workers.workersAvailable(reactor) is not None:
            raise self.skipTest("no worker processes here")
        pool = assembly.buildService(config(workerCount=3, nodeId=40), reactor)
        [monitor] = [child for child in pool if isinstance(child, MonitorService)]
        assert monitor.about is not None
        described = monitor.about.describe()
        self.assertEqual(described["workers"], {"count": 3, "mode": pool.mode})  # type: ignore[attr-defined]
        self.assertEqual(described["cluster"]["node_ids"], [40, 41, 42])
        self.assertEqual(described["limits"]["per"], "worker")
        self.assertEqual(described["limits"]["max_connections"], 500)
