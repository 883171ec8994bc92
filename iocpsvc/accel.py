"""
Which implementation of the hot path runs: the compiled accelerator
(C{iocpsvc._speedups}, a CPython C extension built by C{pip install .}
wherever a C compiler is present) or the pure-Python code it mirrors.

The accelerator covers the framing loops of the built-in framers and the
batch encoding of their encoders.  Everything else, and every error path,
is the pure-Python code: when the compiled loop meets a frame it would
reject, it hands the rest of the read to the pure decoder, which raises the
same error with the same words.

Setting C{IOCPSVC_NO_EXTENSIONS} to a non-empty value other than C{0}
before the process starts forces pure Python (as aiohttp's
C{AIOHTTP_NO_EXTENSIONS} does).  Codecs choose their implementation when
they are built (L{iocpsvc.codecs.parseCodecSpec}), so a factory keeps the
one it was built with.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

ENVIRONMENT_VARIABLE = "IOCPSVC_NO_EXTENSIONS"


def _disabled() -> bool:
    return os.environ.get(ENVIRONMENT_VARIABLE, "") not in ("", "0")


def _loadIgnoringEnvironment() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("iocpsvc._speedups"), ""
    except ImportError as e:
        return None, f"the compiled accelerator is not built ({e})"


def _load() -> tuple[ModuleType | None, str]:
    """The accelerator module, or None and why it is not used."""
    if _disabled():
        return None, f"{ENVIRONMENT_VARIABLE} is set"
    return _loadIgnoringEnvironment()


speedups, unavailableReason = _load()
"""
The C{iocpsvc._speedups} module, or C{None} when pure Python runs (and
C{unavailableReason} says why).  Codec builders read it when they build.
"""


def implementation() -> str:
    """C{'compiled'} or C{'python'}: what codecs built now will use."""
    return "python" if speedups is None else "compiled"


def describe() -> str:
    """One phrase for the start log: the implementation and, if pure, why."""
    if speedups is None:
        return f"pure Python ({unavailableReason or 'chosen by the caller'})"
    return "compiled (iocpsvc._speedups)"


@contextmanager
def using(name: str) -> Iterator[None]:
    """
    Build codecs with the named implementation (C{'compiled'} or
    C{'python'}) inside the block: for tests, which run both in one process.

    @raise RuntimeError: C{'compiled'} is asked for and not available.
    """
    global speedups
    saved = speedups
    if name == "python":
        speedups = None
    elif name == "compiled":
        if saved is None:
            loaded, why = _loadIgnoringEnvironment()
            if loaded is None:
                raise RuntimeError(f"the compiled implementation is not available: {why}")
            speedups = loaded
    else:
        raise ValueError(f"no implementation {name!r} (compiled or python)")
    try:
        yield
    finally:
        speedups = saved


def isCompiled(obj: object) -> bool:
    """Whether C{obj} is one of the accelerator's compiled decoders or encoders."""
    return any(cls.__module__ == "iocpsvc._speedups" for cls in type(obj).__mro__)


def describeHotPath(decoder: object, encoder: object) -> str:
    """
    For the start log: which implementation a factory's decoder (or, in a
    chain, its framer) and encoder run.
    """
    framer = getattr(decoder, "_framer", decoder)
    if isCompiled(framer):
        if isCompiled(encoder):
            return "compiled framing and batch encoding (iocpsvc._speedups)"
        return "compiled framing (iocpsvc._speedups), per-object encoding"
    if speedups is None:
        return describe()
    return "pure Python (this codec has no compiled twin)"


def compiledAvailable() -> bool:
    """Whether the compiled accelerator can be imported (whatever the environment says)."""
    return _loadIgnoringEnvironment()[0] is not None
