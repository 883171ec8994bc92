"""
Sphinx configuration for the iocpsvc documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html``.  Only
Sphinx itself is needed: no extension imports iocpsvc or Twisted, so the
pages build on a machine where neither is installed.
"""

import configparser
import os

_setup = configparser.ConfigParser(interpolation=None)
_setup.read(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "setup.cfg"))

project = "iocpsvc"
author = "the iocpsvc contributors"
copyright = "the iocpsvc contributors"
release = _setup.get("metadata", "version", fallback="")
version = release

extensions = []

# hostile-results.rst is included by hardening.rst, not a page of its own.
exclude_patterns = ["_build", "hostile-results.rst", "benchmarks-results.rst", "decode-scaling.rst", "workers-results.rst", "benchmarks.md"]

# Literal blocks written with "::" are wire diagrams and command lines, not
# Python: highlight only what a code-block directive names.
highlight_language = "none"

html_theme = "alabaster"
html_title = f"iocpsvc {release}".strip()
