"""
What Twisted's transports tell about themselves, read the same way
everywhere: the unsent bytes behind a connection, a pipe to a worker
process, or a link to Redis.
"""

from __future__ import annotations

from typing import Any


def unsentBytes(transport: Any) -> int | None:
    """
    Bytes handed to C{transport} and not yet written to its descriptor,
    for Twisted's own descriptor-based transports (TCP, pipes, standard
    I/O); C{None} for a transport that does not tell (TLS, IOCP, wrappers).
    """
    data = getattr(transport, "dataBuffer", None)
    if data is None:
        return None
    return len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
