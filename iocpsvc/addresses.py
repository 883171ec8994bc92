"""
Addresses and endpoint descriptions, read and written the same way
everywhere: a peer in a log line (L{describePeer}), a listening address
(L{describeAddress}), the IP of a Twisted address and the CIDR accept
filter (L{peerIP}, L{parseNetwork}, L{addressAllowed}), and the kind and
default backlog of an endpoint description (L{listenerKind},
L{withDefaultBacklog}), and what is wrong with one, in words
(L{endpointProblem}).
"""

from __future__ import annotations

import ipaddress
import os
import re
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


# Endpoint kinds of Twisted itself, and how each is written; plugins (such
# as haproxy:) add theirs.
_ENDPOINT_EXAMPLES = {
    "tcp": "tcp:9983[:interface=127.0.0.1]",
    "tcp6": "tcp6:9983[:interface=::1]",
    "ssl": "ssl:9993:privateKey=KEY.pem:certKey=CERT.pem",
    "unix": "unix:/run/app.sock",
    "systemd": "systemd:domain=INET:index=0",
}
_PORT_KINDS = ("tcp", "tcp6", "ssl")
_UNKNOWN_PARAMETER = re.compile(r"unexpected keyword argument '([^']*)'")


def endpointProblem(reactor: Any, description: str) -> str | None:
    """
    What is wrong with a server endpoint description, in words fit for a
    one-line error, or C{None} if Twisted can build its endpoint.  The
    common mistakes are told plainly (a port that is not a number from 0
    to 65535, an unknown kind or parameter, a missing directory or key
    file); anything else is Twisted's own message.
    """
    fields = splitDescription(description)
    inner = fields[1:] if fields[0] == "haproxy" else fields
    kind = inner[0] if inner else ""
    positional = [f for f in inner[1:] if "=" not in f]
    named = dict(f.split("=", 1) for f in inner[1:] if "=" in f)
    if kind in _PORT_KINDS:
        port = named.get("port", positional[0] if positional else None)
        if port is None:
            return f"no port (e.g. {_ENDPOINT_EXAMPLES[kind]})"
        if not (port.strip().isascii() and port.strip().isdigit()) or int(port) > 65535:
            return f"the port must be a number from 0 to 65535, not {port!r}"
    if kind == "unix":
        path = named.get("address", positional[0] if positional else "")
        if not path:
            return f"no socket path (e.g. {_ENDPOINT_EXAMPLES['unix']})"
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            return f"no such directory for the socket: {directory}"
    from twisted.internet import endpoints  # Twisted's parsers, only to check a description

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:  # Twisted's parsers raise what their arguments make them raise
        return _endpointError(kind, e)
    return None


def _endpointError(kind: str, error: Exception) -> str:
    """Twisted's error building an endpoint, as a reason for a person."""
    text = str(error)
    unknown = _UNKNOWN_PARAMETER.search(text)
    if isinstance(error, TypeError) and unknown:
        return f"unknown parameter {unknown.group(1)!r} for {kind}: endpoints"
    if kind == "systemd" and isinstance(error, (IndexError, KeyError)):
        # Twisted reads (and clears) LISTEN_FDS when it loads: no socket at
        # that index means no socket activation.
        return (
            f"no such socket from systemd ({text}); systemd endpoints need socket "
            f"activation: start through a systemd .socket unit"
        )
    if text.startswith("Unknown endpoint type"):
        examples = ", ".join(_ENDPOINT_EXAMPLES.values())
        return f"unknown endpoint type {kind!r} (examples: {examples}, haproxy:tcp:9983)"
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename}" if error.filename else ""
        return f"cannot read{where}: {error.strerror.lower()}"
    if type(error).__module__.startswith("OpenSSL"):
        from iocpsvc.transports import describeTlsError

        return f"cannot load the TLS key or certificate: {describeTlsError(error)}"
    return text or type(error).__name__
