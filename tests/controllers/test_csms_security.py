"""OCPP security profiles 1-3 of the CSMS (controllers/csms/security.py).

Real websockets on 127.0.0.1 port 0; a CA made here with ``cryptography`` signs the
server certificate (SAN IP 127.0.0.1) and one client certificate per station id. Each
profile is exercised with the project's station emulator and with an independent client
(the ``websockets`` library directly, subprotocol ocpp2.0.1, a raw BootNotification).
"""

import base64
import datetime as dt
import ipaddress
import json
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from csms_testkit import NOW
from pydantic import ValidationError
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from controllers.csms import Csms, CsmsConfig, SiteConfig
from controllers.csms.config import SecurityConfig
from controllers.csms.security import (
    StationAuthenticator,
    common_name,
    hash_password,
    parse_basic_credentials,
    verify_password,
)
from devices.charging_station import ChargingStation, EvseSpec, StationSpec

PW1 = "cp1-password-0123456789"  # 23 characters (2.0.1: 16..40)
PW2 = "cp2-password-abcdefghij"
BOOT = [
    2,
    "boot-1",
    "BootNotification",
    {"chargingStation": {"model": "Indep", "vendorName": "Test"}, "reason": "PowerUp"},
]

# ------------------------------------------------------------------ test PKI


@dataclass(frozen=True)
class Pki:
    ca: str
    server_cert: str
    server_key: str
    clients: dict[str, tuple[str, str]]  # CN -> (cert, key)
    other_ca: str
    rogue: tuple[str, str]  # CN=CP1 signed by other_ca


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


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
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


def _leaf(
    cn: str,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    *,
    server: bool,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca[1].subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [
                    x509.ExtendedKeyUsageOID.SERVER_AUTH
                    if server
                    else x509.ExtendedKeyUsageOID.CLIENT_AUTH
                ]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return key, builder.sign(ca[0], hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    pem = serialization.Encoding.PEM
    ca = _ca("MiGrid test CSMS CA")
    other = _ca("Someone else's CA")
    skey, scert = _leaf("csms.test", ca, server=True)
    clients = {}
    for cn in ("CP1", "CP2"):
        k, c = _leaf(cn, ca, server=False)
        clients[cn] = (
            _write(d / f"{cn}.crt", c.public_bytes(pem)),
            _write(d / f"{cn}.key", _key_pem(k)),
        )
    rk, rc = _leaf("CP1", other, server=False)
    return Pki(
        ca=_write(d / "ca.crt", ca[1].public_bytes(pem)),
        server_cert=_write(d / "server.crt", scert.public_bytes(pem)),
        server_key=_write(d / "server.key", _key_pem(skey)),
        clients=clients,
        other_ca=_write(d / "other-ca.crt", other[1].public_bytes(pem)),
        rogue=(
            _write(d / "rogue.crt", rc.public_bytes(pem)),
            _write(d / "rogue.key", _key_pem(rk)),
        ),
    )


# --------------------------------------------------------------- the CSMS side


@dataclass
class Running:
    csms: Csms
    port: int
    events: list[tuple[Any, ...]]

    def url(self, scheme: str = "ws") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/ocpp"

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [e[3] for e in self.events if e[2] == kind]


StartCsms = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_csms() -> AsyncIterator[StartCsms]:
    made: list[Running] = []

    async def make(**security: Any) -> Running:
        events: list[tuple[Any, ...]] = []
        csms = Csms(
            CsmsConfig(site=SiteConfig(grid_limit_kw=100.0), security=SecurityConfig(**security)),
            on_event=lambda *e: events.append(e),
            perf_counter=time.perf_counter,
        )
        csms.set_now(NOW)
        csms.set_non_ev_load(0.0, NOW)
        r = Running(csms, await csms.start(), events)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.csms.drain()
        await r.csms.stop()


def _basic(user: str, password: str | bytes) -> dict[str, str]:
    raw = password.encode() if isinstance(password, str) else password
    return {"Authorization": "Basic " + base64.b64encode(user.encode() + b":" + raw).decode()}


async def _independent_boot(url: str, **kw: Any) -> list[Any]:
    """An independent client: websockets directly, ocpp2.0.1, a raw BootNotification."""
    async with connect(url, subprotocols=["ocpp2.0.1"], compression=None, **kw) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "ocpp2.0.1"
        await ws.send(json.dumps(BOOT))
        reply: list[Any] = json.loads(await ws.recv())
        return reply


async def _refused_status(url: str, **kw: Any) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as info:
        await _independent_boot(url, **kw)
    return info.value


def _tls(ca: str | None, cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def _spec(station_id: str, **kw: Any) -> StationSpec:
    return StationSpec(station_id, "2.0.1", (EvseSpec(1, "AC", 11.0),), **kw)


def _no_secret_in(events: list[tuple[Any, ...]], *secrets: str) -> None:
    text = repr(events)
    for s in secrets:
        assert s not in text


# ==================================================================== unit level


def test_password_hash_format_salt_and_bounds() -> None:
    h1, h2 = hash_password(PW1), hash_password(PW1)
    scheme, n, r, p, salt, digest = h1.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert h1 != h2  # per-password random salt
    assert PW1 not in h1
    assert verify_password(h1, PW1) and verify_password(h2, PW1.encode())
    assert not verify_password(h1, PW1 + "x") and not verify_password("garbage", PW1)
    key = bytes.fromhex("0001020304050607FFFFFFFFFFFFFFFFFFFFFFFF")  # 1.6 whitepaper, 20 bytes
    hk = hash_password(key)
    assert verify_password(hk, key) and not verify_password(hk, key[:-1] + b"\0")
    for bad in ("short-15-chars!", "x" * 41, b"\x01" * 15):
        with pytest.raises(ValueError, match="16 to 40"):
            hash_password(bad)
    hash_password("x" * 16), hash_password("y" * 40)


def test_basic_header_parsing_keeps_binary_passwords() -> None:
    key = bytes.fromhex("0001020304050607FFFFFFFFFFFFFFFFFFFFFFFF")
    header = "Basic " + base64.b64encode(b"AL1000:" + key).decode()
    assert header == "Basic QUwxMDAwOgABAgMEBQYH////////////////"  # the whitepaper's example
    assert parse_basic_credentials(header) == ("AL1000", key)
    assert parse_basic_credentials("Basic !!") is None
    assert parse_basic_credentials("Bearer abc") is None
    assert parse_basic_credentials(None) is None
    assert parse_basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_security_config_rejects_plain_passwords_and_missing_tls_files() -> None:
    with pytest.raises(ValidationError, match="not plain text"):
        SecurityConfig(profile=1, passwords={"CP1": PW1})
    with pytest.raises(ValidationError, match="tls_cert_file"):
        SecurityConfig(profile=2, passwords={"CP1": hash_password(PW1)})
    with pytest.raises(ValidationError, match="tls_ca_file"):
        SecurityConfig(profile=3, tls_cert_file="a", tls_key_file="b")
    with pytest.raises(ValidationError, match="profile"):
        SecurityConfig(profile=4)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="both"):
        CsmsConfig(
            site=SiteConfig(grid_limit_kw=1.0),
            station_passwords={"CP1": PW1},
            security=SecurityConfig(profile=1, passwords={"CP1": hash_password(PW1)}),
        )
    assert CsmsConfig(site=SiteConfig(grid_limit_kw=1.0)).security.profile == 0
    with pytest.raises(ValueError, match="non-hashed"):
        StationAuthenticator(1, {"CP1": PW1})


def test_common_name_of_peer_certificate() -> None:
    cert = {"subject": ((("countryName", "DE"),), (("commonName", "CP1"),))}
    assert common_name(cert) == "CP1"
    assert common_name(None) is None and common_name({}) is None
    two = {"subject": ((("commonName", "A"),), (("commonName", "B"),))}
    assert common_name(two) is None


# ===================================================================== profile 1


async def test_profile1_independent_client(start_csms: StartCsms) -> None:
    r = await start_csms(
        profile=1, passwords={"CP1": hash_password(PW1), "CP2": hash_password(PW2)}
    )
    # the store and the running config hold hashes only
    assert PW1 not in repr(r.csms.config) and PW1 not in repr(r.csms.__dict__)
    assert PW1 not in repr(vars(r.csms._auth))

    reply = await _independent_boot(r.url() + "/CP1", additional_headers=_basic("CP1", PW1))
    assert reply[0] == 3 and reply[1] == "boot-1" and reply[2]["status"] == "Accepted"

    cases = [
        ("CP1", _basic("CP1", PW1 + "x"), "wrong password"),
        ("CP1", _basic("CP1", PW2), "wrong password"),
        ("CP1", _basic("CP2", PW2), "user is not the station id"),  # right pw of CP2
        ("CP1", None, "HTTP Basic credentials required"),
        ("CP1", {"Authorization": "Basic %%%"}, "malformed HTTP Basic credentials"),
        ("CP9", _basic("CP9", PW1), "no password stored for station"),
    ]
    for station, headers, reason in cases:
        err = await _refused_status(r.url() + f"/{station}", additional_headers=headers)
        assert err.response.status_code == 401
        assert err.response.headers["WWW-Authenticate"].startswith("Basic ")
        assert err.response.body.strip() == b"Unauthorized"  # says nothing about the ids
        assert r.kinds("security.auth_failed")[-1] == {
            "station": station,
            "reason": reason,
            "profile": 1,
            "http_status": 401,
        }
    assert len(r.kinds("security.auth_failed")) == len(cases)
    assert len(r.kinds("station.rejected")) == len(cases)
    assert [e["station"] for e in r.kinds("station.connected")] == ["CP1"]
    _no_secret_in(r.events, PW1, PW2)


async def test_profile1_station_emulator(start_csms: StartCsms) -> None:
    r = await start_csms(profile=1, passwords={"CP1": hash_password(PW1)})
    cs = ChargingStation(_spec("CP1", password=PW1), r.url())
    await cs.connect(NOW)
    await r.csms.drain()
    assert cs.online and r.csms.registry.station("CP1").booted_at == NOW
    await cs.close()

    for spec in (_spec("CP1", password="wrong-password-0123"), _spec("CP1")):
        bad = ChargingStation(spec, r.url())
        with pytest.raises(InvalidStatus) as info:
            await bad.connect(NOW)
        assert info.value.response.status_code == 401 and not bad.online
        await bad.close()
    assert [e["reason"] for e in r.kinds("security.auth_failed")] == [
        "wrong password",
        "HTTP Basic credentials required",
    ]


async def test_profile0_default_is_unchanged(start_csms: StartCsms) -> None:
    r = await start_csms()
    reply = await _independent_boot(r.url() + "/ANY")
    assert reply[2]["status"] == "Accepted"
    assert not r.kinds("security.auth_failed")


# ===================================================================== profile 2


async def test_profile2_tls_and_basic(start_csms: StartCsms, pki: Pki) -> None:
    r = await start_csms(
        profile=2,
        passwords={"CP1": hash_password(PW1)},
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
    )
    # the project's station emulator over wss with Basic
    cs = ChargingStation(_spec("CP1", password=PW1, tls_ca_file=pki.ca), r.url("wss"))
    await cs.connect(NOW)
    await r.csms.drain()
    assert cs.online and r.csms.registry.station("CP1").booted_at == NOW
    await cs.close()

    # an independent client trusting the CA
    reply = await _independent_boot(
        r.url("wss") + "/CP1", ssl=_tls(pki.ca), additional_headers=_basic("CP1", PW1)
    )
    assert reply[2]["status"] == "Accepted"
    # TLS does not replace Basic: wrong or missing password is still 401
    err = await _refused_status(
        r.url("wss") + "/CP1", ssl=_tls(pki.ca), additional_headers=_basic("CP1", PW2)
    )
    assert err.response.status_code == 401
    err = await _refused_status(r.url("wss") + "/CP1", ssl=_tls(pki.ca))
    assert err.response.status_code == 401

    # a client that does not trust the CA fails the TLS handshake (emulator and library)
    untrusting = ChargingStation(_spec("CP1", password=PW1, tls_ca_file=pki.other_ca), r.url("wss"))
    with pytest.raises(ssl.SSLCertVerificationError):
        await untrusting.connect(NOW)
    assert not untrusting.online
    await untrusting.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        await _independent_boot(
            r.url("wss") + "/CP1", ssl=_tls(None), additional_headers=_basic("CP1", PW1)
        )
    # plain ws:// to a TLS listener does not get an OCPP connection
    with pytest.raises((InvalidHandshake, OSError, EOFError)):
        await _independent_boot(r.url() + "/CP1", additional_headers=_basic("CP1", PW1))
    assert [e["station"] for e in r.kinds("station.connected")] == ["CP1", "CP1"]
    _no_secret_in(r.events, PW1, PW2)


def test_emulator_refuses_tls_settings_on_ws_url(pki: Pki) -> None:
    with pytest.raises(ValueError, match="wss://"):
        ChargingStation(_spec("CP1", tls_ca_file=pki.ca), "ws://127.0.0.1:1/ocpp")


# ===================================================================== profile 3


async def test_profile3_client_certificates(start_csms: StartCsms, pki: Pki) -> None:
    r = await start_csms(
        profile=3,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_ca_file=pki.ca,
    )
    cp1_cert, cp1_key = pki.clients["CP1"]
    # the emulator with its own certificate, no password
    spec = _spec("CP1", tls_ca_file=pki.ca, tls_cert_file=cp1_cert, tls_key_file=cp1_key)
    cs = ChargingStation(spec, r.url("wss"))
    await cs.connect(NOW)
    await r.csms.drain()
    assert cs.online and r.csms.registry.station("CP1").booted_at == NOW
    await cs.close()

    # the independent client with the right certificate
    reply = await _independent_boot(r.url("wss") + "/CP1", ssl=_tls(pki.ca, pki.clients["CP1"]))
    assert reply[2]["status"] == "Accepted"

    # CP2's (valid) certificate used for CP1: 403 at the handshake, emulator and library
    err = await _refused_status(r.url("wss") + "/CP1", ssl=_tls(pki.ca, pki.clients["CP2"]))
    assert err.response.status_code == 403
    cp2_cert, cp2_key = pki.clients["CP2"]
    impostor = ChargingStation(
        _spec("CP1", tls_ca_file=pki.ca, tls_cert_file=cp2_cert, tls_key_file=cp2_key),
        r.url("wss"),
    )
    with pytest.raises(InvalidStatus) as info:
        await impostor.connect(NOW)
    assert info.value.response.status_code == 403
    await impostor.close()
    assert (
        r.kinds("security.auth_failed")
        == [
            {
                "station": "CP1",
                "reason": "client certificate is for station 'CP2'",
                "profile": 3,
                "http_status": 403,
            }
        ]
        * 2
    )

    # no certificate, or one from another CA: the TLS handshake fails (never reaches HTTP)
    for ctx in (_tls(pki.ca), _tls(pki.ca, pki.rogue)):
        with pytest.raises((ssl.SSLError, InvalidHandshake, OSError, EOFError)):
            await _independent_boot(r.url("wss") + "/CP1", ssl=ctx)
    no_cert = ChargingStation(_spec("CP1", tls_ca_file=pki.ca), r.url("wss"))
    with pytest.raises((ssl.SSLError, InvalidHandshake, OSError, EOFError)):
        await no_cert.connect(NOW)
    assert not no_cert.online
    await no_cert.close()
    assert [e["station"] for e in r.kinds("station.connected")] == ["CP1", "CP1"]
