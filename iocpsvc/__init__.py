"""
iocpsvc: the architecture of the Delphi IOCP socket-server frameworks (DIOCP,
HP-Socket) as a Twisted plugin package.

DIOCP's names, and iocpsvc's:

  - TIocpObject: L{iocpsvc.service.SocketServerService}
  - TIocpClientContext: L{iocpsvc.context.ConnectionContext}
  - TIocpClientContextFactory: L{iocpsvc.factory.ConnectionContextFactory}
  - TIocpDecoder/TIocpEncoder: L{iocpsvc.interfaces.IDecoder} / L{IEncoder}
"""

import importlib
from typing import Any

from iocpsvc._version import __version__ as __version__
from iocpsvc.codecs import Codec, parseCodecSpec
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import (
    CLOSE_REASONS,
    FRAME_TOO_LONG,
    HANDLER_ERROR,
    IDLE,
    LOCAL,
    NO_DESCRIPTORS,
    PEER,
    PROTOCOL_ERROR,
    REFUSED,
    SHUTDOWN,
    SLOW_CLIENT,
    ChecksumMismatch,
    CodecSpecError,
    CorruptFrame,
    DecodeError,
    EncodeError,
    FrameTooLong,
)
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.interfaces import ICodecPlugin, IContextHost, IDecoder, IEncoder, IObjectDecoder
from iocpsvc.limits import ServerLimits
from iocpsvc.service import SocketServerService

# Loaded on first use, so that a server pays only for what it uses (the
# client side, the test helpers, the thread pool, twisted.web).
_LAZY = {
    "connect": "iocpsvc.client",
    "reconnectingClient": "iocpsvc.client",
    "RequestContext": "iocpsvc.client",
    "EmbeddedConnection": "iocpsvc.testing",
    "inThreadPool": "iocpsvc.threads",
    "MonitorService": "iocpsvc.monitor.web",
    "MonitorLimits": "iocpsvc.monitor.site",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "CLOSE_REASONS",
    "FRAME_TOO_LONG",
    "HANDLER_ERROR",
    "IDLE",
    "LOCAL",
    "NO_DESCRIPTORS",
    "PEER",
    "PROTOCOL_ERROR",
    "REFUSED",
    "SHUTDOWN",
    "SLOW_CLIENT",
    "ChecksumMismatch",
    "Codec",
    "CodecSpecError",
    "ConnectionContext",
    "ConnectionContextFactory",
    "CorruptFrame",
    "DecodeError",
    "EmbeddedConnection",
    "EncodeError",
    "FrameTooLong",
    "ICodecPlugin",
    "IContextHost",
    "IDecoder",
    "IEncoder",
    "IObjectDecoder",
    "MonitorLimits",
    "MonitorService",
    "RequestContext",
    "ServerLimits",
    "SocketServerService",
    "connect",
    "inThreadPool",
    "parseCodecSpec",
    "reconnectingClient",
]
