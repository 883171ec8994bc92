"""
Sphinx configuration for the iocpsvc documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html``.  Only
Sphinx itself is needed: no extension imports iocpsvc or Twisted, so the
pages build on a machine where neither is installed.
"""

import ast
import os

# The version's one source is iocpsvc/_version.py; read, not imported.
_versionFile = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "iocpsvc", "_version.py")
with open(_versionFile, encoding="utf-8") as _f:
    _versionTree = ast.parse(_f.read())

project = "iocpsvc"
author = "the iocpsvc contributors"
copyright = "the iocpsvc contributors"
release = next(
    node.value.value
    for node in _versionTree.body
    if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__version__"
    and isinstance(node.value, ast.Constant)
)
version = release

extensions = []

# hostile-results.rst is included by hardening.rst, not a page of its own.
exclude_patterns = ["_build", "hostile-results.rst", "benchmarks-results.rst", "decode-scaling.rst", "workers-results.rst", "benchmarks.md"]

# Literal blocks written with "::" are wire diagrams and command lines, not
# Python: highlight only what a code-block directive names.
highlight_language = "none"

html_theme = "alabaster"
html_title = f"iocpsvc {release}".strip()
