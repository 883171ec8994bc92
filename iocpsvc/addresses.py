"""
Addresses and endpoint descriptions, read and written the same way
everywhere: a peer in a log line (L{describePeer}), a listening address
(L{describeAddress}), the IP of a Twisted address and the CIDR accept
filter (L{peerIP}, L{parseNetwork}, L{addressAllowed}), and the kind and
default backlog of an endpoint description (L{listenerKind},
L{withDefaultBacklog}).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any


def describePeer(address: object) -> str:
    """C{host:port} for IP addresses, the repr otherwise."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


_BACKLOG_KINDS = ("tcp", "tcp6", "ssl", "tls")


def defaultBacklog() -> int:
    """
    The listen backlog used when an endpoint description gives none: the
    kernel's C{somaxconn} (as Netty and HP-Socket use), capped at 4096.
    Twisted's own default of 50 resets clients when hundreds connect at once.
    """
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return max(50, min(4096, int(f.read().strip())))
    except (OSError, ValueError):
        return 1024


def listenerKind(description: str) -> str:
    """
    The kind of listener an endpoint description opens, past a
    C{haproxy:} wrapper: C{tcp} for C{haproxy:tcp:9983}, C{ssl} for
    C{ssl:9993:...}.
    """
    fields = description.split(":")
    return fields[1] if fields[0] == "haproxy" and len(fields) > 1 else fields[0]


def splitDescription(description: str) -> list[str]:
    """
    The colon-separated fields of an endpoint description, with Twisted's
    escapes undone: C{unix:/tmp/a\\:b:mode=600} is C{["unix", "/tmp/a:b",
    "mode=600"]}.
    """
    fields: list[str] = []
    current: list[str] = []
    escaped = False
    for char in description:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def withDefaultBacklog(description: str, backlog: int | None = None) -> str:
    """
    Add C{:backlog=N} to a C{tcp:}, C{tcp6:}, C{ssl:} or C{tls:} description
    (also behind C{haproxy:}) that does not set one.
    """
    if listenerKind(description) not in _BACKLOG_KINDS or "backlog=" in description:
        return description
    return f"{description}:backlog={backlog or defaultBacklog()}"


def describeAddress(address: Any) -> str:
    """C{tcp:127.0.0.1:9983}-style text for a listening address."""
    kind = getattr(address, "type", None)
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if kind and host is not None and port is not None:
        return f"{kind.lower()}:{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None:
        return f"unix:{name.decode() if isinstance(name, bytes) else name}"
    return repr(address)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parseNetwork(value: Any) -> Network:
    """
    A CIDR network (C{10.0.0.0/8}, C{2001:db8::/32}) or a single address.

    @raise ValueError: not an address or network.
    """
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None


def peerIP(address: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """
    The IP of a Twisted address, with IPv4-mapped IPv6 (C{::ffff:1.2.3.4})
    seen as IPv4; C{None} for addresses without one (UNIX sockets).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def addressAllowed(address: Any, allow: Iterable[Network], deny: Iterable[Network]) -> bool:
    """
    Whether the accept filter lets C{address} in: a peer in any C{deny}
    network is refused; when C{allow} is not empty, a peer must be in one
    of its networks.  Addresses without an IP (UNIX sockets) pass.
    """
    ip = peerIP(address)
    if ip is None:
        return True
    if any(ip in network for network in deny if network.version == ip.version):
        return False
    allow = list(allow)
    if allow:
        return any(ip in network for network in allow if network.version == ip.version)
    return True
