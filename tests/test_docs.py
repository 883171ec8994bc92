"""
The documentation's build configuration and generated pages, without
building them (CI runs Sphinx on its own, with -W): docs/conf.py builds the
API reference with pydoctor over the iocpsvc package and links into Twisted
and Python through inventories committed under docs/inventories, never
fetched; the index links the reference; and the benchmark tables that pages
include have no cell that reST would read as a bullet list.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pathlib
import re
import sys
import zlib
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from benchmarks import compare
from tests.test_bench_compare import row

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TWISTED_API = "https://docs.twisted.org/en/stable/api"

BULLET_CELL = re.compile(r"^\s+(\* )?- [-*+](\s|$)", re.MULTILINE)
"""A list-table cell whose text starts with a bullet character: a nested list, not text."""


def sphinxConfiguration() -> dict[str, Any]:
    """The names docs/conf.py defines, as Sphinx reads them (it imports neither Sphinx nor iocpsvc)."""
    path = DOCS / "conf.py"
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": "conf"}
    saved = list(sys.path)
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    finally:
        sys.path[:] = saved
    return namespace


def readInventory(path: pathlib.Path) -> tuple[list[str], dict[str, str]]:
    """A Sphinx inventory's four header lines, and its names -> URIs."""
    lines = path.read_bytes().split(b"\n", 4)
    names = {}
    for line in zlib.decompress(lines[4]).decode("utf-8").splitlines():
        found = re.match(r"(\S+)\s+(\S+)\s+(-?\d+)\s+(\S+)\s+(.*)", line)
        if found:
            uri = found.group(4)
            names[found.group(1)] = uri.replace("$", found.group(1)) if uri.endswith("$") else uri
    return [line.decode("utf-8") for line in lines[:4]], names


class APIReferenceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.conf = sphinxConfiguration()
        self.args = self.conf["pydoctor_args"]

    def test_pydoctorOverThePackage(self) -> None:
        """pydoctor's Sphinx extension builds the API pages of the whole iocpsvc package into api/."""
        self.assertIn("pydoctor.sphinx_ext.build_apidocs", self.conf["extensions"])
        self.assertIn("sphinx.ext.intersphinx", self.conf["extensions"])
        self.assertEqual(self.args[-1], str(ROOT / "iocpsvc"))
        self.assertIn("--html-output={outdir}/api", self.args)
        self.assertIn("--docformat=epytext", self.args)
        self.assertEqual(self.conf["pydoctor_url_path"], "api/")
        self.assertEqual(self.conf["release"], self.conf["version"])
        self.assertTrue(self.conf["release"])

    def test_systemClass(self) -> None:
        """The pydoctor system class named in the arguments is where conf.py puts it on the path."""
        (systemClass,) = [a.partition("=")[2] for a in self.args if a.startswith("--system-class=")]
        module, _, name = systemClass.rpartition(".")
        source = (DOCS / "_ext" / f"{module}.py").read_text(encoding="utf-8")
        self.assertIn(f"class {name}(", source)

    def test_inventoriesAreLocal(self) -> None:
        """Every inventory pydoctor and Sphinx read is a committed file: the build never fetches one."""
        self.assertFalse([a for a in self.args if a.startswith("--intersphinx=")])
        files = [a.partition("=")[2].split("::") for a in self.args if a.startswith("--intersphinx-file=")]
        self.assertEqual(sorted(os.path.basename(path) for path, _ in files), ["python.inv", "twisted.inv"])
        for path, url in files:
            self.assertTrue(os.path.isfile(path), path)
            self.assertTrue(url.startswith("https://"), url)
        for name, (url, inventory) in self.conf["intersphinx_mapping"].items():
            self.assertTrue(url.startswith("https://"), name)
            self.assertTrue(os.path.isfile(inventory), inventory)
        self.assertEqual(self.conf["intersphinx_mapping"]["twisted"][0], TWISTED_API)

    def test_twistedInventory(self) -> None:
        """Twisted's inventory names the classes iocpsvc builds on, with their pages' addresses."""
        header, names = readInventory(DOCS / "inventories" / "twisted.inv")
        self.assertEqual(header[1], "# Project: Twisted")
        self.assertRegex(header[2], r"^# Version: \d+\.\d+")
        for name in (
            "twisted.internet.protocol.Protocol",
            "twisted.internet.interfaces.ITransport",
            "twisted.application.service.MultiService",
        ):
            self.assertEqual(names[name], f"{name}.html")
        self.assertFalse([name for name in names if ".test." in name])

    def test_pythonInventory(self) -> None:
        _, names = readInventory(DOCS / "inventories" / "python.inv")
        self.assertEqual(names["ValueError"], "library/exceptions.html#ValueError")

    def test_linkedFromTheIndex(self) -> None:
        """The index's table of contents names the reference, and its placeholder page exists."""
        index = (DOCS / "index.rst").read_text(encoding="utf-8")
        toctree = index[index.index(".. toctree::") :]
        self.assertIn("\n   api/index\n", toctree)
        self.assertTrue((DOCS / "api" / "index.rst").is_file())


class BenchmarkTablesTests(SynchronousTestCase):
    def results(self) -> dict[str, dict[str, dict[str, float]]]:
        """Made-up medians: every server in pipelined, not all in many-connections (no uvloop)."""

        # Latencies with more digits than the table prints, for the round trip.
        every = {
            kind: {**row(1000.0 * (i + 1), 1.0 + i), "p50_ms": 1.234, "p99_ms": 5.678}
            for i, kind in enumerate(compare.SERVERS)
        }
        return {
            "pipelined": every,
            "many-connections": {kind: every[kind] for kind in ("iocpsvc", "int32", "raw", "asyncio")},
        }

    def test_noBulletCells(self) -> None:
        """A server's ratio to itself, or to a peer that did not run, is a dash that is not a bullet."""
        text = compare.restructuredText(self.results(), 3, 8.0, {"iocpsvc": "compiled"})
        self.assertIsNone(BULLET_CELL.search(text), text)
        cells = [line.strip()[2:] for line in text.splitlines() if line.strip().startswith("- ")]
        self.assertIn(compare.MISSING, cells)
        self.assertFalse([cell for cell in cells if cell.startswith("-") or not cell], text)

    def test_onePerScenario(self) -> None:
        """One narrow table per scenario, captioned with what the scenario is."""
        text = compare.restructuredText(self.results(), 3, 8.0)
        captions = re.findall(r"^\.\. list-table:: (.*)$", text, re.MULTILINE)
        self.assertEqual(
            captions,
            [
                f"pipelined: {compare.SCENARIOS['pipelined'][1]}",
                f"many-connections: {compare.SCENARIOS['many-connections'][1]}",
            ],
        )
        header = text.split("   * - ")[1].splitlines()
        self.assertEqual(len(header), 5 + len(compare.RATIO_PEERS))
        self.assertNotIn("`python", text.replace("``python", ""))  # reST literals, not markdown's

    def test_fromMarkdown(self) -> None:
        """The docs' tables and chart can be drawn again from a markdown table, its ratio cells kept."""
        results = self.results()
        text = compare.markdown(results, 3, 8.0, {"iocpsvc": "compiled"})
        again, rounds, duration, ran, published = compare.resultsFromMarkdown(text)
        self.assertEqual((rounds, duration, ran), (3, 8.0, {"iocpsvc": "compiled"}))
        self.assertEqual(list(again), list(results))
        self.assertEqual(again["pipelined"]["uvloop"]["frames_per_second"], 7000.0)
        self.assertEqual(again["pipelined"]["iocpsvc"]["p99_ms"], 5.68)
        self.assertEqual(published["pipelined"]["iocpsvc"]["int32"], "0.25x, 0.25x")
        self.assertEqual(published["pipelined"]["int32"]["int32"], "")
        rst = compare.restructuredText(again, rounds, duration, ran, published)
        self.assertIsNone(BULLET_CELL.search(rst))
        self.assertIn("     - 0.25 / 0.25\n", rst)

    def test_committedIncludes(self) -> None:
        """The generated tables the pages include, as committed, have no bullet cell either."""
        for name in (
            "benchmarks-results.rst",
            "workers-results.rst",
            "hostile-results.rst",
            "decode-scaling.rst",
        ):
            text = (DOCS / name).read_text(encoding="utf-8")
            self.assertIsNone(BULLET_CELL.search(text), name)


def loadSystemModule() -> Any:
    """docs/_ext/iocpsvc_pydoctor.py, importable by its name as pydoctor imports its extensions."""
    spec = importlib.util.spec_from_file_location("iocpsvc_pydoctor", DOCS / "_ext" / "iocpsvc_pydoctor.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["iocpsvc_pydoctor"] = module
    spec.loader.exec_module(module)
    return module


class PydoctorSystemTests(SynchronousTestCase):
    """The pydoctor system of the docs build (run where pydoctor is installed: pip install '.[docs]')."""

    def setUp(self) -> None:
        try:
            import pydoctor.model  # noqa: F401
        except ImportError:
            raise self.skipTest("pydoctor is not installed (pip install '.[docs]')") from None
        self.module = loadSystemModule()
        self.addCleanup(sys.modules.pop, "iocpsvc_pydoctor", None)

    def system(self) -> Any:
        from pydoctor.options import Options

        return self.module.IocpsvcSystem(Options.from_args(["-q"]))

    def test_reexportedNamesResolveWhereDefined(self) -> None:
        """A class a package re-exports keeps the names of the module that defines it."""
        system = self.system()
        builder = system.systemBuilder(system)
        builder.addModuleString("from pkg.mod import Thing\n__all__ = ['Thing']\n", "pkg", is_package=True)
        builder.addModuleString(
            "from twisted.internet.protocol import Protocol\nclass Thing(Protocol):\n    pass\n",
            "mod",
            parent_name="pkg",
        )
        builder.buildModules()
        thing = system.allobjects["pkg.Thing"]
        self.assertEqual(thing.parent.fullName(), "pkg")
        self.assertEqual(thing.parent.expandAnnotationName("Protocol"), "twisted.internet.protocol.Protocol")
        self.assertEqual(thing.expandName("Protocol"), "twisted.internet.protocol.Protocol")

    def test_lazyAllMessageOnly(self) -> None:
        """The monitor's computed __all__ is not reported; every other message is."""
        system = self.system()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            system.msg(
                "all", f"{ROOT}/iocpsvc/monitor/__init__.py:36: {self.module.LAZY_ALL_MESSAGE}", thresh=-1
            )
            system.msg("all", f"{ROOT}/iocpsvc/other.py:3: {self.module.LAZY_ALL_MESSAGE}", thresh=-1)
        self.assertEqual(out.getvalue(), f"{ROOT}/iocpsvc/other.py:3: {self.module.LAZY_ALL_MESSAGE}\n")
        self.assertEqual(system.violations, 1)
