"""
Where the cluster bus's Redis is and how to log in to it: the C{--cluster}
URL, parsed and checked once at start-up into a L{RedisURL}::

    redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?OPTION=VALUE&...]
    rediss://...                       the same over TLS

    PORT          6379 for both schemes, as Redis's own clients do
    DB            the database of the node-id keys (SELECT); 0 by default
    USER:PASSWORD C{AUTH USER PASSWORD} (a Redis 6 ACL user);
    :PASSWORD     C{AUTH PASSWORD} (the C{requirepass} password);
                  both percent-decoded (C{%40} for C{@}, C{%2F} for C{/})

    prefix=NAME          the channels' and keys' prefix (default C{iocpsvc})
    password_file=PATH   the password is the content of this file (one
                         trailing newline removed), read at start-up
    ca=PATH              rediss: the CA certificates (PEM) to trust instead
                         of the system's trust store
    cert=PATH&key=PATH   rediss: this node's certificate and key (PEM), for
                         a server that asks clients for one (mutual TLS)
    sni=NAME             rediss: the name to send (SNI) and to check the
                         server's certificate against, instead of HOST

Without a password in the URL or a C{password_file}, the environment
variable C{IOCPSVC_CLUSTER_PASSWORD} is the password when it is set.  Both
keep the password off the command line, which any local user can read
(C{ps}), and out of the arguments that a server with C{--workers} passes to
its worker processes (they inherit the environment and read the same file).

Over TLS the server's certificate is always verified, against C{ca=} or the
system's trust store, and must name C{HOST} (or C{sni=}): there is no
option to turn verification off.

A password never appears in an error message, a log line or a C{repr}:
messages about the URL show it through L{iocpsvc.cluster.redactURL} (or
L{showURL} when it does not parse), and
echo no part of the URL that may hold a piece of a password (a part with an
C{@} in it: an unescaped C{/}, C{?} or C{#} in a password splits the URL
there).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from iocpsvc.cluster import redactURL
from iocpsvc.transports import describeTlsError

DEFAULT_PORT = 6379
DEFAULT_PREFIX = "iocpsvc"
PASSWORD_VARIABLE = "IOCPSVC_CLUSTER_PASSWORD"
"""The environment variable holding the password when the URL gives none."""

_PREFIX = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,62}"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*\.?$")
_EXPECTED = "expected redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=NAME]"
_TLS_OPTIONS = ("ca", "cert", "key", "sni")
_OPTIONS = ("prefix", "password_file", *_TLS_OPTIONS)


@dataclass(frozen=True)
class RedisURL:
    """
    A parsed C{--cluster} URL (see the module docstring).

    @ivar host: a host name, an IPv4 or an IPv6 address (without brackets).
    @ivar port: the TCP port.
    @ivar db: the database number sent with C{SELECT} (0: none is sent).
    @ivar prefix: what the bus's channel and key names start with.
    @ivar username: the ACL user name, or C{None}: C{AUTH} with the password
        alone (or no C{AUTH} at all without a password).
    @ivar password: the password (bytes: Redis's are binary-safe), or
        C{None}; never in the C{repr}.
    @ivar passwordSource: where the password came from, for messages:
        C{"the URL"}, C{"password_file=PATH"}, C{"$IOCPSVC_CLUSTER_PASSWORD"},
        or C{None}.
    @ivar tls: whether the scheme is C{rediss}.
    @ivar ca: the PEM file of the CA certificates to trust, or C{None}: the
        system's trust store.
    @ivar cert: the PEM file of this node's certificate, or C{None}.
    @ivar key: the PEM file of its private key, or C{None}.
    @ivar sni: the name the server's certificate must have, or C{None}: C{host}.
    @ivar shown: the URL as it may be shown (its password as C{***}).
    @ivar tlsOptions: the C{IOpenSSLClientConnectionCreator} built from the
        above when C{tls} (its files read once), else C{None}.
    """

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    prefix: str = DEFAULT_PREFIX
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)
    passwordSource: str | None = None
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    sni: str | None = None
    shown: str = ""
    tlsOptions: Any = field(default=None, repr=False, compare=False)

    def authArguments(self) -> tuple[bytes, ...] | None:
        """
        The arguments of the C{AUTH} command to log in with (C{(password,)}
        or C{(user, password)}), or C{None}: no C{AUTH}.
        """
        if self.password is None:
            return None
        if self.username is None:
            return (self.password,)
        return (self.username.encode("utf-8"), self.password)


def parseRedisURL(url: str, environ: Mapping[str, str] | None = None) -> RedisURL:
    """
    Parse and check a C{--cluster} URL (see the module docstring): read its
    password file and, for C{rediss://}, its certificate files, so that
    anything wrong shows at start-up.

    @param environ: where C{IOCPSVC_CLUSTER_PASSWORD} is looked up;
        C{os.environ} by default.
    @raise ValueError: anything wrong, in one line that never contains the
        password.
    """
    if url.startswith("rediss://"):
        tls = True
    elif url.startswith("redis://"):
        tls = False
    else:
        raise ValueError(f"the URL must start with redis:// or rediss:// ({_EXPECTED})")
    try:
        parts = urlsplit(url)
    except ValueError as e:  # an unclosed [ of an IPv6 address, characters not allowed
        raise ValueError(f"the URL does not parse: {_safe(str(e))} ({_EXPECTED})") from None
    if "@" in url and "@" not in parts.netloc:
        # A password with an unescaped / ? or #: what follows it would land
        # in the path or the options and be quoted by the checks below.
        raise ValueError(f"an @ after the host part ({_EXPECTED}){_hint(url)}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"port must be a number from 1 to 65535 ({_EXPECTED}){_hint(url)}")
    if not parts.hostname:
        raise ValueError(f"no host ({_EXPECTED}){_hint(url)}")
    if parts.fragment:
        raise ValueError(f"unexpected #{_safe(parts.fragment)} ({_EXPECTED})")
    if "%" in parts.hostname:
        raise ValueError(
            "a scoped IPv6 address (with %zone) is not supported; use a host name or a global address"
        )
    path = parts.path.strip("/")
    if path and not _DATABASE.fullmatch(path):
        raise ValueError(f"database must be a number from 0 to 99999, not {_safe(path)} ({_EXPECTED})")
    options = _options(parts.query)
    if not tls:
        for name in _TLS_OPTIONS:
            if name in options:
                raise ValueError(f"{name}= is an option of rediss:// (TLS), not of redis://")
    if ("cert" in options) != ("key" in options):
        raise ValueError("cert= and key= go together (this node's certificate and its private key)")
    sni = options.get("sni")
    if sni is not None and not _HOSTNAME.match(sni):
        raise ValueError(f"sni= must be a host name, not {_safe(sni)}")

    username = unquote_to_bytes(parts.username).decode("utf-8", "replace") if parts.username else None
    password, source = _password(parts.password, options.get("password_file"), environ)
    if username is not None and password is None:
        # Not the user name in the message: it may be a password without its ":".
        raise ValueError(
            "a user name without a password: give redis://USER:PASSWORD@..., password_file=PATH or "
            f"${PASSWORD_VARIABLE} (a password alone is redis://:PASSWORD@...)"
        )
    parsed = RedisURL(
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORT,
        db=int(path) if path else 0,
        prefix=options.get("prefix", DEFAULT_PREFIX),
        username=username,
        password=password,
        passwordSource=source,
        tls=tls,
        ca=options.get("ca"),
        cert=options.get("cert"),
        key=options.get("key"),
        sni=sni,
        # Parsed: any password is in the user info, which redactURL hides.
        shown=redactURL(url),
    )
    if tls:
        object.__setattr__(parsed, "tlsOptions", clientTLSOptions(parsed))
    return parsed


def showURL(url: str) -> str:
    """
    C{url} fit for a message about it, even when it does not parse:
    L{redactURL}'s when it has a password where L{redactURL} finds one;
    otherwise, when it has an C{@}, cut before its last C{@}: a user name
    alone may be a password that lacks its C{:} (C{redis://s3cret@host}),
    and an C{@} outside the user info may end a password with an unescaped
    C{/}, C{?} or C{#} in it, which ends the host part before its C{@}.
    """
    shown = redactURL(url)
    try:
        if urlsplit(url).password is not None:
            return shown
    except ValueError:
        return shown  # redactURL has cut it already
    if "@" in url:
        scheme, sep, rest = url.partition("://")
        return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
    return url


_DATABASE = re.compile(r"[0-9]{1,5}")


def _hint(url: str) -> str:
    """For a URL with an C{@}: how to write a password that holds / ? # or @."""
    if "@" not in url:
        return ""
    return "; write / ? # @ in a password as %2F %3F %23 %40"


def _safe(text: str) -> str:
    """
    C{text} quoted for a message, or a placeholder when it holds an C{@}:
    then it may be the end of a password that held a C{/}, C{?} or C{#}.
    """
    if "@" in text:
        return "(not shown: it has an @, maybe of a password" + _hint(text) + ")"
    return repr(text)


def _path(path: str) -> str:
    """A file path for a message: as it is, unless it has an C{@} (see L{_safe})."""
    return path if "@" not in path else _safe(path)


def _options(query: str) -> dict[str, str]:
    """The C{?name=value&...} options, each known and given once."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"bad query {_safe(query)} ({_EXPECTED})") from None
    options: dict[str, str] = {}
    for name, value in pairs:
        if name not in _OPTIONS:
            raise ValueError(f"unknown option {_safe(name)} (known: {', '.join(o + '=' for o in _OPTIONS)})")
        if name in options:
            raise ValueError(f"{name}= given more than once")
        if name == "prefix" and not _PREFIX.match(value):
            raise ValueError(f"prefix must be 1 to 64 of A-Z a-z 0-9 _ . : -, not {_safe(value)}")
        if name != "prefix" and not value:
            raise ValueError(f"{name}= needs a value")
        options[name] = value
    return options


def _password(
    inURL: str | None, passwordFile: str | None, environ: Mapping[str, str] | None
) -> tuple[bytes | None, str | None]:
    """The password and where it came from: the URL, the file, the environment, or none."""
    if inURL is not None:
        if passwordFile is not None:
            raise ValueError("two passwords: one in the URL and password_file=; give one")
        password = unquote_to_bytes(inURL)
        if not password:
            raise ValueError("the password in the URL is empty")
        return password, "the URL"
    if passwordFile is not None:
        content = _read("password_file", passwordFile, 64 * 1024 + 1)
        if len(content) > 64 * 1024:
            raise ValueError(f"password_file={_path(passwordFile)}: longer than 64 KiB, not a password")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        if not content:
            raise ValueError(f"password_file={_path(passwordFile)}: empty")
        return content, f"password_file={passwordFile}"
    value = (os.environ if environ is None else environ).get(PASSWORD_VARIABLE)
    if value:
        return os.fsencode(value), f"${PASSWORD_VARIABLE}"
    return None, None


def clientTLSOptions(url: RedisURL) -> Any:
    """
    The TLS client options of C{url} (a C{rediss://} one): verify the
    server's certificate against C{url.ca} or the system's trust store and
    check that it names C{url.sni} or C{url.host}; present C{url.cert}
    when given.

    @raise ValueError: a file that cannot be read or holds no PEM
        certificate (or key), in one line.
    """
    # Only for rediss:// (Twisted's endpoints load pyOpenSSL anyway, when installed).
    from twisted.internet import ssl

    trustRoot: Any
    if url.ca is not None:
        trustRoot = ssl.trustRootFromCertificates(_certificates("ca", url.ca))
    else:
        trustRoot = ssl.platformTrust()
    clientCertificate = None
    extra: dict[str, Any] = {}
    if url.cert is not None and url.key is not None:
        own, *chain = _certificates("cert", url.cert)
        keyPEM = _read("key", url.key)
        try:
            # Reads the first certificate and the key, and checks that they go together.
            clientCertificate = ssl.PrivateCertificate.loadPEM(own.dumpPEM() + keyPEM)
        except Exception as e:  # OpenSSL's errors: not a key, not this certificate's
            raise ValueError(
                f"cert={_path(url.cert)} and key={_path(url.key)}: not a PEM private key of that certificate "
                f"({describeTlsError(e, ', ')})"
            ) from None
        if chain:
            extra["extraCertChain"] = [c.original for c in chain]
    return ssl.optionsForClientTLS(
        url.sni or url.host,
        trustRoot=trustRoot,
        clientCertificate=clientCertificate,
        extraCertificateOptions=extra or None,
    )


def _read(option: str, path: str, limit: int = -1) -> bytes:
    """The file's bytes (at most C{limit} of them), or a one-line error naming the option."""
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError as e:
        raise ValueError(f"{option}={_path(path)}: cannot read it ({e.strerror})") from None


def _certificates(option: str, path: str) -> list[Any]:
    """The certificates of a PEM file, as Twisted's L{twisted.internet.ssl.Certificate}s; at least one."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from twisted.internet.ssl import Certificate

    data = _read(option, path)
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ValueError(f"{option}={_path(path)}: no PEM certificate in it")
    return [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in found]
