"""
Tests for L{iocpsvc.cluster.redisurl}: every form of the C{--cluster} URL
(C{redis://} and C{rediss://}, passwords, ACL users, databases, options),
where a password may come from instead (a file, the environment), the TLS
options built from certificate files, and every error: one line, never
holding the password, also as C{twistd iocpsvc --cluster} reports it.
"""

from __future__ import annotations

import os

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from iocpsvc.cluster.redis import RedisBus
from iocpsvc.cluster.redisurl import PASSWORD_VARIABLE, RedisURL, parseRedisURL, showURL
from iocpsvc.tap import Options
from tests.certs import issueCertificates
from tests.netutil import temporaryDirectory

NEWLINE = b"\n"


def parse(url: str, **environ: str) -> RedisURL:
    """C{parseRedisURL} with only the given environment (not this process's)."""
    return parseRedisURL(url, environ)


class FormsTests(SynchronousTestCase):
    """Every accepted form of the URL."""

    def test_defaults(self) -> None:
        """Port 6379, database 0, prefix iocpsvc, no AUTH, no TLS unless given."""
        url = parse("redis://127.0.0.1")
        self.assertEqual(
            (url.host, url.port, url.db, url.prefix, url.username, url.password, url.tls),
            ("127.0.0.1", 6379, 0, "iocpsvc", None, None, False),
        )
        self.assertIsNone(url.authArguments())
        self.assertIsNone(url.tlsOptions)
        self.assertEqual(url.shown, "redis://127.0.0.1")
        self.assertEqual(parse("redis://redis.internal:7000").port, 7000)

    def test_everything(self) -> None:
        """Host, port, database and prefix; IPv6 addresses in brackets."""
        url = parse("redis://127.0.0.1:6380/3?prefix=chat-1")
        self.assertEqual((url.host, url.port, url.db, url.prefix), ("127.0.0.1", 6380, 3, "chat-1"))
        url = parse("redis://[::1]:6380/")
        self.assertEqual((url.host, url.port, url.db), ("::1", 6380, 0))

    def test_password(self) -> None:
        """
        C{:PASSWORD@}: C{AUTH PASSWORD}, percent-decoded (an @ / ? # in a
        password is written %40 %2F %3F %23); never in the repr.
        """
        url = parse("redis://:s%40c%2Fr%3Fe%23t%25@cache:6390/2")
        self.assertEqual(url.password, b"s@c/r?e#t%")
        self.assertIsNone(url.username)
        self.assertEqual(url.authArguments(), (b"s@c/r?e#t%",))
        self.assertEqual(url.passwordSource, "the URL")
        self.assertEqual((url.host, url.port, url.db), ("cache", 6390, 2))
        self.assertEqual(url.shown, "redis://:***@cache:6390/2")
        self.assertNotIn("s@c", repr(url))
        self.assertNotIn("%40", repr(url))

    def test_aclUser(self) -> None:
        """C{USER:PASSWORD@}: C{AUTH USER PASSWORD} (a Redis 6 ACL user), both percent-decoded."""
        url = parse("redis://app%2Dweb:p%C3%A4ss@cache")
        self.assertEqual(url.username, "app-web")
        self.assertEqual(url.authArguments(), (b"app-web", "päss".encode()))
        self.assertEqual(url.shown, "redis://app%2Dweb:***@cache")

    def test_binaryPassword(self) -> None:
        """A password is bytes: percent escapes that are not UTF-8 are kept as they are."""
        self.assertEqual(parse("redis://:%FF%00x@h").password, b"\xff\x00x")

    def test_noUserInfo(self) -> None:
        """An empty user info (C{redis://@h}) is no AUTH."""
        self.assertIsNone(parse("redis://@h").authArguments())

    def test_rediss(self) -> None:
        """
        C{rediss://}: TLS, on port 6379 too unless given, with client options
        built (verifying against the system's trust store without ca=).
        """
        url = parse("rediss://:pw@cache.example.com")
        self.assertEqual((url.tls, url.port, url.ca, url.sni), (True, 6379, None, None))
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(url.tlsOptions))
        self.assertEqual(url.shown, "rediss://:***@cache.example.com")

    def test_tlsFiles(self) -> None:
        """ca=, cert= and key= are read into the options; sni= names the host to verify."""
        certs = issueCertificates(self.temporaryDirectory())
        url = parse(
            f"rediss://127.0.0.1:6380?ca={certs.root}&cert={certs.cert}&key={certs.key}&sni=localhost"
        )
        self.assertEqual(
            (url.ca, url.cert, url.key, url.sni), (certs.root, certs.cert, certs.key, "localhost")
        )
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(url.tlsOptions))
        # A bundle (several certificates) is a CA file too, and a chain a certificate file.
        bundle = os.path.join(os.path.dirname(certs.root), "bundle.pem")
        with open(bundle, "wb") as f:
            for path in (certs.cert, certs.chain, certs.root):
                with open(path, "rb") as part:
                    f.write(part.read())
        parse(f"rediss://h?ca={bundle}&cert={bundle}&key={certs.key}")

    def temporaryDirectory(self) -> str:
        return temporaryDirectory(self)


class PasswordSourcesTests(SynchronousTestCase):
    """A password kept off the command line: a file, or the environment."""

    def write(self, content: bytes) -> str:
        path = os.path.join(temporaryDirectory(self), "password")
        with open(path, "wb") as f:
            f.write(content)
        return path

    def test_passwordFile(self) -> None:
        """password_file=PATH: its content, without one trailing newline (LF or CRLF)."""
        for content, expected in (
            (b"s3cret\n", b"s3cret"),
            (b"s3cret\r\n", b"s3cret"),
            (b"s3cret", b"s3cret"),
            (b"two\n\n", b"two\n"),
            (b" spaced ", b" spaced "),
        ):
            path = self.write(content)
            url = parse(f"redis://app@h?password_file={path}")
            self.assertEqual(url.authArguments(), (b"app", expected), content)
            self.assertEqual(url.passwordSource, f"password_file={path}")
            self.assertNotIn(expected.decode(), repr(url))

    def test_environment(self) -> None:
        """Without a password in the URL or a file, $IOCPSVC_CLUSTER_PASSWORD is the password."""
        url = parse("redis://h", **{PASSWORD_VARIABLE: "from-env"})
        self.assertEqual(
            (url.authArguments(), url.passwordSource), ((b"from-env",), "$IOCPSVC_CLUSTER_PASSWORD")
        )
        url = parse("redis://app@h", **{PASSWORD_VARIABLE: "from-env"})
        self.assertEqual(url.authArguments(), (b"app", b"from-env"))
        # The URL's own password, or its file, comes first; an empty variable is none.
        self.assertEqual(parse("redis://:url@h", **{PASSWORD_VARIABLE: "env"}).password, b"url")
        path = self.write(b"file\n")
        self.assertEqual(
            parse(f"redis://h?password_file={path}", **{PASSWORD_VARIABLE: "env"}).password, b"file"
        )
        self.assertIsNone(parse("redis://h", **{PASSWORD_VARIABLE: ""}).password)

    def test_processEnvironment(self) -> None:
        """By default the variable is read from this process's environment."""
        self.patch(os, "environ", {**os.environ, PASSWORD_VARIABLE: "process"})
        self.assertEqual(parseRedisURL("redis://h").password, b"process")
        bus = RedisBus("redis://h", 1)
        self.assertEqual(bus.target.authArguments(), (b"process",))

    def test_errors(self) -> None:
        """A file that cannot be read, is empty, or comes with a password in the URL."""
        missing = os.path.join(temporaryDirectory(self), "missing")
        for url, words in (
            (f"redis://h?password_file={missing}", f"password_file={missing}: cannot read it (No such file"),
            (f"redis://h?password_file={self.write(b'')}", "empty"),
            (f"redis://h?password_file={self.write(NEWLINE)}", "empty"),
            (f"redis://h?password_file={self.write(b'x' * 70000)}", "longer than 64 KiB"),
            (f"redis://:pw@h?password_file={self.write(b'pw')}", "two passwords"),
            ("redis://h?password_file=", "needs a value"),
            ("redis://app@h", "a user name without a password"),
        ):
            with self.assertRaises(ValueError, msg=url) as caught:
                parse(url)
            self.assertIn(words, str(caught.exception), url)


SECRET = "Hunter2Pass"


class ErrorTests(SynchronousTestCase):
    """Every refused URL: one line saying what is wrong, never the password."""

    def assertRefused(self, url: str, words: str, **environ: str) -> str:
        with self.assertRaises(ValueError, msg=url) as caught:
            parse(url, **environ)
        message = str(caught.exception)
        self.assertIn(words.lower(), message.lower(), url)
        self.assertNotIn("\n", message)
        return message

    def test_bad(self) -> None:
        """Anything else is a ValueError that says what is wrong."""
        certs = issueCertificates(self.temporaryDirectory())
        for url, words in (
            ("http://127.0.0.1:6379", "redis:// or rediss://"),
            ("127.0.0.1:6379", "redis://"),
            ("REDIS://h", "redis://"),
            ("redis:/h", "redis://"),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            ("redis://h:0", "port"),
            ("redis://h:99999", "port"),
            ("redis://h:port", "port"),
            ("redis://[::1", "does not parse"),
            ("redis://h/db1", "database"),
            ("redis://h/1/2", "database"),
            ("redis://h?db=1", "unknown option 'db'"),
            ("redis://h?prefix=", "prefix"),
            ("redis://h?prefix=a&prefix=b", "more than once"),
            ("redis://h?prefix", "query"),
            ("redis://h?prefix=a%20b", "prefix"),
            ("redis://h#x", "unexpected"),
            ("redis://:@h", "password in the URL is empty"),
            (f"redis://h?ca={certs.root}", "ca= is an option of rediss://"),
            ("redis://h?sni=x", "sni= is an option of rediss://"),
            (f"rediss://h?cert={certs.cert}", "cert= and key= go together"),
            (f"rediss://h?key={certs.key}", "cert= and key= go together"),
            ("rediss://h?sni=not a name", "sni= must be a host name"),
            ("rediss://h?ca=", "needs a value"),
            ("rediss://h?ca=/no/such/ca.pem", "ca=/no/such/ca.pem: cannot read it"),
            (f"rediss://h?ca={certs.key}", "no PEM certificate"),
            (f"rediss://h?cert={certs.key}&key={certs.key}", "no PEM certificate"),
            (f"rediss://h?cert={certs.cert}&key={certs.cert}", "not a PEM private key of that certificate"),
            (f"rediss://h?cert={certs.root}&key={certs.key}", "not a PEM private key of that certificate"),
            (f"rediss://h?cert={certs.cert}&key=/no/such.key", "key=/no/such.key: cannot read it"),
        ):
            self.assertRefused(url, words)

    def temporaryDirectory(self) -> str:
        return temporaryDirectory(self)

    def test_neverThePassword(self) -> None:
        """
        No message holds the password or a piece of it, even when an
        unescaped / ? or # in it splits the URL at the wrong place (the
        message says how to write it instead).
        """
        pieces = ("Hunter", "2Pass", "Tail", "Hunter2Pass")
        for url in (
            f"redis://:{SECRET}@h:0",
            f"redis://app:{SECRET}@:6379",
            f"redis://:{SECRET}@h/x",
            f"redis://:{SECRET}@h?what=1",
            f"redis://:{SECRET}@h?prefix=a b",
            f"redis://:{SECRET}@h#frag",
            f"redis://:{SECRET}@h?ca=/x",
            f"redis://:{SECRET}@[::1",
            f"redis://:{SECRET}@h?password_file=/nonexistent",
            f"rediss://:{SECRET}@h?ca=/nonexistent",
            "redis://:Hunter/2Pass@h",
            "redis://:Hunter/2Pass/Tail@h",
            "redis://:Hunter?2Pass@h",
            "redis://:Hunter?x=2Pass@h",
            "redis://:Hunter#2Pass@h",
            "redis://app:Hunter#2Pass@h:6379/1",
            "redis://:Hunter/1@h",
            "redis://h/Hunter@",
        ):
            with self.assertRaises(ValueError, msg=url) as caught:
                parse(url)
            message = str(caught.exception)
            for piece in pieces:
                self.assertNotIn(piece, message, f"{url} -> {message}")
            self.assertNotIn("\n", message)
        message = self.assertRefused("redis://:Hunter/2Pass@h", "port")
        self.assertIn("%2F", message)
        message = self.assertRefused("redis://h:1/Hunter@x", "an @ after the host part")
        self.assertIn("%2F", message)
        # The reviewer's case: the password's digits a port, its / a path, its ? the options.
        message = self.assertRefused("redis://app:6380/Tr0ub?4dor@redis.internal", "an @ after the host part")
        self.assertNotIn("Tr0ub", message)
        self.assertNotIn("4dor", message)

    def test_database(self) -> None:
        """A database is 0 to 99999 in ASCII digits; a scoped IPv6 host is refused."""
        self.assertEqual(parse("redis://h/99999").db, 99999)
        for url in ("redis://h/100000", "redis://h/\u0663", "redis://h/\u00b2", "redis://h/-1"):
            with self.assertRaises(ValueError, msg=url) as caught:
                parse(url)
            self.assertIn("database must be a number from 0 to 99999", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            parse("redis://[fe80::1%25eth0]:6379")
        self.assertIn("scoped IPv6", str(caught.exception))

    def test_usageError(self) -> None:
        """C{twistd iocpsvc --cluster} says what is wrong with the URL, with its password as ***."""
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != PASSWORD_VARIABLE})
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--cluster", f"redis://app:{SECRET}@h:0"])
        message = str(caught.exception)
        self.assertIn("--cluster 'redis://app:***@h:0': port must be a number", message)
        self.assertNotIn(SECRET, message)
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--cluster", "redis://:Hunter#2Pass@h"])
        message = str(caught.exception)
        self.assertIn("--cluster 'redis://***@h': an @ after the host part", message)
        # A password written without its ":" is taken for a user name: not shown either.
        with self.assertRaises(UsageError) as caught:
            Options().parseOptions(["--cluster", f"redis://{SECRET}@h"])
        self.assertEqual(
            str(caught.exception).split(": ")[:2],
            ["--cluster 'redis://***@h'", "a user name without a password"],
        )
        self.assertNotIn(SECRET, str(caught.exception))
        self.assertNotIn("2Pass", message)
        self.assertNotIn("Hunter", message)

    def test_showURL(self) -> None:
        """
        showURL is redactURL's, and also hides a password that an unescaped
        / ? or # cut off from its @ (where redactURL sees none).
        """
        for url, shown in (
            ("redis://h:1/2?prefix=p", "redis://h:1/2?prefix=p"),
            ("redis://app@h", "redis://***@h"),  # maybe a password without its ":"
            ("redis://app:pw@h:1/2", "redis://app:***@h:1/2"),
            ("redis://:Hunter#2Pass@h:1", "redis://***@h:1"),
            ("redis://:Hunter/2Pass@h", "redis://***@h"),
            ("rediss://app:Hunter?2Pass@h", "rediss://***@h"),
            ("redis://:pw@[broken", "redis://***@[broken"),
        ):
            self.assertEqual(showURL(url), shown, url)

    def test_busRefuses(self) -> None:
        """A bus given a bad URL refuses it as parseRedisURL does."""
        self.assertRaises(ValueError, RedisBus, f"redis://:{SECRET}@h:0", 1)
