"""
Regenerate the API inventories that the docs link through (run from the
checkout's root, with the docs extra installed)::

    pip install '.[docs]'
    python docs/make_inventories.py

The docs build never goes to the network for them: ``docs/conf.py`` hands
these committed files to pydoctor (``--intersphinx-file``) and to Sphinx's
intersphinx, and only the links they hold point outside.

``docs/inventories/twisted.inv``
    Twisted's API, made by pydoctor (the tool that builds Twisted's own API
    pages, so the page names are the same) over the Twisted installed here;
    its links are relative to https://docs.twisted.org/en/stable/api/.
    Public names only, without Twisted's test modules, to keep the file
    small: nothing in iocpsvc links to either.  The committed file came
    from Twisted 26.10.0 and pydoctor 25.10.1 (its header says the Twisted
    version); regenerate it when the Twisted that iocpsvc runs on changes.

``docs/inventories/python.inv``
    The standard library's, copied from Debian's ``python3.11-doc`` package
    (``apt-get install python3.11-doc``), whose HTML pages it indexes: the
    same as https://docs.python.org/3.11/objects.inv.  Skipped, with a
    message, where that package is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
INVENTORIES = os.path.join(HERE, "inventories")
TWISTED = os.path.join(INVENTORIES, "twisted.inv")
PYTHON = os.path.join(INVENTORIES, "python.inv")
PYTHON_DOC = "/usr/share/doc/python3.11/html/objects.inv"

TWISTED_URL = "https://docs.twisted.org/en/stable/api/"
PYTHON_URL = "https://docs.python.org/3.11/"


def readInventory(path: str) -> tuple[list[str], list[str]]:
    """The header lines and the entries of a Sphinx inventory (version 2)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n", 4)
    header = [line.decode("utf-8") for line in lines[:4]]
    if header[0] != "# Sphinx inventory version 2":
        raise ValueError(f"{path}: not a version 2 Sphinx inventory: {header[0]!r}")
    return header, zlib.decompress(lines[4]).decode("utf-8").splitlines()


def writeInventory(path: str, header: list[str], entries: list[str]) -> None:
    body = zlib.compress(("\n".join(entries) + "\n").encode("utf-8"), 9)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("utf-8") + body)


def isLinkable(name: str) -> bool:
    """Whether an entry of Twisted's inventory stays: public, not a test module's."""
    parts = name.split(".")
    return not any(part == "test" or (part.startswith("_") and not part.startswith("__")) for part in parts)


def makeTwisted() -> None:
    import twisted

    source = os.path.dirname(os.path.abspath(twisted.__file__))
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pydoctor",
                "--quiet",
                "--make-intersphinx",
                "--project-name=Twisted",
                f"--project-version={twisted.__version__}",
                "--docformat=epytext",
                f"--html-output={out}",
                source,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        header, entries = readInventory(os.path.join(out, "objects.inv"))
    kept = [entry for entry in entries if isLinkable(entry.split(" ", 1)[0])]
    writeInventory(TWISTED, header, kept)
    print(f"{TWISTED}: Twisted {twisted.__version__}, {len(kept):,} of {len(entries):,} names")


def copyPython() -> None:
    if not os.path.exists(PYTHON_DOC):
        print(f"{PYTHON_DOC} is missing (apt-get install python3.11-doc); {PYTHON} left as it is")
        return
    header, entries = readInventory(PYTHON_DOC)
    shutil.copyfile(PYTHON_DOC, PYTHON)
    print(f"{PYTHON}: {header[1][2:]} {header[2][2:]}, {len(entries):,} names")


def main() -> None:
    os.makedirs(INVENTORIES, exist_ok=True)
    makeTwisted()
    copyPython()


if __name__ == "__main__":
    main()
