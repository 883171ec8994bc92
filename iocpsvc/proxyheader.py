"""
The PROXY protocol's header (v1 and v2) by the letter of its specification:
what a valid header is, and what it says (L{ProxyHeader}).  Pure: bytes in,
a header or a L{ProxyHeaderError} out, no transport; L{ProxyHeaderReader}
reads one header from the first bytes of a connection, however they are
split.  L{iocpsvc.proxy} reads each C{haproxy:} connection's header with it.

Twisted ships parsers too, but only in private modules
(C{twisted.protocols.haproxy._v1parser}, ...), which any Twisted release
may change; and they are lax (the v1 parser reads ports with C{int()},
taking C{+80} and C{1_000}, and scoped IPv6 addresses).  These read the
same headers to the same addresses, and refuse the rest with a reason.

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
import socket
import struct
from dataclasses import dataclass
from typing import Any, Literal

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

from iocpsvc.errors import ProxyHeaderError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_SIGNATURE = b"PROXY"
# Which version a connection speaks is decided once, on the first bytes:
# v2 needs 16 (signature, version, family, length), v1 needs 8 starting
# with "PROXY" (as Twisted's own wrapper decides).
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
    PROXY header but is too short to tell which version: wait for more.
    """
    if len(head) < _V2_DECIDES and V2_SIGNATURE.startswith(head[: len(V2_SIGNATURE)]):
        return True
    # A v1 line shorter than 8 bytes that has already ended is invalid anyway.
    return len(head) < _V1_DECIDES and V1_SIGNATURE.startswith(head[:5]) and b"\n" not in head


def addressProblem(address: Any, role: str = "client") -> str | None:
    """
    What is wrong with an address a header gave (the client's, or with
    C{role="destination"} the one it connected to), or C{None}.

    The last check of what a header was read to (the headers themselves
    are checked before, by L{v1LineProblem} and L{v2HeaderProblem}): an IP
    client must neither pass the accept filter
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
    if family == 0 and transport == 0:
        return None  # UNSPEC: names no client; the block is to be ignored
    if family == 0 or transport == 0:
        # The spec lists 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32 only; any
        # other byte "must be rejected as invalid".
        return (
            f"address family and protocol {familyProtocol:#04x} in PROXY v2 header (UNSPEC with a known one)"
        )
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


@dataclass(frozen=True)
class ProxyHeader:
    """
    What a valid PROXY header says.

    @ivar header: the header as received: a v1 line without its CRLF, or a
        whole v2 header (its 16 fixed bytes, addresses and TLVs).
    @ivar source: the client the header names; C{None} when it names none
        (v1 C{UNKNOWN}, v2 C{LOCAL}, or an C{UNSPEC} family or transport),
        and then the connection's own peer stands.  An
        L{IPv4Address}/L{IPv6Address} (C{"UDP"} for a v2 C{DGRAM} header),
        or a L{UNIXAddress} for a v2 C{AF_UNIX} header.
    @ivar destination: the address the client connected to, or C{None}
        likewise.
    """

    header: bytes
    source: IAddress | None
    destination: IAddress | None


def parseV1(line: bytes) -> ProxyHeader:
    """
    Read a v1 header line (without its CRLF).  Addresses are kept as the
    line writes them (C{2001:DB8::7} stays so); C{PROXY UNKNOWN}, bare or
    followed by anything, names no client.

    @raise ProxyHeaderError: C{line} is not a valid v1 header
        (L{v1LineProblem} says why).
    """
    problem = v1LineProblem(line)
    if problem is not None:
        raise ProxyHeaderError(problem)
    fields = line.split(b" ")
    if fields[1] == b"UNKNOWN":
        return ProxyHeader(line, None, None)
    kind = IPv4Address if fields[1] == b"TCP4" else IPv6Address
    # v1LineProblem passed: ASCII addresses, decimal ports.
    return ProxyHeader(
        line,
        kind("TCP", fields[2].decode("ascii"), int(fields[4])),
        kind("TCP", fields[3].decode("ascii"), int(fields[5])),
    )


def _ipv6Text(packed: bytes) -> str:
    """
    A v2 header's IPv6 address as eight groups of lower-case hex without
    heading zeroes and without C{::} (C{2001:db8:0:0:0:0:0:7}): the form
    peers behind C{haproxy:} have always had (Twisted's parser's).
    """
    return ":".join(f"{group:x}" for group in struct.unpack("!8H", packed))


def parseV2(header: bytes) -> ProxyHeader:
    """
    Read a complete v2 header (as long as its length field says).  TLVs are
    not read.

    @raise ProxyHeaderError: C{header} is not a valid v2 header
        (L{v2HeaderProblem} says why).
    """
    problem = v2HeaderProblem(header)
    if problem is not None:
        raise ProxyHeaderError(problem)
    command = header[12] & 0xF
    family, transport = header[13] >> 4, header[13] & 0xF
    if command == 0 or family == 0 or transport == 0:
        return ProxyHeader(header, None, None)  # LOCAL, or UNSPEC: no client named
    if family == 0x3:
        sourcePath, destinationPath = struct.unpack_from("!108s108s", header, 16)
        return ProxyHeader(
            header, UNIXAddress(sourcePath.rstrip(b"\0")), UNIXAddress(destinationPath.rstrip(b"\0"))
        )
    kind: Literal["TCP", "UDP"] = "UDP" if transport == 2 else "TCP"
    if family == 0x1:
        source, destination, sourcePort, destinationPort = struct.unpack_from("!4s4sHH", header, 16)
        return ProxyHeader(
            header,
            IPv4Address(kind, socket.inet_ntop(socket.AF_INET, source), sourcePort),
            IPv4Address(kind, socket.inet_ntop(socket.AF_INET, destination), destinationPort),
        )
    source, destination, sourcePort, destinationPort = struct.unpack_from("!16s16sHH", header, 16)
    return ProxyHeader(
        header,
        IPv6Address(kind, _ipv6Text(source), sourcePort),
        IPv6Address(kind, _ipv6Text(destination), destinationPort),
    )


class ProxyHeaderReader:
    """
    Reads the PROXY header that opens a connection, fed the connection's
    bytes as they arrive, split anywhere.

    The version is decided once, on the first bytes (L{undecided} says when
    there are enough): v2 on its signature and version, v1 on C{PROXY}.
    A v1 header ends at the first CRLF, within 107 bytes; a v2 header is
    as long as its length field says (at most 16 + 65535 bytes, gathered
    without copying what came before at each read).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._version = 0

    def feed(self, data: bytes) -> tuple[ProxyHeader, bytes] | None:
        """
        Read C{data}, the connection's next bytes.

        @return: once the header is complete, the header and the bytes that
            followed it (the payload's start, maybe empty); C{None} while
            more bytes are needed.  Feed nothing more after either outcome.
        @raise ProxyHeaderError: the bytes so far are not, and cannot begin,
            a valid header; its reason is one line for the log.
        """
        buffer = self._buffer
        buffer += data
        version = self._version
        if not version:
            head = bytes(buffer[:_V2_DECIDES])
            if undecided(head):
                return None
            if len(head) >= _V2_DECIDES and head.startswith(V2_SIGNATURE) and head[12] >> 4 == 2:
                version = 2
            elif len(head) >= _V1_DECIDES and head.startswith(V1_SIGNATURE):
                version = 1
            else:
                raise ProxyHeaderError("invalid PROXY header")
            self._version = version
        if version == 1:
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > _V1_LONGEST:
                    raise ProxyHeaderError("invalid PROXY header")
                return None
            return parseV1(bytes(buffer[:end])), bytes(buffer[end + 2 :])
        size = _V2_DECIDES + int.from_bytes(buffer[14:16], "big")
        if len(buffer) < size:
            return None
        return parseV2(bytes(buffer[:size])), bytes(buffer[size:])
