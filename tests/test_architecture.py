"""
Tests for the shape of the package (docs/architecture.rst): imports go one
way, from a higher layer to a lower one, with no circle; codecs import only
the contracts and their own helpers; only the assembly imports the worker
processes; no module grows past about 600 lines without saying why.
"""

from __future__ import annotations

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "iocpsvc"

# The layers, lowest first: a module may import its own layer's modules and
# lower ones (a package's modules are matched by prefix).
LAYERS: tuple[tuple[str, ...], ...] = (
    # 0: the contracts and what knows the outside world, importing no
    # other layer
    (
        "iocpsvc._version",
        "iocpsvc.errors",
        "iocpsvc.interfaces",
        "iocpsvc.accel",
        "iocpsvc.units",
        "iocpsvc.logs",
        "iocpsvc.addresses",
        "iocpsvc.transports",
        "iocpsvc.cluster",
        "iocpsvc.counters",
    ),
    # 1: wire formats, limits, the machine
    ("iocpsvc.codecs", "iocpsvc.limits", "iocpsvc.machine", "iocpsvc.proxyheader"),
    # 2: one connection
    ("iocpsvc.context", "iocpsvc.proxy", "iocpsvc.native"),
    # 3: what builds on a connection
    ("iocpsvc.accept", "iocpsvc.apps", "iocpsvc.threads", "iocpsvc.config", "iocpsvc.request"),
    # 4: the context factory
    ("iocpsvc.factory",),
    # 5: services and sides of it
    (
        "iocpsvc.service",
        "iocpsvc.testing",
        "iocpsvc.client",
        "iocpsvc.cluster.resp",
        "iocpsvc.cluster.redis",
        "iocpsvc.monitor.stats",
        "iocpsvc.monitor.prometheus",
        "iocpsvc.monitor.site",
    ),
    # 6: the monitor's server, the load tool, the worker processes
    ("iocpsvc.monitor", "iocpsvc.bench", "iocpsvc.workers"),
    # 7: the assembly, then the command line and the package's names
    ("iocpsvc.assembly",),
    ("iocpsvc.tap", "iocpsvc"),
)


def moduleName(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


MODULES = {moduleName(path): path for path in PACKAGE.rglob("*.py")}


def layerOf(module: str) -> int:
    """The layer of C{module}: the longest prefix listed decides."""
    best, found = -1, -1
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), index
    if found < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return found


def importsOf(module: str) -> set[str]:
    """The iocpsvc modules C{module} imports (anywhere but under TYPE_CHECKING)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            skipped.update(id(sub) for sub in ast.walk(node))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("iocpsvc"):
            targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names if alias.name.startswith("iocpsvc")]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
                break
    return found


GRAPH = {module: importsOf(module) for module in MODULES}


class LayerTests(SynchronousTestCase):
    """Imports go down the layers."""

    def test_everyModuleHasALayer(self) -> None:
        """Each module of the package is placed in a layer."""
        for module in MODULES:
            layerOf(module)

    def test_noImportUpward(self) -> None:
        """No module imports a module of a higher layer."""
        upward = [
            f"{module} -> {target}"
            for module, targets in GRAPH.items()
            for target in targets
            if layerOf(target) > layerOf(module)
        ]
        self.assertEqual(upward, [])

    def test_noCircle(self) -> None:
        """The import graph has no circle."""
        state: dict[str, int] = {}
        circles: list[str] = []

        def visit(module: str, path: list[str]) -> None:
            state[module] = 1
            for target in sorted(GRAPH[module]):
                if state.get(target) == 1:
                    circles.append(" -> ".join([*path[path.index(target) :], target]))
                elif target not in state:
                    visit(target, [*path, target])
            state[module] = 2

        for module in sorted(GRAPH):
            if module not in state:
                visit(module, [module])
        self.assertEqual(circles, [])

    def test_codecsImportOnlyContracts(self) -> None:
        """
        A codec imports the contracts (interfaces, errors), the units, other
        codecs and the switch to its compiled twin (accel) only.
        """
        allowed = ("iocpsvc.interfaces", "iocpsvc.errors", "iocpsvc.units", "iocpsvc.codecs", "iocpsvc.accel")
        strays = [
            f"{module} -> {target}"
            for module, targets in GRAPH.items()
            if module.startswith("iocpsvc.codecs")
            for target in targets
            if not target.startswith(allowed)
        ]
        self.assertEqual(strays, [])

    def test_onlyTheAssemblyImportsWorkers(self) -> None:
        """Outside iocpsvc.workers, only the assembly imports it."""
        importers = sorted(
            module
            for module, targets in GRAPH.items()
            if not module.startswith("iocpsvc.workers")
            and any(target.startswith("iocpsvc.workers") for target in targets)
        )
        self.assertEqual(importers, ["iocpsvc.assembly"])

    def test_contextKnowsNoFactory(self) -> None:
        """The context knows its host only through the IContextHost interface."""
        self.assertNotIn("iocpsvc.factory", GRAPH["iocpsvc.context"])
        self.assertNotIn("iocpsvc.proxy", GRAPH["iocpsvc.context"])


class SizeTests(SynchronousTestCase):
    """Modules stay readable."""

    def test_longModulesSayWhy(self) -> None:
        """A module over 600 lines says why in its docstring (a paragraph starting 'Long:')."""
        unexplained = []
        for module, path in MODULES.items():
            text = path.read_text()
            if text.count("\n") > 600:
                docstring = ast.get_docstring(ast.parse(text)) or ""
                if "Long:" not in docstring:
                    unexplained.append(f"{module} ({text.count(chr(10))} lines)")
        self.assertEqual(unexplained, [])
