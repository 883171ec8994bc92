"""
A worker's log in its parent's: the lines a worker process writes to its
standard output and error (Twisted's text log format) are logged again by
the parent as C{worker N: [source] text}, at the level the worker logged
them, so that a worker's warnings and errors stay warnings and errors.
"""

from __future__ import annotations

import re

from twisted.logger import InvalidLogLevelError, Logger, LogLevel

_log = Logger(namespace="iocpsvc.workers")

_LOG_LINE = re.compile(rb"^(?:\d{4}-\d\d-\d\dT\S+ )?(?:\[([^\]#]*)#(\w+)\] )?(.*)$", re.S)
_LOG_TAIL_LIMIT = 64 * 1024


class WorkerLogRelay:
    """
    Re-logs the output of worker C{index}, one event per line.

    @ivar pid: the worker's process id, added to each event (once known).
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.pid: int | None = None
        self._tail: dict[int, bytes] = {1: b"", 2: b""}
        self._lastLevel: LogLevel | None = None
        self._lastSource = "-"

    def dataReceived(self, fd: int, data: bytes) -> None:
        """Bytes the worker wrote to C{fd} (1 or 2): log each complete line."""
        lines = (self._tail.get(fd, b"") + data).split(b"\n")
        tail = lines.pop()
        if len(tail) > _LOG_TAIL_LIMIT:
            # No newline in sight: pass on what came, rather than hold it all.
            lines.append(tail)
            tail = b""
        self._tail[fd] = tail
        for line in lines:
            self._relay(line)

    def flush(self) -> None:
        """The worker is gone: log what it wrote after its last newline."""
        for fd, tail in self._tail.items():
            if tail:
                self._relay(tail)
            self._tail[fd] = b""

    def _relay(self, line: bytes) -> None:
        line = line.rstrip(b"\r")
        if line.startswith(b"\t") and self._lastLevel is not None:
            # Twisted writes the rest of a multi-line event (a traceback)
            # on lines that start with a tab: they belong to the event above.
            level, source, text = self._lastLevel, self._lastSource, line
        else:
            match = _LOG_LINE.match(line)
            if match is None:  # pragma: no cover - the pattern matches anything
                return
            namespace, levelName, text = match.groups()
            level = LogLevel.info
            if levelName:
                try:
                    level = LogLevel.levelWithName(levelName.decode("ascii"))
                except (InvalidLogLevelError, UnicodeDecodeError):
                    pass
            source = (namespace or b"-").decode("utf-8", "replace")
            self._lastLevel, self._lastSource = level, source
        if not text:
            return
        # The worker's own level, so that its warnings and errors stay
        # warnings and errors in the parent's log.
        _log.emit(
            level,
            "worker {worker}: [{source}] {line}",
            worker=self.index,
            source=source,
            line=text.decode("utf-8", "replace"),
            pid=self.pid,
        )
