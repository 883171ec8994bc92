# The uvloop reactor as a Twisted reactor plugin: ``twistd -r uvloop`` (and
# ``twistd --help-reactors`` lists it).  See iocpsvc/uvloopreactor.py.  No
# __init__.py: twisted.plugins is a namespace iocpsvc adds modules to.

from twisted.application.reactors import Reactor

uvloop = Reactor(
    "uvloop",
    "iocpsvc.uvloopreactor",
    "Twisted's asyncio reactor on uvloop's event loop (libuv); pip install 'iocpsvc[uvloop]'",
)
