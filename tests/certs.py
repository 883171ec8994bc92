"""
Throw-away certificates for the TLS tests: a root CA, an intermediate CA
and a server certificate for C{localhost} / C{127.0.0.1}, written as PEM
files, so that tests can check a verifying client against the server's
chain (C{extraCertChain}) as well as serve TLS at all.

Made by C{trustme} (python-trio's test-certificate library), whose
certificates carry the extensions strict verifiers insist on (basic
constraints, key usage, key identifiers, subject alternative names), so
Python's default SSL context accepts the chain.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CertificateFiles:
    """
    Paths of the PEM files made by L{issueCertificates}.

    @ivar root: the root CA's certificate (what a verifying client trusts).
    @ivar chain: the intermediate CA's certificate (what the server sends
        after its own, C{extraCertChain=} in an C{ssl:} description).
    @ivar key: the server's private key.
    @ivar cert: the server's certificate, issued by the intermediate.
    """

    root: str
    chain: str
    key: str
    cert: str


def issueCertificates(directory: str) -> CertificateFiles:
    """
    Make a root CA, an intermediate and a server certificate for
    C{DNS:localhost} and C{IP:127.0.0.1} (ECDSA P-256 keys) in C{directory},
    one PEM file each.
    """
    import trustme

    root = trustme.CA()
    intermediate = root.create_child_ca()
    server = intermediate.issue_cert("localhost", "127.0.0.1")
    # cert_chain_pems: the server's own certificate first, then the
    # intermediate's (not the root's).
    serverCert, intermediateCert = server.cert_chain_pems

    def path(name: str) -> str:
        return os.path.join(directory, name)

    files = CertificateFiles(
        root=path("root.pem"), chain=path("chain.pem"), key=path("key.pem"), cert=path("cert.pem")
    )
    root.cert_pem.write_to_path(files.root)
    intermediateCert.write_to_path(files.chain)
    server.private_key_pem.write_to_path(files.key)
    serverCert.write_to_path(files.cert)
    return files
