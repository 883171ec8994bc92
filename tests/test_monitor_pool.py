"""
Tests for L{iocpsvc.monitor.pool}: the monitor's view of a worker pool
(totals and per-worker rows in C{/stats.json} and C{/metrics}, the cluster
summary, C{/connections.json} merged from the workers).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.monitor.pool import PoolSource
from iocpsvc.monitor.stats import StatsSampler
from tests.fakeworkers import FakeWorker, clockedPool


class PoolSourceTests(SynchronousTestCase):
    """The parent's figures over its workers, as its monitor serves them."""

    def test_totalsAndRows(self) -> None:
        """Counters and gauges add up over workers; each worker has a row."""
        pool = clockedPool()
        pool.workers = {1: FakeWorker(1, 10), 2: FakeWorker(2, 11)}  # type: ignore[dict-item]
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

    def test_metrics(self) -> None:
        """/metrics of the parent: the totals, plus one series per worker."""
        from prometheus_client.parser import text_string_to_metric_families

        from iocpsvc.monitor.prometheus import metricsText

        pool = clockedPool()
        pool.workers = {1: FakeWorker(1, 10), 2: FakeWorker(2, 11)}  # type: ignore[dict-item]
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
        pool = clockedPool()
        pool.workers = {1: FakeWorker(1, 10), 2: FakeWorker(2, 11)}  # type: ignore[dict-item]
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
        pool = clockedPool()
        pool.workers = {1: FakeWorker(1, 10)}  # type: ignore[dict-item]
        pool.snapshots = {1: {"cluster": {"kind": "workers", "connected": True, "published_total": 3}}}
        self.assertNotIn("cluster", PoolSource(pool).collect())

    def test_clusterClaimsAndPending(self) -> None:
        """Node-id claims and pending bytes reach totals and rows; a silent worker is not connected."""
        pool = clockedPool()
        one, two = FakeWorker(1, 10), FakeWorker(2, 11)
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

    def test_connectionsMerged(self) -> None:
        """
        /connections.json: each worker's rows tagged with its index and
        merged in the order asked, at most limit of them; the online counts
        add up; a worker that does not answer is named in unanswered.
        """
        pool = clockedPool(3)
        one, two, silent = FakeWorker(1, 10), FakeWorker(2, 11), FakeWorker(3, 12)
        one.answer = {
            "online": 2,
            "order": "desc",
            "connections": [{"id": 1, "bytes_in": 5}, {"id": 2, "bytes_in": 1}],
        }
        two.answer = {"online": 1, "order": "desc", "connections": [{"id": 9, "bytes_in": 3}]}
        silent.answers = False
        pool.workers = {1: one, 2: two, 3: silent}  # type: ignore[dict-item]
        listings: list[Any] = []
        PoolSource(pool).connections("bytes_in", 2, None).addCallback(listings.append)
        self.assertEqual(listings, [])
        pool.reactor.advance(pool.answerTimeout)
        [listing] = listings
        self.assertEqual((listing["online"], listing["order"], listing["unanswered"]), (3, "desc", [3]))
        self.assertEqual([(row["worker"], row["id"]) for row in listing["connections"]], [(1, 1), (2, 9)])

    def test_connectionsBadSort(self) -> None:
        """An unknown sort key is refused before any worker is asked."""
        pool = clockedPool(1)
        worker = FakeWorker(1, 10)
        pool.workers = {1: worker}  # type: ignore[dict-item]
        self.assertRaises(ValueError, PoolSource(pool).connections, "color", 10, None)

    def test_peakOnline(self) -> None:
        """peak_online is the most connections seen online at once over all the workers."""
        pool = clockedPool(1)
        pool.workers = {1: FakeWorker(1, 10)}  # type: ignore[dict-item]
        source = PoolSource(pool)
        for online in (5, 9, 2):
            pool.snapshots = {1: {"online": online}}
            stats = source.collect()
        self.assertEqual((stats["online"], stats["peak_online"]), (2, 9))


def rows(count: int, first: int = 1) -> list[dict[str, Any]]:
    """C{count} rows of C{/connections.json}, ids from C{first}."""
    return [{"id": first + n, "bytes_in": n} for n in range(count)]


class StatsAgreeWithConnectionsTests(SynchronousTestCase):
    """
    Under --workers, /stats.json and /connections.json tell the same
    story: neither lags the other by the pool's poll interval.
    """

    def setUp(self) -> None:
        self.pool = clockedPool()
        self.one, self.two = FakeWorker(1, 10), FakeWorker(2, 11)
        self.pool.workers = {1: self.one, 2: self.two}  # type: ignore[dict-item]
        self.source = PoolSource(self.pool)
        self.sampler = StatsSampler(self.source)

    def test_statsAfterAListingShowItsConnections(self) -> None:
        """
        The figures a worker gives with its connections become its
        snapshot: /stats.json asked right after a listing of 7 rows says 7
        online, not the 0 of the last poll.
        """
        self.pool.poll()
        self.assertEqual(self.sampler.stats()["online"], 0)
        self.one.answer = {"online": 4, "order": "asc", "connections": rows(4), "stats": {"online": 4}}
        self.two.answer = {"online": 3, "order": "asc", "connections": rows(3, 10), "stats": {"online": 3}}
        listings: list[Any] = []
        self.source.connections("id", 100, None).addCallback(listings.append)
        [listing] = listings
        self.assertEqual((listing["online"], len(listing["connections"])), (7, 7))
        self.assertNotIn("stats", listing)
        self.assertEqual(self.sampler.stats()["online"], 7)
        self.assertEqual([row["online"] for row in self.sampler.stats()["workers"]], [4, 3])

    def test_staleStatsAskTheWorkers(self) -> None:
        """
        /stats.json older than maxAge asks the workers again before it
        answers, instead of serving the last poll's figures.
        """
        self.pool.poll()
        self.assertEqual(self.sampler.stats()["online"], 0)
        self.one.answer = {"online": 5}
        self.assertIsNone(self.sampler.refreshed())  # fresh enough: no question
        self.pool.reactor.advance(self.sampler.maxAge)
        waiting = self.sampler.refreshed()
        assert waiting is not None
        self.assertEqual(self.successResultOf(waiting), None)
        self.assertEqual(self.sampler.stats()["online"], 5)

    def test_slowWorkerDoesNotHoldStats(self) -> None:
        """
        A worker that does not answer holds /stats.json back at most
        freshWithin seconds; its answer is kept when it comes.
        """
        self.sampler.stats()
        self.two.answers = False
        self.one.answer = {"online": 2}
        self.pool.reactor.advance(self.sampler.maxAge)
        waiting = self.sampler.refreshed()
        assert waiting is not None
        # A second request while the workers are asked waits for the same answers.
        second = self.sampler.refreshed()
        assert second is not None
        self.assertNoResult(waiting)
        self.pool.reactor.advance(self.source.freshWithin)
        self.successResultOf(waiting)
        self.successResultOf(second)
        self.assertEqual(self.sampler.stats()["online"], 2)
        self.pool.reactor.advance(self.pool.answerTimeout)  # the silent worker's question expires

    def test_refreshThatRaises(self) -> None:
        """
        A refresh that raises at once (a control pipe already gone) is an
        answer too: the request that asked is answered, and the next one
        asks again instead of waiting for ever.
        """
        calls: list[int] = []

        def broken() -> Any:
            calls.append(1)
            raise KeyError(3)

        self.source.refresh = broken  # type: ignore[method-assign]
        self.sampler.stats()
        self.pool.reactor.advance(self.sampler.maxAge)
        first = self.sampler.refreshed()
        assert first is not None
        self.successResultOf(first)
        second = self.sampler.refreshed()
        assert second is not None
        self.successResultOf(second)
        self.assertEqual(len(calls), 2)

    def test_pollThatRaises(self) -> None:
        """PoolSource.refresh fires (and cancels its timer) when the pool's poll raises."""

        def broken() -> Any:
            raise KeyError(3)

        self.pool.poll = broken  # type: ignore[method-assign]
        self.successResultOf(self.source.refresh())
        self.assertEqual(self.pool.reactor.getDelayedCalls(), [])

    def test_workerRows(self) -> None:
        """Each worker's row says its state, restarts and how long ago it answered."""
        self.two.restarts = 2
        self.pool.poll()
        self.two.responsive = False
        self.pool.reactor.advance(1.5)
        stats = self.source.collect()
        one, two = stats["workers"]
        self.assertEqual((one["state"], one["restarts"], one["answered_seconds_ago"]), ("serving", 0, 1.5))
        self.assertEqual((two["state"], two["restarts"]), ("unresponsive", 2))
        self.two.alive = False
        self.assertEqual(self.source.collect()["workers"][1]["state"], "down")

    def test_overHTTP(self) -> None:
        """
        Over the monitor's resources: /stats.json right after
        /connections.json shows the online count the listing did.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from iocpsvc.monitor.web import MonitorRoot

        root = MonitorRoot(self.source, self.sampler)
        self.pool.poll()

        def get(path: bytes) -> Any:
            request = DummyRequest([path])
            request.method = b"GET"
            resource = root.getChildWithDefault(path, request)
            body = resource.render(request)
            if isinstance(body, bytes):
                return json.loads(body)
            return json.loads(b"".join(request.written))

        self.assertEqual(get(b"stats.json")["online"], 0)
        self.one.answer = {"online": 7, "order": "asc", "connections": rows(7), "stats": {"online": 7}}
        self.two.answer = {"online": 0, "order": "asc", "connections": [], "stats": {"online": 0}}
        listing = get(b"connections.json")
        self.assertEqual((listing["online"], len(listing["connections"])), (7, 7))
        self.assertEqual(get(b"stats.json")["online"], 7)

    def test_answeredLaterHasItsLength(self) -> None:
        """
        A /stats.json that waited for the workers carries Content-Length,
        as one answered at once does; a HEAD has it and no body.
        """
        from twisted.web.test.requesthelper import DummyRequest

        from iocpsvc.monitor.web import MonitorRoot

        root = MonitorRoot(self.source, self.sampler)
        self.sampler.stats()
        for method in (b"GET", b"HEAD"):
            self.pool.reactor.advance(self.sampler.maxAge)
            request = DummyRequest([b"stats.json"])
            request.method = method
            resource = root.getChildWithDefault(b"stats.json", request)
            resource.render(request)
            self.pool.reactor.advance(self.source.freshWithin)
            self.assertEqual(request.finished, 1, method)
            length = request.responseHeaders.getRawHeaders(b"content-length")
            assert length is not None
            body = b"".join(request.written)
            if method == b"GET":
                self.assertEqual(int(length[0]), len(body))
                json.loads(body)
            else:
                self.assertGreater(int(length[0]), 0)
                self.assertEqual(body, b"")
