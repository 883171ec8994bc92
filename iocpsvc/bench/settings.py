"""
What a load run does: L{LoadSettings}, read by every part of the load tool
(the command line builds it; a load run, the parent of several load
processes and the report read it).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9983

CLOSE_GRACE = 5.0
"""
How long closing connections may take after the drain before they are
aborted and the run ends anyway, in seconds.
"""


@dataclass
class LoadSettings:
    """
    What a run does; see the command-line help for each field's meaning.

    @raise ValueError: a value is out of range.
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    connections: int = 100
    inFlight: int = 32
    size: int = 64
    codec: str = "length"
    duration: float = 10.0
    warmup: float = 1.0
    drainTimeout: float = 5.0
    connectTimeout: float = 30.0
    connectBatch: int = 500
    progressInterval: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port}")
        if self.connections < 1:
            raise ValueError("connections must be at least 1")
        if self.inFlight < 1:
            raise ValueError("in-flight must be at least 1")
        if self.size < 0:
            raise ValueError("size must be >= 0")
        if self.duration <= 0:
            raise ValueError("duration must be > 0")
        if self.warmup < 0 or self.drainTimeout < 0:
            raise ValueError("warmup and drain timeout must be >= 0")
        if self.connectTimeout <= 0:
            raise ValueError("connect timeout must be > 0")
        if self.connectBatch < 1:
            raise ValueError("connect batch must be at least 1")
        if self.progressInterval <= 0:
            raise ValueError("progress interval must be > 0")

    def deadline(self) -> float:
        """The longest a run with these settings can take, in seconds."""
        return self.connectTimeout * 2 + self.warmup + self.duration + self.drainTimeout + CLOSE_GRACE
