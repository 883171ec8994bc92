"""
Tests for L{iocpsvc.addresses}: peers and listening addresses in words,
endpoint descriptions' kinds and default backlog.  (The accept filter's
CIDR matching is tested with the limits in C{tests/test_hardening.py}.)
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.addresses import describeAddress, describePeer, listenerKind, withDefaultBacklog


class DescribeTests(SynchronousTestCase):
    """Addresses in log lines."""

    def test_peers(self) -> None:
        """IPv4 as host:port, IPv6 in brackets, anything else as it prints."""
        self.assertEqual(describePeer(IPv4Address("TCP", "192.0.2.1", 40000)), "192.0.2.1:40000")
        self.assertEqual(describePeer(IPv6Address("TCP", "2001:db8::1", 443)), "[2001:db8::1]:443")
        self.assertEqual(describePeer(None), "None")

    def test_listeningAddresses(self) -> None:
        """A listener's address as an endpoint-like description."""
        self.assertEqual(describeAddress(IPv4Address("TCP", "127.0.0.1", 9983)), "tcp:127.0.0.1:9983")
        self.assertEqual(describeAddress(UNIXAddress(b"/run/s.sock")), "unix:/run/s.sock")


class DescriptionTests(SynchronousTestCase):
    """Endpoint descriptions."""

    def test_kind(self) -> None:
        """The kind of listener, past a haproxy: wrapper."""
        self.assertEqual(listenerKind("tcp:9983"), "tcp")
        self.assertEqual(listenerKind("haproxy:tcp:9983"), "tcp")
        self.assertEqual(listenerKind("ssl:9993:privateKey=k.pem"), "ssl")

    def test_defaultBacklog(self) -> None:
        """TCP and TLS listeners get a backlog unless they name one; others are left alone."""
        self.assertEqual(withDefaultBacklog("tcp:9983", 512), "tcp:9983:backlog=512")
        self.assertEqual(withDefaultBacklog("haproxy:tcp:9983", 512), "haproxy:tcp:9983:backlog=512")
        self.assertEqual(withDefaultBacklog("tcp:9983:backlog=8", 512), "tcp:9983:backlog=8")
        self.assertEqual(withDefaultBacklog("unix:/run/s.sock", 512), "unix:/run/s.sock")
