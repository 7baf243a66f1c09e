"""A throw-away PKI for the TLS tests: a CA with the server's, the agent's and the
platform's certificates, and a rogue CA with a client certificate of its own; all valid
for a day, EC P-256.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Where the PEM files are; ``*_key`` files are unencrypted PKCS#8."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    platform_cert: Path
    platform_key: Path
    rogue_ca: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-agent tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           usage: x509.ObjectIdentifier | None = None,
           san: list[x509.GeneralName] | None = None) -> x509.Certificate:
    # Back-dated a little: the broker and the agent must not see a not-yet-valid cert.
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None),
                              critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False), critical=True)
    else:
        # X509 strict verification (Python 3.13's default context) wants a key id here.
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        # Python's ssl matches 127.0.0.1 against an IP SAN only, never the CN (FIELD_NOTES §5).
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _pem_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    return _issue(common_name, key, _name(common_name), key, ca=True), key


def make_pki(directory: Path) -> Pki:
    """Generate every key and certificate and write them as PEM files into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("edge-agent test CA")
    rogue_ca, rogue_ca_key = _ca("rogue CA")
    server_key, client_key, platform_key, rogue_key = _key(), _key(), _key(), _key()
    server = _issue("localhost", server_key, ca.subject, ca_key,
                    usage=ExtendedKeyUsageOID.SERVER_AUTH,
                    san=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                         x509.DNSName("localhost")])
    client = _issue("gw-test", client_key, ca.subject, ca_key,
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    platform = _issue("platform", platform_key, ca.subject, ca_key,
                      usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue = _issue("gw-test", rogue_key, rogue_ca.subject, rogue_ca_key,
                   usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(ca=_pem(directory / "ca.crt", ca),
               server_cert=_pem(directory / "server.crt", server),
               server_key=_pem_key(directory / "server.key", server_key),
               client_cert=_pem(directory / "client.crt", client),
               client_key=_pem_key(directory / "client.key", client_key),
               platform_cert=_pem(directory / "platform.crt", platform),
               platform_key=_pem_key(directory / "platform.key", platform_key),
               rogue_ca=_pem(directory / "rogue_ca.crt", rogue_ca),
               rogue_client_cert=_pem(directory / "rogue_client.crt", rogue),
               rogue_client_key=_pem_key(directory / "rogue_client.key", rogue_key))
