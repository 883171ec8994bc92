"""
The one place iocpsvc's version is written: the package (C{iocpsvc.__version__}),
its metadata (C{setup.cfg} reads it with C{attr:}), the documentation
(C{docs/conf.py}) and C{twistd iocpsvc --version} all take it from here.
"""

__version__ = "0.1.0"
