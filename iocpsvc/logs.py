"""
Rate-limited logging, so that a flood of bad clients produces a trickle of
log lines (and a count of what was left out), never a storm.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure


class RateLimitedLog:
    """
    Emit at most C{burst} events per C{interval} seconds; count the rest and
    report how many were suppressed with the next event that gets through.

    @ivar suppressed: events dropped since the last one emitted.
    @ivar suppressedTotal: events dropped over the lifetime of this log.
    """

    def __init__(
        self,
        logger: Logger,
        seconds: Callable[[], float],
        burst: int = 10,
        interval: float = 1.0,
    ) -> None:
        self._logger = logger
        self._seconds = seconds
        self.burst = burst
        self.interval = interval
        self._windowStart = float("-inf")
        self._emitted = 0
        self.suppressed = 0
        self.suppressedTotal = 0

    def _allow(self) -> bool:
        now = self._seconds()
        if now - self._windowStart >= self.interval:
            self._windowStart = now
            self._emitted = 0
        if self._emitted >= self.burst:
            self.suppressed += 1
            self.suppressedTotal += 1
            return False
        self._emitted += 1
        return True

    def _fields(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["suppressed"] = self.suppressed
        self.suppressed = 0
        return kwargs

    def _format(self, format: str) -> str:
        if self.suppressed:
            return format + " ({suppressed} similar events suppressed)"
        return format

    def warn(self, format: str, **kwargs: Any) -> None:
        """Log a warning, unless over the rate."""
        if self._allow():
            self._logger.warn(self._format(format), **self._fields(kwargs))

    def info(self, format: str, **kwargs: Any) -> None:
        """Log an informational event, unless over the rate."""
        if self._allow():
            self._logger.info(self._format(format), **self._fields(kwargs))

    def failure(self, format: str, failure: Failure, **kwargs: Any) -> None:
        """Log an error with its traceback, unless over the rate."""
        if self._allow():
            self._logger.failure(self._format(format), failure, **self._fields(kwargs))
