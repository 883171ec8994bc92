"""
Throw-away certificates for the TLS tests: a root CA, an intermediate CA
and a server certificate for C{localhost} / C{127.0.0.1}, written as PEM
files, so that tests can check a verifying client against the server's
chain (C{extraCertChain}) as well as serve TLS at all.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from typing import Any


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
    C{DNS:localhost} and C{IP:127.0.0.1} (valid from yesterday to tomorrow)
    in C{directory}.  The extensions are the ones strict verifiers insist on
    (basic constraints, key usage, key identifiers), so Python's default
    SSL context accepts the chain.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    rootKey = ec.generate_private_key(ec.SECP256R1())
    intermediateKey = ec.generate_private_key(ec.SECP256R1())
    serverKey = ec.generate_private_key(ec.SECP256R1())
    root = _issue("iocpsvc test root", rootKey, None, None, isCA=True)
    intermediate = _issue("iocpsvc test intermediate", intermediateKey, root, rootKey, isCA=True)
    server = _issue("localhost", serverKey, intermediate, intermediateKey, isCA=False)

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    pem = serialization.Encoding.PEM
    return CertificateFiles(
        root=write("root.pem", root.public_bytes(pem)),
        chain=write("chain.pem", intermediate.public_bytes(pem)),
        key=write(
            "key.pem",
            serverKey.private_bytes(
                pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
            ),
        ),
        cert=write("cert.pem", server.public_bytes(pem)),
    )


def _issue(commonName: str, key: Any, issuer: Any, issuerKey: Any, isCA: bool) -> Any:
    """One certificate for C{key}, signed by C{issuerKey} (self-signed when C{None})."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    signingKey = key if issuerKey is None else issuerKey
    issuerName = name if issuer is None else issuer.subject
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuerName)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=isCA, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not isCA,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=isCA,
                crl_sign=isCA,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signingKey.public_key()), critical=False
        )
    )
    if not isCA:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return builder.sign(signingKey, hashes.SHA256())
