"""
Tests for L{iocpsvc.machine}: how many cores C{--workers auto}
counts (affinity, cgroup v1 and v2 quotas).
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.machine import availableCores
from tests.netutil import temporaryDirectory


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
        self.assertEqual(availableCores(root), self.affinity())

    def test_cgroupV2QuotaOfAnAncestor(self) -> None:
        """cgroup v2: a quota of 0.5 cores on the parent cgroup gives 1."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "0::/system.slice/x.service\n",
                "sys/fs/cgroup/system.slice/x.service/cpu.max": "max 100000\n",
                "sys/fs/cgroup/system.slice/cpu.max": "50000 100000\n",
            }
        )
        self.assertEqual(availableCores(root), 1)

    def test_cgroupV1Quota(self) -> None:
        """cgroup v1: cpu.cfs_quota_us / cpu.cfs_period_us, rounded up, at most the affinity."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n",
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "150000\n",
                "sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            }
        )
        self.assertEqual(availableCores(root), min(2, self.affinity()))

    def test_unlimitedV1(self) -> None:
        """cgroup v1 quota -1 means no limit."""
        root = self.fakeRoot(
            {
                "proc/self/cgroup": "4:cpu,cpuacct:/\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
            }
        )
        self.assertEqual(availableCores(root), self.affinity())
