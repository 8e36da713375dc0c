"""A test PKI made with ``cryptography``: a CA, a server certificate, station certificates.

The approach of tests/controllers/test_csms_security.py, as a module for the stations
attached to a bench over TLS (tests/hil; importable as ``testpki`` by the tests of this
folder: a tests/ entry on ``sys.path`` would let tests/controllers, tests/twin ... shadow
the real packages as namespace packages). Everything is made fresh in a temporary folder:
EC P-256 keys, 30-day validity, a server certificate for ``127.0.0.1`` and ``localhost``,
one client certificate per station id (subject CN = station id, as OCPP security profile
3 asks), and a second, untrusted CA with a certificate of its own ("rogue").
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Pki", "make_pki"]

_Issuer = tuple[ec.EllipticCurvePrivateKey, x509.Certificate]


@dataclass(frozen=True)
class Pki:
    """PEM file paths of a test PKI."""

    ca: str
    server_cert: str
    server_key: str
    clients: dict[str, tuple[str, str]]  # CN -> (cert, key), signed by ``ca``
    other_ca: str
    rogue: tuple[str, str]  # signed by ``other_ca`` (CN given to make_pki)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, *pems: bytes) -> str:
    path.write_bytes(b"".join(pems))
    return str(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _ca(cn: str) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(cn: str, ca: _Issuer, *, server: bool) -> _Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    usage = x509.ExtendedKeyUsageOID.SERVER_AUTH if server else x509.ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(ca[0], hashes.SHA256())


def make_pki(folder: Path, clients: tuple[str, ...] = ("CP1", "CP2"), rogue_cn: str = "CP1") -> Pki:
    """Make a CA, a server certificate, station certificates and a rogue one in ``folder``.

    Args:
        folder: where the PEM files go (exists).
        clients: station ids that get a client certificate from the CA (CN = id).
        rogue_cn: CN of the certificate signed by the other, untrusted CA.
    """
    pem = serialization.Encoding.PEM
    ca = _ca("MiGrid test CSMS CA")
    other = _ca("Someone else's CA")
    skey, scert = _leaf("csms.test", ca, server=True)
    made = {}
    for cn in clients:
        k, c = _leaf(cn, ca, server=False)
        made[cn] = (
            _write(folder / f"{cn}.crt", c.public_bytes(pem)),
            _write(folder / f"{cn}.key", _key_pem(k)),
        )
    rk, rc = _leaf(rogue_cn, other, server=False)
    return Pki(
        ca=_write(folder / "ca.crt", ca[1].public_bytes(pem)),
        server_cert=_write(folder / "server.crt", scert.public_bytes(pem)),
        server_key=_write(folder / "server.key", _key_pem(skey)),
        clients=made,
        other_ca=_write(folder / "other-ca.crt", other[1].public_bytes(pem)),
        rogue=(
            _write(folder / "rogue.crt", rc.public_bytes(pem)),
            _write(folder / "rogue.key", _key_pem(rk)),
        ),
    )
