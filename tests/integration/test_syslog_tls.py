"""Ledger export over syslog/TLS (RFC 5425) against a local collector on 127.0.0.1.

The collector is a fake of the outside SIEM: a real TLS server socket in a thread, reading
RFC 5425 octet-counted frames. Certificates are a throwaway CA and leaves made here with
`cryptography`. Adversarial cases: a server certificate from another CA, a certificate for
another name, no listener, a plaintext listener (nothing may reach it in clear), and a collector
that requires a client certificate (mutual TLS).

No test sleeps or measures time: the sender's close waits for the collector's close_notify, which
the collector sends only after reading every frame, so "sent" means "read" when `with` exits.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from egide.ledger.syslog import ExportError, SyslogTlsSender, format_event

HOST = "127.0.0.1"
GUARD = 10.0  # socket timeout so that a broken test fails instead of hanging; never asserted


# --- a throwaway PKI -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def make_ca(directory: Path, name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(hours=1))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, key, cert, path)


def issue(
    ca: Authority,
    directory: Path,
    stem: str,
    *,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    client: bool = False,
) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, stem)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(hours=1))
        .not_valid_after(_now() + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    cert_path = directory / f"{stem}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert_path, _write_key(key, directory / f"{stem}.key"))


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    server: Issued  # for 127.0.0.1 and localhost, by ca
    rogue_server: Issued  # for 127.0.0.1 and localhost, by other_ca
    named_server: Issued  # for collector.example only, by ca
    client: Issued  # client certificate by ca
    rogue_client: Issued  # client certificate by other_ca


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("syslog-pki")
    ca = make_ca(directory, "egide-test-ca")
    other = make_ca(directory, "other-ca")
    local = {"dns": ("localhost",), "ips": (HOST,)}
    return Pki(
        ca=ca,
        other_ca=other,
        server=issue(ca, directory, "server", **local),  # type: ignore[arg-type]
        rogue_server=issue(other, directory, "rogue", **local),  # type: ignore[arg-type]
        named_server=issue(ca, directory, "named", dns=("collector.example",)),
        client=issue(ca, directory, "client", client=True),
        rogue_client=issue(other, directory, "rogue-client", client=True),
    )


# --- the fake collector --------------------------------------------------------------------------
def read_frames(conn: socket.socket, frames: list[bytes]) -> None:
    """RFC 5425 4.3: SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG, MSG-LEN = NONZERO-DIGIT *DIGIT."""
    buffer = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            assert buffer == b"", f"connection ended inside a frame: {buffer[:40]!r}"
            return
        buffer += chunk
        while b" " in buffer:
            length, _, rest = buffer.partition(b" ")
            assert re.fullmatch(rb"[1-9][0-9]*", length), f"bad MSG-LEN {length!r}"
            if len(rest) < int(length):
                break
            frames.append(rest[: int(length)])
            buffer = rest[int(length) :]


class Collector:
    """Accepts one connection on 127.0.0.1:<free port>; TLS when given a context."""

    def __init__(self, context: ssl.SSLContext | None, *, ending: str = "confirm") -> None:
        # ending: "confirm" answers close_notify (RFC 5425 4.4), "hang_up" closes TCP without
        # it, "silent" never answers until `release` is set.
        self.context = context
        self.ending = ending
        self.release = threading.Event()
        self.listener = socket.create_server((HOST, 0))
        self.listener.settimeout(GUARD)
        self.port: int = self.listener.getsockname()[1]
        self.frames: list[bytes] = []
        self.raw = bytearray()  # plaintext mode: every byte the client sent
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> Collector:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(GUARD)
        self.listener.close()
        assert not self.thread.is_alive()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.errors.append(f"accept: {exc}")
            return
        conn.settimeout(GUARD)
        with conn:
            if self.context is None:
                self._plain(conn)
                return
            try:
                tls = self.context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(f"handshake: {exc}")
                return
            try:
                read_frames(tls, self.frames)
                if self.ending == "confirm":
                    tls.unwrap()  # answer the sender's close_notify with ours
                elif self.ending == "silent":
                    self.release.wait(GUARD)
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(f"session: {exc}")
            finally:
                tls.close()

    def _plain(self, conn: socket.socket) -> None:
        # A collector that does not speak TLS: records what arrives, answers in clear.
        first = conn.recv(65536)
        self.raw += first
        if first:
            conn.sendall(b"220 plain syslog here\n")
        try:
            while chunk := conn.recv(65536):
                self.raw += chunk
        except OSError as exc:  # the sender gave up on us: reset, as expected
            self.errors.append(f"plain: {exc}")


def server_context(server: Issued, *, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


def events(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"evt-{i:04d}",
            "time": f"2026-03-02T08:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "user": "u-claire",
            "role": "clinician",
            "action": "read" if i % 3 else "login_failed",
            "outcome": "success" if i % 5 else "denied",
            "patient": f"patient-Élodie-{i}" if i % 2 else 'p"\\]',
            "resource_type": "Observation",
            "resource_id": f"obs-{i}",
            "count": 1,
            "ip": "10.0.0.7",
            "device": None,
            "purpose": "line\nbreak" if i == 7 else None,
            "request_id": f"req-{i}",
            "reasons": ["care-team"],
            "seq": i + 1,
        }
        for i in range(n)
    ]


def body(message: bytes) -> Any:
    """The access-event JSON carried in MSG, after the BOM."""
    _, bom, tail = message.partition(b"] \xef\xbb\xbf")
    assert bom
    return json.loads(tail.decode("utf-8"))


@pytest.fixture
def collector(pki: Pki) -> Iterator[Collector]:
    with Collector(server_context(pki.server)) as running:
        yield running


# --- delivery ------------------------------------------------------------------------------------
def test_events_arrive_intact_and_in_order(pki: Pki, collector: Collector) -> None:
    batch = events(250)
    with SyslogTlsSender(HOST, collector.port, cafile=pki.ca.path, timeout=GUARD) as sender:
        sent = sender.send_events(batch, hostname="vault.example.org", procid="77")
    assert sent == 250
    collector.__exit__()
    assert collector.errors == []
    assert collector.frames == [
        format_event(e, hostname="vault.example.org", procid="77") for e in batch
    ]
    assert [body(m) for m in collector.frames] == batch
    assert collector.frames[0].startswith(b"<108>1 2026-03-02T08:00:00Z vault.example.org ")


def test_localhost_name_and_send_without_with(pki: Pki, collector: Collector) -> None:
    sender = SyslogTlsSender("localhost", collector.port, cafile=pki.ca.path, timeout=GUARD)
    sender.send(format_event(events(1)[0], hostname="h"))
    sender.close()
    sender.close()  # idempotent
    collector.__exit__()
    assert len(collector.frames) == 1
    assert collector.errors == []


def test_hostname_override_matches_a_named_certificate(pki: Pki) -> None:
    with (
        Collector(server_context(pki.named_server)) as collector,
        SyslogTlsSender(
            HOST,
            collector.port,
            cafile=pki.ca.path,
            server_hostname="collector.example",
            timeout=GUARD,
        ) as sender,
    ):
        sender.send_events(events(3), hostname="h")
    assert len(collector.frames) == 3


@pytest.mark.parametrize("ending", ["hang_up", "silent"])
def test_an_unconfirmed_close_is_an_error(pki: Pki, ending: str) -> None:
    # The frames did arrive, but the sender cannot know it without the collector's
    # close_notify: it must say so rather than report success.
    with Collector(server_context(pki.server), ending=ending) as collector:
        sender = SyslogTlsSender(HOST, collector.port, cafile=pki.ca.path, timeout=0.5)
        with pytest.raises(ExportError) as info, sender:
            sender.send_events(events(2), hostname="h")
        collector.release.set()
    expected = {"hang_up": "without TLS close_notify", "silent": "timed out"}[ending]
    assert expected in str(info.value)
    assert len(collector.frames) == 2


# --- refusals ------------------------------------------------------------------------------------
def test_server_certificate_from_another_ca_is_refused(pki: Pki) -> None:
    with Collector(server_context(pki.rogue_server)) as collector:
        sender = SyslogTlsSender(HOST, collector.port, cafile=pki.ca.path, timeout=GUARD)
        with pytest.raises(ExportError) as info, sender:
            sender.send_events(events(2), hostname="h")
    message = str(info.value)
    assert "certificate verify failed" in message
    assert "\n" not in message
    assert collector.frames == []


def test_system_trust_store_does_not_trust_a_private_ca(pki: Pki, collector: Collector) -> None:
    with pytest.raises(ExportError, match="certificate verify failed"):
        SyslogTlsSender(HOST, collector.port, timeout=GUARD).connect()
    collector.__exit__()
    assert collector.frames == []


def test_hostname_mismatch_is_refused(pki: Pki) -> None:
    with Collector(server_context(pki.named_server)) as collector:
        sender = SyslogTlsSender(HOST, collector.port, cafile=pki.ca.path, timeout=GUARD)
        with pytest.raises(ExportError) as info, sender:
            sender.send_events(events(2), hostname="h")
    assert "hostname mismatch" in str(info.value)
    assert "'127.0.0.1'" in str(info.value)
    assert collector.frames == []


def test_wrong_override_name_is_refused(pki: Pki, collector: Collector) -> None:
    sender = SyslogTlsSender(
        HOST,
        collector.port,
        cafile=pki.ca.path,
        server_hostname="collector.example",
        timeout=GUARD,
    )
    with pytest.raises(ExportError, match="hostname mismatch"):
        sender.connect()
    collector.__exit__()
    assert collector.frames == []


def test_listener_not_running(pki: Pki) -> None:
    # Bound but not listening: the port is ours, so nobody else can answer on it.
    with socket.socket() as reserved:
        reserved.bind((HOST, 0))
        port = reserved.getsockname()[1]
        sender = SyslogTlsSender(HOST, port, cafile=pki.ca.path, timeout=GUARD)
        with pytest.raises(ExportError) as info:
            sender.send_events(events(1), hostname="h")
    assert str(info.value) == (
        f"syslog export to {HOST}:{port} failed: connection refused (after 0 events were sent)"
    )
    assert info.value.sent == 0


def test_never_falls_back_to_plaintext(pki: Pki) -> None:
    batch = events(3)
    with Collector(None) as plain:
        sender = SyslogTlsSender(HOST, plain.port, cafile=pki.ca.path, timeout=GUARD)
        with pytest.raises(ExportError, match="TLS failure"), sender:
            sender.send_events(batch, hostname="h")
    assert plain.raw[:1] == b"\x16"  # a TLS handshake record: the ClientHello, nothing else
    for needle in (b"evt-0000", b"u-claire", "Élodie".encode(), b"egide@32473", b"\xef\xbb\xbf"):
        assert needle not in plain.raw


def test_bad_client_settings_are_refused(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="without its certificate"):
        SyslogTlsSender(HOST, 6514, cafile=pki.ca.path, keyfile=pki.client.key)
    with pytest.raises(ExportError, match="cannot load the CA file"):
        SyslogTlsSender(HOST, 6514, cafile=tmp_path / "missing.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ExportError, match="cannot load the CA file"):
        SyslogTlsSender(HOST, 6514, cafile=garbage)
    with pytest.raises(ExportError, match="cannot load the client certificate"):
        SyslogTlsSender(
            HOST, 6514, cafile=pki.ca.path, certfile=pki.client.cert, keyfile=pki.server.key
        )  # key of another certificate
    with pytest.raises(ExportError, match="port"):
        SyslogTlsSender(HOST, 0, cafile=pki.ca.path)


# --- mutual TLS ----------------------------------------------------------------------------------
def test_mutual_tls_with_client_certificate(pki: Pki) -> None:
    context = server_context(pki.server, client_ca=pki.ca.path)
    with (
        Collector(context) as collector,
        SyslogTlsSender(
            HOST,
            collector.port,
            cafile=pki.ca.path,
            certfile=pki.client.cert,
            keyfile=pki.client.key,
            timeout=GUARD,
        ) as sender,
    ):
        sender.send_events(events(5), hostname="h")
    assert collector.errors == []
    assert [body(m)["id"] for m in collector.frames] == [f"evt-{i:04d}" for i in range(5)]


@pytest.mark.parametrize("with_cert", ["none", "other-ca"])
def test_mutual_tls_refuses_missing_or_foreign_client_certificate(pki: Pki, with_cert: str) -> None:
    client = {"none": None, "other-ca": pki.rogue_client}[with_cert]
    context = server_context(pki.server, client_ca=pki.ca.path)
    with Collector(context) as collector:
        sender = SyslogTlsSender(
            HOST,
            collector.port,
            cafile=pki.ca.path,
            timeout=GUARD,
            certfile=client.cert if client else None,
            keyfile=client.key if client else None,
        )
        # Under TLS 1.3 the collector's refusal comes after the client's handshake: the
        # sender must still report it (at the latest when it waits for close_notify).
        with pytest.raises(ExportError) as info, sender:
            sender.send_events(events(3), hostname="h")
    assert "\n" not in str(info.value)
    assert collector.frames == []
    assert collector.errors
    assert collector.errors[0].startswith("handshake")
