"""
Tests for the whole package's source (L{iocpsvc} and its Twisted plugin),
and the checkout's tests, benchmarks and examples: none imports a private
Twisted module, so that a new Twisted release can only break it through
Twisted's public, deprecation-policed API.

A private module is one with a name part starting with C{_}
(C{twisted.protocols.haproxy._wrapper}), also when a string names it
(C{sys.modules.get(...)}, C{importlib.import_module(...)}); a private name is one imported
from a Twisted module that starts with C{_} (C{from twisted.internet.endpoints
import _WrapperServerEndpoint}).  Found by reading each source file's
syntax tree, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import iocpsvc

PACKAGE = Path(iocpsvc.__file__).parent
PLUGIN = PACKAGE.parent / "twisted" / "plugins" / "iocpsvc_plugin.py"

DOTTED = re.compile(r"twisted(\.\w+)+")

# Private Twisted names the package may not do without, each with why.
# Empty: keep it so, or say here why an entry cannot be avoided.
ALLOWED: dict[str, str] = {}


def isPrivateTwisted(module: str) -> bool:
    """Whether C{module} (a dotted name) is Twisted's and has a private part."""
    parts = module.split(".")
    return parts[0] == "twisted" and any(part.startswith("_") and not part.startswith("__") for part in parts)


def privateImports(source: str, filename: str = "<source>") -> list[str]:
    """
    The private Twisted modules and names that C{source} imports, as
    C{"line: module"} or C{"line: module.name"}.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: {a.name}" for a in node.names if isPrivateTwisted(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not node.module.split(".")[0] == "twisted":
                continue
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                if isPrivateTwisted(name):
                    found.append(f"{node.lineno}: {name}")
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and DOTTED.fullmatch(node.value)
            and isPrivateTwisted(node.value)
        ):
            # A module named in a string: importlib.import_module(...),
            # sys.modules.get(...), a plugin or endpoint path.
            found.append(f"{node.lineno}: {node.value}")
    return found


CHECKOUT = Path(__file__).resolve().parent.parent


def sources() -> list[Path]:
    """
    The package's Python files and its Twisted plugin; and the checkout's
    tests, benchmarks and examples (all but this file, whose strings name
    private modules on purpose).
    """
    others = [
        path
        for folder in ("tests", "benchmarks", "examples")
        for path in sorted((CHECKOUT / folder).rglob("*.py"))
        if path.resolve() != Path(__file__).resolve()
    ]
    return sorted(PACKAGE.rglob("*.py")) + [PLUGIN] + others


class PrivateImportTests(SynchronousTestCase):
    """No module of the package imports a private Twisted module or name."""

    def test_noPrivateTwistedImports(self) -> None:
        """Every source file of the package imports only Twisted's public modules and names."""
        files = sources()
        self.assertGreater(len(files), 20)
        offences = []
        for path in files:
            for found in privateImports(path.read_text(encoding="utf-8"), str(path)):
                name = found.split(": ", 1)[1]
                if name not in ALLOWED:
                    offences.append(f"{path}:{found}")
        self.assertEqual(offences, [])

    def test_detects(self) -> None:
        """The check finds each way of importing a private Twisted module or name."""
        source = "\n".join(
            [
                "import twisted.protocols.haproxy._wrapper",
                "from twisted.protocols.haproxy._info import ProxyInfo",
                "from twisted.protocols.haproxy import _v1parser",
                "from twisted.internet.endpoints import _WrapperServerEndpoint",
                "def f():",
                "    from twisted.python import _pydoctor",
                "importlib.import_module('twisted.web._flatten')",
                "sys.modules.get('twisted.protocols.haproxy._wrapper')",
                "'''A docstring naming twisted.web._flatten is no import.'''",
            ]
        )
        self.assertEqual(
            privateImports(source),
            [
                "1: twisted.protocols.haproxy._wrapper",
                "2: twisted.protocols.haproxy._info.ProxyInfo",
                "3: twisted.protocols.haproxy._v1parser",
                "4: twisted.internet.endpoints._WrapperServerEndpoint",
                "6: twisted.python._pydoctor",
                "7: twisted.web._flatten",
                "8: twisted.protocols.haproxy._wrapper",
            ],
        )

    def test_publicPasses(self) -> None:
        """
        Public modules and names pass, under any local alias, and so do
        private modules of other packages and relative imports.
        """
        source = "\n".join(
            [
                "import twisted.internet.address as _address",
                "from twisted.protocols.haproxy import proxyEndpoint",
                "from twisted.internet.protocol import Protocol as _P, __doc__",
                "from OpenSSL._util import ffi",
                "from ._version import __version__",
                "from iocpsvc import _speedups",
            ]
        )
        self.assertEqual(privateImports(source), [])
