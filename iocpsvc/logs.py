"""
Rate-limited logging, so that a flood of bad clients produces a trickle of
log lines (and a count of what was left out), never a storm.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure


class Reminders:
    """
    For conditions that last (a peer not reading, a bus down, a node id
    taken): when each was last reported, so that it is said once and then
    repeated at most once per C{interval} seconds while it goes on.
    """

    def __init__(self, seconds: Callable[[], float], interval: float = 60.0) -> None:
        self._seconds = seconds
        self.interval = interval
        self._lastSaid: dict[Hashable, float] = {}

    def said(self, topic: Hashable, now: float | None = None) -> None:
        """C{topic} was just reported (its reminders count from now)."""
        self._lastSaid[topic] = self._seconds() if now is None else now

    def due(self, topic: Hashable, now: float | None = None) -> bool:
        """Whether C{topic} is to be reported now (and if so, it counts as said)."""
        now = self._seconds() if now is None else now
        if now - self._lastSaid.get(topic, float("-inf")) < self.interval:
            return False
        self._lastSaid[topic] = now
        return True


class RateLimitedLog:
    """
    Emit at most C{burst} events of each kind per C{interval} seconds; count
    the rest and report how many were suppressed with the next event of
    that kind that gets through.  The kind is the format string, so a flood
    of refusals cannot hide a handler's traceback.

    A failure's traceback is logged once per C{tracebackInterval} seconds
    for each place it was raised from; in between, the same failure is a
    one-line event (still rate-limited), so a flood of connections hitting
    one bug writes its traceback once, not once per connection.

    @ivar suppressedTotal: events dropped over the lifetime of this log.
    """

    def __init__(
        self,
        logger: Logger,
        seconds: Callable[[], float],
        burst: int = 10,
        interval: float = 1.0,
        tracebackInterval: float = 60.0,
    ) -> None:
        self._logger = logger
        self._seconds = seconds
        self.burst = burst
        self.interval = interval
        self._tracebacks = Reminders(seconds, tracebackInterval)
        # kind -> [window start, emitted in window, suppressed since last]
        self._kinds: dict[str, list[float]] = {}
        self.suppressedTotal = 0

    def _admit(self, format: str, kwargs: dict[str, Any]) -> str | None:
        """The format to log with (mentioning what was suppressed), or None."""
        state = self._kinds.get(format)
        if state is None:
            state = self._kinds[format] = [float("-inf"), 0, 0]
        now = self._seconds()
        if now - state[0] >= self.interval:
            state[0] = now
            state[1] = 0
        if state[1] >= self.burst:
            state[2] += 1
            self.suppressedTotal += 1
            return None
        state[1] += 1
        suppressed = int(state[2])
        state[2] = 0
        kwargs["suppressed"] = suppressed
        if suppressed:
            return format + " ({suppressed} similar events suppressed)"
        return format

    def suppressed(self, format: str) -> int:
        """Events of this kind dropped since the last one logged."""
        state = self._kinds.get(format)
        return int(state[2]) if state else 0

    def warn(self, format: str, **kwargs: Any) -> None:
        """Log a warning, unless over the rate."""
        admitted = self._admit(format, kwargs)
        if admitted is not None:
            self._logger.warn(admitted, **kwargs)

    def info(self, format: str, **kwargs: Any) -> None:
        """Log an informational event, unless over the rate."""
        admitted = self._admit(format, kwargs)
        if admitted is not None:
            self._logger.info(admitted, **kwargs)

    def failure(self, format: str, failure: Failure, **kwargs: Any) -> None:
        """
        Log an error, unless over the rate: with its traceback the first
        time this failure is raised from its place (and again at most once
        per C{tracebackInterval}), as one line naming the exception
        otherwise.
        """
        admitted = self._admit(format, kwargs)
        if admitted is None:
            return
        if self._tracebacks.due((format, failureSignature(failure))):
            self._logger.failure(admitted, failure, level=LogLevel.error, **kwargs)
            return
        self._logger.error(
            admitted + ": {exceptionType}: {exceptionMessage} (traceback logged before)",
            exceptionType=failure.type.__name__ if isinstance(failure.type, type) else str(failure.type),
            exceptionMessage=failure.getErrorMessage(),
            **kwargs,
        )


def failureSignature(failure: Failure) -> tuple[str, str, int]:
    """
    Where a failure comes from: its exception type and the innermost frame
    of its traceback (file and line), the same for every connection that
    hits the same bug whatever the message says.
    """
    name = getattr(failure.type, "__qualname__", str(failure.type))
    frames = failure.frames
    if not frames:
        return (name, "", 0)
    innermost = frames[-1]
    return (name, str(innermost[1]), int(innermost[2]))
