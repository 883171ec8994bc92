"""
iocpsvc: the architecture of the Delphi IOCP socket-server frameworks (DIOCP,
HP-Socket) as a Twisted plugin package.

========================  =================================================
DIOCP                     iocpsvc
========================  =================================================
TIocpObject               L{iocpsvc.service.SocketServerService}
TIocpClientContext        L{iocpsvc.context.ConnectionContext}
TIocpClientContextFactory L{iocpsvc.factory.ConnectionContextFactory}
TIocpDecoder/TIocpEncoder L{iocpsvc.interfaces.IDecoder} / L{IEncoder}
========================  =================================================
"""

from iocpsvc.codecs import Codec, parseCodecSpec
from iocpsvc.context import ConnectionContext
from iocpsvc.errors import (
    ChecksumMismatch,
    CodecSpecError,
    CorruptFrame,
    DecodeError,
    EncodeError,
    FrameTooLong,
)
from iocpsvc.factory import ConnectionContextFactory
from iocpsvc.interfaces import ICodecPlugin, IDecoder, IEncoder, IObjectDecoder
from iocpsvc.service import SocketServerService

__version__ = "0.1.0"

__all__ = [
    "ChecksumMismatch",
    "Codec",
    "CodecSpecError",
    "ConnectionContext",
    "ConnectionContextFactory",
    "CorruptFrame",
    "DecodeError",
    "EncodeError",
    "FrameTooLong",
    "ICodecPlugin",
    "IDecoder",
    "IEncoder",
    "IObjectDecoder",
    "SocketServerService",
    "parseCodecSpec",
]
