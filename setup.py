"""
The optional compiled accelerator (iocpsvc._speedups): built wherever a C
compiler is present; when the build fails, the install goes on and iocpsvc
runs its pure-Python code (see iocpsvc/accel.py and docs/performance.rst).
Everything else is in setup.cfg.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing: the extension is an accelerator."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all (distutils raises on setup)
            self._skipped(e)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:  # the compiler failed
            self._skipped(e)

    def _skipped(self, error: Exception) -> None:
        sys.stderr.write(
            f"WARNING: iocpsvc's compiled accelerator was not built ({error}); "
            "iocpsvc will run its pure-Python implementation.\n"
        )


# IOCPSVC_NO_EXTENSIONS at install time skips the build altogether.
extensions = (
    []
    if os.environ.get("IOCPSVC_NO_EXTENSIONS", "") not in ("", "0")
    else [Extension("iocpsvc._speedups", sources=["iocpsvc/_speedups.c"], optional=True)]
)

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
