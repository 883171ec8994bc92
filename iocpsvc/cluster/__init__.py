"""
Cross-node messaging: the pieces every L{IClusterBus} shares.

A context id carries the id of the node that holds its socket::

    context id (int):  node id (21 bits)  | sequence on that node (32 bits)
                       contextId >> 32    | contextId & 0xFFFFFFFF

so C{sendTo(contextId, obj)} knows where to send without asking anyone,
and ids stay below 2**53 (exact in JSON and JavaScript).  A standalone
server is node 0: its ids are 1, 2, 3, ...

Every bus message is one header and the payload (bytes already encoded by
the sending node's encoder)::

    offset  0      1               5                       13
            +------+---------------+-----------------------+-----------+
            | kind | origin node   | context id            | payload   |
            | 1 B  | u32 big-end.  | u64 big-endian        | ...       |
            +------+---------------+-----------------------+-----------+

    kind b"B": broadcast; context id = the one context not to write to (0: none)
    kind b"T": to one context; context id = that context

A node ignores broadcasts from itself (it has delivered them locally).
"""

from __future__ import annotations

import random
import struct
from typing import Any
from urllib.parse import urlsplit, urlunsplit

NODE_SHIFT = 32
"""Bits of a context id below its node id."""

MAX_NODE_ID = (1 << 21) - 1
"""The largest node id (keeps context ids below 2**53)."""

BROADCAST = b"B"
TO_CONTEXT = b"T"

_HEADER = struct.Struct(">cIQ")
HEADER_SIZE = _HEADER.size


def nodeOfContext(contextId: int) -> int:
    """The id of the node that holds context C{contextId}."""
    return contextId >> NODE_SHIFT


def firstContextId(nodeId: int) -> int:
    """The first context id of node C{nodeId}."""
    return (nodeId << NODE_SHIFT) + 1


MAX_CONTEXT_ID = ((MAX_NODE_ID + 1) << NODE_SHIFT) - 1
"""The largest context id of any node (below 2**53)."""


def lastContextId(nodeId: int) -> int:
    """The last context id of node C{nodeId}, after which its ids start again."""
    return ((nodeId + 1) << NODE_SHIFT) - 1


def randomNodeId() -> int:
    """
    A node id for a node that was not given one: random, so that nodes
    started alike do not collide (two nodes among ten share one with a
    chance of about 1 in 46,000; give C{--node-id} to rule it out).
    """
    return random.SystemRandom().randint(1, MAX_NODE_ID)


def checkNodeId(nodeId: int) -> int:
    """C{nodeId} if it is a valid node id, else L{ValueError}."""
    if not 1 <= nodeId <= MAX_NODE_ID:
        raise ValueError(f"node id must be from 1 to {MAX_NODE_ID}, not {nodeId}")
    return nodeId


def packMessage(kind: bytes, origin: int, contextId: int, payload: bytes) -> bytes:
    """One bus message (see the module docstring)."""
    return _HEADER.pack(kind, origin, contextId) + payload


def unpackMessage(message: bytes) -> tuple[bytes, int, int, bytes]:
    """
    C{(kind, origin, contextId, payload)} of one bus message.

    @raise ValueError: too short or of an unknown kind.
    """
    if len(message) < HEADER_SIZE:
        raise ValueError(f"cluster message of {len(message)} bytes is shorter than its header")
    kind, origin, contextId = _HEADER.unpack_from(message)
    if kind not in (BROADCAST, TO_CONTEXT):
        raise ValueError(f"unknown cluster message kind {kind!r}")
    return kind, origin, contextId, message[HEADER_SIZE:]


def deliver(receiver: Any, nodeId: int, message: bytes) -> bool:
    """
    Hand one bus message to C{receiver} (an L{IClusterReceiver}) unless it
    is this node's own broadcast.

    @return: whether it was for this node.
    @raise ValueError: a malformed message.
    """
    kind, origin, contextId, payload = unpackMessage(message)
    if kind == BROADCAST:
        if origin == nodeId:
            return False
        receiver.deliverBroadcast(payload, contextId)
        return True
    if nodeOfContext(contextId) != nodeId:
        return False
    receiver.deliverTo(contextId, payload)
    return True


def redactURL(url: str) -> str:
    """
    C{url} fit for a log line or a page: a password in it becomes C{***}
    (C{rediss://app:***@cache:6380/2}); the rest is kept.  A URL that does
    not parse is returned with everything before its last C{@} cut.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}" if "@" in rest else url
