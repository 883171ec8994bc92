"""
The PROXY protocol's header (v1 and v2) by the letter of its specification:
what a valid header is, checked before Twisted's parsers read it (they are
lax: the v1 parser reads ports with C{int()}, taking C{+80} and C{1_000},
and scoped IPv6 addresses; the v2 parser turns an C{AF_UNIX} header into a
client no IP accept filter can judge).  L{iocpsvc.proxy} uses these parsers
in Twisted's wrapper.

A load balancer that speaks the PROXY protocol opens each connection with
one header naming the client it relays::

    v1 (text, at most 107 bytes):
    +------------------------------------------------------+-----------
    | PROXY TCP4 203.0.113.7 192.0.2.1 51234 9983\\r\\n       | payload...
    +------------------------------------------------------+-----------

    v2 (binary):
    +---------------------+-------+--------+--------+-----------+--------
    | \\r\\n\\r\\n\\0\\r\\nQUIT\\n   | ver/  | family | length | addresses | payload
    | (12-byte signature) | cmd   | /proto | 2 bytes| (+ TLVs)  |
    +---------------------+-------+--------+--------+-----------+--------
"""

from __future__ import annotations

import ipaddress
import re
import struct
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from iocpsvc.errors import ProxyHeaderError

V2_SIGNATURE: bytes = V2Parser.PREFIX
V1_SIGNATURE: bytes = V1Parser.PROXYSTR
# Twisted picks the parser from the first read alone: v2 needs 16 bytes
# (signature, version, family, length), v1 needs 8 starting with "PROXY".
_V2_DECIDES = 16
_V1_DECIDES = 8
# How much of an invalid header the log line shows.
SHOWN_BYTES = 24

# v1, by the letter of the specification: the longest line, CRLF included;
# ports in decimal without heading zeroes (int() would also take "+80",
# "1_000", " 80"); IPv4 addresses as a dotted quad without heading zeroes;
# addresses of nothing but hex digits, colons and dots (no scope id).
_V1_LONGEST = 107
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_IP_CHARACTERS = re.compile(r"[0-9A-Fa-f:.]+")
# v2: the address block each family needs (after the 16 fixed bytes); the
# rest of the header, up to its length, is TLVs: type (1 byte), length of
# the value (2 bytes), value.
_V2_ADDRESSES = {0x1: ("IPv4", 12), 0x2: ("IPv6", 36), 0x3: ("UNIX", 216)}
_V2_TLV_HEAD = 3


def undecided(head: bytes) -> bool:
    """
    Whether C{head}, the first bytes of a connection, could still begin a
    PROXY header but is too short for Twisted's wrapper to tell which
    version (it would close the connection): wait for more.
    """
    if len(head) < _V2_DECIDES and V2_SIGNATURE.startswith(head[: len(V2_SIGNATURE)]):
        return True
    # A v1 line shorter than 8 bytes that has already ended is invalid anyway.
    return len(head) < _V1_DECIDES and V1_SIGNATURE.startswith(head[:5]) and b"\n" not in head


def addressProblem(address: Any, role: str = "client") -> str | None:
    """
    What is wrong with an address a header gave (the client's, or with
    C{role="destination"} the one it connected to), or C{None}.

    The last check of what Twisted's parser made of a header (the headers
    themselves are checked before, by L{v1LineProblem} and
    L{v2HeaderProblem}): an IP client must neither pass the accept filter
    as an address without an IP, nor be judged by the rules of the other
    family, nor reach the application with a scope id or a port out of
    range.
    """
    if not isinstance(address, (IPv4Address, IPv6Address)):
        # No client in the header (LOCAL, UNKNOWN, UNSPEC, or AF_UNIX, see
        # ProxyHeaderWrapper.nonIPClient): the connection's own address.
        return None
    family = 4 if isinstance(address, IPv4Address) else 6
    problem = _hostProblem(address.host, family, role)
    if problem is None and not 0 <= address.port <= 65535:
        problem = f"invalid {role} port {address.port} in PROXY header"
    return problem


def _hostProblem(host: str, family: int, role: str) -> str | None:
    """
    What is wrong with C{host}, an address as a header wrote it, in a
    header of IP C{family} (4 or 6), or C{None}: it must be a plain IP
    address of that family (a dotted quad without heading zeroes, or IPv6
    without a scope id).  An IPv4-mapped IPv6 address (C{::ffff:1.2.3.4})
    is IPv6: how an IPv4 client can appear when a balancer mixes families.
    """
    if "%" in host:
        return f"{role} address {host!r} with a scope id in PROXY header"
    invalid = f"invalid {role} address {host!r} in PROXY header"
    if _IP_CHARACTERS.fullmatch(host) is None:
        return invalid
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return invalid
    if ip.version == 4 and _DOTTED_QUAD.fullmatch(host) is None:
        return invalid  # Python's ipaddress refuses heading zeroes too, since 3.9.5
    if ip.version != family:
        return f"IPv{ip.version} {role} address {host!r} in a TCP{family} PROXY header"
    return None


def _shown(field: bytes) -> str:
    """A field of a header, quoted for a log line (bytes beyond ASCII escaped)."""
    return repr(field)[1:]


def v1LineProblem(line: bytes) -> str | None:
    """
    What is wrong with a v1 header line (without its CRLF), or C{None}.

    By the letter of the specification: at most 107 bytes with the CRLF, no
    other CR or LF; C{PROXY UNKNOWN}, alone or followed by a space and
    anything (which is ignored); or C{PROXY TCP4} / C{PROXY TCP6} and
    exactly four more fields, each after exactly one space: the client's
    and the destination's addresses, plain IP addresses of the family named
    (L{_hostProblem}), then their ports, 1 to 5 decimal digits without
    heading zeroes (C{0} itself is a port), at most 65535.
    """
    if len(line) + 2 > _V1_LONGEST:
        return f"PROXY v1 header longer than {_V1_LONGEST} bytes"
    if b"\r" in line or b"\n" in line:
        return "CR or LF inside a PROXY v1 header"
    fields = line.split(b" ")
    if fields[0] != V1_SIGNATURE or len(fields) < 2:
        return "invalid PROXY header"
    protocol = fields[1]
    if protocol == b"UNKNOWN":
        return None
    if b"" in fields:
        return "PROXY v1 header fields not separated by single spaces"
    if protocol not in (b"TCP4", b"TCP6"):
        return f"unknown protocol {_shown(protocol)} in PROXY v1 header"
    if len(fields) != 6:
        return f"{len(fields) - 2} address and port fields in a PROXY v1 header instead of 4"
    family = 4 if protocol == b"TCP4" else 6
    for role, host in (("client", fields[2]), ("destination", fields[3])):
        if not host.isascii():
            return f"invalid {role} address {_shown(host)} in PROXY header"
        problem = _hostProblem(host.decode("ascii"), family, role)
        if problem is not None:
            return problem
    for role, port in (("client", fields[4]), ("destination", fields[5])):
        if _V1_PORT.fullmatch(port) is None or int(port) > 65535:
            return f"invalid {role} port {_shown(port)} in PROXY header"
    return None


def v2HeaderProblem(header: bytes) -> str | None:
    """
    What is wrong with a complete v2 header (the 16 fixed bytes and as many
    more as its length field says), or C{None}.

    Version 2; command C{LOCAL} (whose block is skipped, whatever it holds)
    or C{PROXY}; a known family (C{UNSPEC}, C{AF_INET}, C{AF_INET6},
    C{AF_UNIX}) and transport (C{UNSPEC}, C{STREAM}, C{DGRAM}).  With
    C{PROXY} and a family and transport that are not C{UNSPEC}, the length
    must cover the family's addresses, and what follows them must be whole
    TLVs, none running past the header's end.  TLVs are not interpreted
    (a C{CRC32C} one is not verified, which the specification leaves to
    receivers that support it).
    """
    if len(header) < 16:
        return "PROXY v2 header shorter than 16 bytes"
    versionCommand, familyProtocol = header[12], header[13]
    version, command = versionCommand >> 4, versionCommand & 0xF
    if version != 2:
        return f"PROXY header of version {version}"
    if command == 0:
        return None
    if command != 1:
        return f"unknown command {command:#x} in PROXY v2 header"
    family, transport = familyProtocol >> 4, familyProtocol & 0xF
    if family not in _V2_ADDRESSES and family != 0:
        return f"unknown address family {family:#x} in PROXY v2 header"
    if transport > 2:
        return f"unknown transport protocol {transport:#x} in PROXY v2 header"
    if family == 0 or transport == 0:
        return None  # UNSPEC: names no client; the block is to be ignored
    name, size = _V2_ADDRESSES[family]
    block = header[16:]
    if len(block) < size:
        return f"PROXY v2 address block of {len(block)} bytes, {name} addresses need {size}"
    position = size
    while position < len(block):
        if len(block) - position < _V2_TLV_HEAD:
            return f"PROXY v2 header ends in {len(block) - position} bytes that are not a TLV"
        kind, valueSize = struct.unpack_from("!BH", block, position)
        position += _V2_TLV_HEAD + valueSize
        if position > len(block):
            return f"TLV {kind:#04x} of {valueSize} bytes runs past the end of its PROXY v2 header"
    return None


class StrictV1Parser(V1Parser):
    """
    Twisted's v1 parser, reading only lines that L{v1LineProblem} passes,
    and also the bare C{PROXY UNKNOWN\\r\\n} (no address, as the
    specification allows), which Twisted's refuses because it looks for a
    space after C{UNKNOWN}.
    """

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        """
        @raise ProxyHeaderError: C{line} is not a valid v1 header (raised
            past Twisted's wrapper, which would close without a reason).
        """
        problem = v1LineProblem(line)
        if problem is not None:
            raise ProxyHeaderError(problem)
        if line == b"PROXY UNKNOWN":
            return ProxyInfo(line, None, None)  # as for "PROXY UNKNOWN <anything>"
        return super().parse(line)


class StrictV2Parser(V2Parser):
    """Twisted's v2 parser, reading only headers that L{v2HeaderProblem} passes."""

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        """
        @raise ProxyHeaderError: C{line} is not a valid v2 header.
        """
        problem = v2HeaderProblem(line)
        if problem is not None:
            raise ProxyHeaderError(problem)
        return super().parse(line)
