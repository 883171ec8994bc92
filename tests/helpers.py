"""Small helpers and fixtures shared by the test modules."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc import accel
from iocpsvc.codecs import encodedBytes as joinEncoded
from iocpsvc.codecs import parseCodecSpec


def feedChunks(decoder: Any, chunks: Iterable[bytes]) -> list[object]:
    """
    Feed C{chunks} to C{decoder} the way a context does (append to one
    buffer, decode, drop what was consumed) and return every object.
    """
    buffer = bytearray()
    out: list[object] = []
    for chunk in chunks:
        buffer += chunk
        consumed = decoder.decode(buffer, out)
        del buffer[:consumed]
    return out


def decodeOnce(decoder: Any, data: bytes | bytearray) -> tuple[list[object], int]:
    """Decode C{data} in one call; return the objects and the count consumed."""
    out: list[object] = []
    consumed = decoder.decode(data, out)
    return out, consumed


def encodedBytes(encoded: object) -> bytes:
    """
    Join what an L{IEncoder} returned (one C{bytes}, or a list or tuple of
    chunks) into the bytes that go on the wire, checking it is one of those.
    """
    assert isinstance(encoded, (bytes, list, tuple)), encoded
    return joinEncoded(encoded)


def encodeFrames(spec: str, objects: Iterable[object]) -> bytes:
    """The wire bytes of C{objects}, encoded in order by the codec C{spec}."""
    encode = parseCodecSpec(spec).encoder.encode
    return b"".join(encodedBytes(encode(obj)) for obj in objects)


def frame(payload: bytes) -> bytes:
    """C{payload} framed by the default codec (C{length}: 4-byte big-endian length)."""
    return struct.pack(">I", len(payload)) + payload


def cutAt(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """
    Cut C{data} into chunks at the positions C{cuts} (any order; taken modulo
    C{len(data) + 1}, so arbitrary integers from a property test will do).
    """
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:stop] for start, stop in zip(points, points[1:], strict=False)]


def startServer(
    testCase: Any,
    codec: str | None = None,
    contextClass: Any = None,
    clock: Any = None,
    listen: str = "tcp:0:interface=127.0.0.1",
    **limits: Any,
) -> tuple[Any, int, Any]:
    """
    Start a L{SocketServerService} on C{listen} (127.0.0.1, a free port)
    with a factory of C{contextClass} (the echo by default), C{codec} and
    C{limits}, timed by C{clock} if given (the sockets stay on the global
    reactor); it is stopped after C{testCase}.

    @return: the factory, the port, the service.
    """
    from twisted.internet import reactor

    from iocpsvc.apps import EchoContext
    from iocpsvc.factory import ConnectionContextFactory
    from iocpsvc.limits import ServerLimits
    from iocpsvc.service import SocketServerService

    factory = ConnectionContextFactory(
        contextClass or EchoContext, codec, reactor=clock or reactor, limits=ServerLimits(**limits)
    )
    service = SocketServerService(factory, [listen], reactor=reactor, shutdownTimeout=5)
    service.startService()
    testCase.addCleanup(lambda: service.stopService() if service.running else None)
    return factory, service.ports[0].getHost().port, service


class PurePython:
    """
    Mixed before a test case: its tests run with codecs built by the
    pure-Python implementation (L{iocpsvc.accel.using}), whatever the
    accelerator.  See L{bothImplementations}.
    """

    def run(self, result: Any) -> Any:
        with accel.using("python"):
            return super().run(result)  # type: ignore[misc]


def bothImplementations(namespace: dict[str, Any]) -> None:
    """
    Called at the end of a test module: every test case class defined in it
    gets a twin, C{<name>Pure}, that runs the same tests on the pure-Python
    implementation (L{PurePython}); the class itself runs on the default
    one, compiled wherever the accelerator is built (C{.ci/run} makes sure
    it is: tests.test_accel fails there without it).
    """
    module = namespace["__name__"]
    for name, value in list(namespace.items()):
        if (
            isinstance(value, type)
            and issubclass(value, SynchronousTestCase)
            and value.__module__ == module
            and not issubclass(value, PurePython)
        ):
            twin = type(
                name + "Pure",
                (PurePython, value),
                {"__module__": module, "__doc__": f"{name}, on the pure-Python implementation."},
            )
            twin.__qualname__ = twin.__name__
            namespace[twin.__name__] = twin


def haproxyWrappingFactory(factory: Any) -> Any:
    """
    The wrapping factory Twisted's C{haproxy:} endpoint puts around
    C{factory} (through its public C{proxyEndpoint}: the class itself is in
    a private module).
    """
    given: list[Any] = []

    class Recorder:
        def listen(self, wrapping: Any) -> Any:
            given.append(wrapping)
            return succeed(None)

    from twisted.protocols.haproxy import proxyEndpoint

    proxyEndpoint(Recorder()).listen(factory)  # type: ignore[arg-type]
    return given[0]
