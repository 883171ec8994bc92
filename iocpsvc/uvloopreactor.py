"""
The C{uvloop} reactor: Twisted's asyncio reactor on uvloop's event loop
(libuv), installed by C{twistd -r uvloop ...} through the reactor plugin in
C{twisted/plugins/iocpsvc_reactors.py}.

uvloop is an optional extra (C{pip install 'iocpsvc[uvloop]'}; not on
Windows, where Twisted's IOCP reactor is the completion-port centre).
Asking for this reactor without it fails at start with one line (twistd
reports the C{ImportError} as a usage error).
"""

from __future__ import annotations

import asyncio


def install() -> None:
    """
    Make a uvloop event loop the current one and install Twisted's asyncio
    reactor on it.

    @raise ImportError: uvloop is not installed.
    """
    try:
        import uvloop
    except ImportError:
        raise ImportError(
            "the uvloop reactor needs uvloop: pip install 'iocpsvc[uvloop]' (not available on Windows)"
        ) from None
    from twisted.internet import asyncioreactor

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
