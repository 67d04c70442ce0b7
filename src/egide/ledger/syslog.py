"""Ledger export to a SIEM: RFC 5424 syslog messages over TLS (RFC 5425).

Security role. The ledger proves after the fact that nobody rewrote history; a copy of every
entry held by a *logically separate* system (the hospital's SIEM or log collector) makes misuse
visible while it happens and keeps the record even if this host is lost or taken over
(OWASP ASVS 5.0 V16.4.3). This module turns the access-event dicts of
`egide.ledger.service.iter_events` into syslog messages and sends them to one configured
collector, only ever over verified TLS.

Message format (RFC 5424, section 6)::

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [egide@32473 id="..." ...] BOM{json}

* PRI = facility * 8 + severity (RFC 5424 6.2.1). Facility 13, "log audit" (Table 1), by
  default: these messages are audit records, and keeping them off facility 10 ("authpriv")
  keeps them apart from the sending host's own sshd/sudo/PAM traffic, so a collector can route
  Égide's audit trail on its own. Facility 10 (`FACILITY_AUTHPRIV`) may be chosen instead for
  collectors that only keep authpriv in restricted files.
* Severity follows the outcome: success -> 6 informational, denied -> 4 warning, error -> 3
  error, an unknown outcome -> 4 warning (it deserves a look). Failed logins, failed MFA and
  break-the-glass are raised to at least 5 notice, since ASVS V16.3.1 and V16.3.3 make them
  the events a security officer watches.
* TIMESTAMP: the event's own time (the time of the act, not of the export), converted to UTC
  with "Z" (RFC 3339 as restricted by RFC 5424 6.2.3; ASVS V16.2.2). A time that is missing,
  unparsable or without an offset is sent as the NILVALUE "-" rather than guessed; the exact
  value still travels in MSG.
* MSGID: the action, reduced to PRINTUSASCII (others become "_") and at most 32 octets
  (RFC 5424 6.2.7).
* STRUCTURED-DATA: one element `[egide@32473 ...]` with id, seq, user, role, outcome,
  patient, resource_type, resource_id, count, ip and request_id (RFC 5424 6.3). 32473 is the
  Private Enterprise Number that RFC 5612 reserves for documentation; a deployment with its own
  PEN passes it as `enterprise_id`. PARAM-VALUEs escape '"', '\\' and ']' with a backslash
  (RFC 5424 6.3.3). Control characters (C0 and DEL) in values are written as "#" and three
  decimal digits, as RFC 5424 8.2 suggests, so that a value such as a crafted user-agent or
  id cannot start a forged line in a collector that stores messages as text lines (log
  injection, ASVS V16.4.1); MSG keeps the exact value, JSON-escaped. An absent field is left
  out: RFC 5424 has no NILVALUE inside SD-PARAMs, and `user="-"` could not be told from a user
  literally named "-".
* MSG: the full access-event JSON, UTF-8 prefixed with the BOM (RFC 5424 6.4, MSG-UTF8), so a
  SIEM can parse the whole event (ASVS V16.2.4). It is never truncated: a cut JSON document
  would no longer be the ledger's record. Entries are a few hundred octets, well within the
  2048 octets every RFC 5425 receiver must accept.

Transport (RFC 5425, updated by RFC 9662): TCP with TLS 1.2 or later, server certificate and
host name verified against the configured CA file (or the system store when none is given),
optionally a client certificate for mutual TLS. Each message is framed by octet counting,
`MSG-LEN SP SYSLOG-MSG` (RFC 5425 4.3; RFC 6587 3.4.1): unlike the newline-terminated framing
of RFC 6587 3.4.2, no byte inside a message can end it early, so a value cannot forge a second
message. There is no plaintext mode and no fallback: a socket is written only after the TLS
handshake has verified the collector, so patient ids never cross the network in clear.

Closing sends close_notify and waits for the collector's, which RFC 5425 4.4 obliges it to send
back: only then is it known that the collector read every message, and a refusal that TLS 1.3
delivers after the handshake (a client certificate the collector does not accept) surfaces as
an error instead of silent loss. A collector that hangs up without close_notify is therefore
reported as a failure too: what it kept is unknown.

Every failure is one `ExportError` line naming the cause (connection refused, certificate verify
failed, hostname mismatch, ...), never a stack trace or an event's content (ASVS V16.5.1), and
the export stops there: it fails closed (V16.5.3). Nothing is retried or buffered here: the
ledger itself is the buffer, and a failed export is run again (`id` and `seq` let the collector
drop duplicates).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import ssl
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from egide.core.errors import EgideError

__all__ = [
    "DOCUMENTATION_PEN",
    "FACILITY_AUTHPRIV",
    "FACILITY_LOG_AUDIT",
    "ExportError",
    "SyslogTlsSender",
    "format_event",
    "frame",
    "local_hostname",
    "severity_of",
]

FACILITY_AUTHPRIV = 10  # RFC 5424 Table 1: security/authorization messages
FACILITY_LOG_AUDIT = 13  # RFC 5424 Table 1: log audit
# RFC 5612: Private Enterprise Number 32473 is reserved for use in documentation and examples.
DOCUMENTATION_PEN = "32473"

SEVERITY_ERROR = 3
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
SEVERITY_INFORMATIONAL = 6

_SEVERITY_BY_OUTCOME = {
    "success": SEVERITY_INFORMATIONAL,
    "denied": SEVERITY_WARNING,
    "error": SEVERITY_ERROR,
}
# Actions raised to at least notice whatever their outcome (ASVS V16.3.1, V16.3.3).
_NOTICE_ACTIONS = frozenset({"login_failed", "mfa_failed", "break_glass"})

# The event fields carried as SD-PARAMs, in this order.
SD_FIELDS = (
    "id",
    "seq",
    "user",
    "role",
    "outcome",
    "patient",
    "resource_type",
    "resource_id",
    "count",
    "ip",
    "request_id",
)
_SD_ID_NAME = "egide"

NILVALUE = "-"
BOM = b"\xef\xbb\xbf"
_VERSION = "1"

# RFC 5424 section 6: SD-NAME = 1*32PRINTUSASCII except '=', SP, ']', '"'.
_SD_NAME_RE = re.compile(r"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}")
_PRINTUSASCII_RE = re.compile(r"[\x21-\x7e]+")
_NOT_PRINTUSASCII_RE = re.compile(r"[^\x21-\x7e]")
_ENTERPRISE_ID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# OpenSSL X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH_CODES = frozenset({62, 64})
# A collector sends nothing back in RFC 5425; past this much, closing gives up.
_MAX_UNEXPECTED_BYTES = 1 << 20


class ExportError(EgideError):
    """The ledger could not be exported to the collector; the message is one line.

    `sent` counts the messages written to the connection before the failure (None when the
    failure is not about sending, e.g. a bad setting). Written is not delivered: delivery is
    confirmed only when `SyslogTlsSender.close` returns without error.
    """

    status, code = 502, "exception"

    def __init__(self, message: str, *, sent: int | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.sent = sent


def _header_field(value: str | None, *, name: str, max_len: int) -> str:
    """A HEADER field of RFC 5424 6.2: NILVALUE or 1*max_len PRINTUSASCII; else refused."""
    if value is None:
        return NILVALUE
    if len(value) > max_len or not _PRINTUSASCII_RE.fullmatch(value):
        msg = f"invalid syslog {name}: it must be 1 to {max_len} printable US-ASCII characters"
        raise ExportError(msg)
    return value


def _sd_name(value: str, *, what: str) -> str:
    """An SD-NAME (RFC 5424 6.3.3 grammar) or a refusal: a silently changed name would route
    the data elsewhere at the collector."""
    if not _SD_NAME_RE.fullmatch(value):
        msg = f"invalid syslog {what} {value!r}: not an RFC 5424 SD-NAME"
        raise ExportError(msg)
    return value


def _sd_id(enterprise_id: str) -> str:
    """The SD-ID `egide@<enterprise number>` (RFC 5424 6.3.2, 7.2.2)."""
    if not _ENTERPRISE_ID_RE.fullmatch(enterprise_id):
        msg = f"invalid syslog enterprise id {enterprise_id!r}: digits and dots expected"
        raise ExportError(msg)
    return _sd_name(f"{_SD_ID_NAME}@{enterprise_id}", what="SD-ID")


# Checked once at import: the fixed PARAM-NAMEs follow the grammar.
for _field in SD_FIELDS:
    _sd_name(_field, what="PARAM-NAME")


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _param_value(value: Any) -> bytes:
    """A PARAM-VALUE: valid UTF-8, '"', '\\' and ']' escaped (RFC 5424 6.3.3), control
    characters written as #ddd (RFC 5424 8.2) against log injection."""
    text = _CONTROL_RE.sub(lambda m: f"#{ord(m.group()):03d}", _text(value))
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
    # A lone surrogate cannot be UTF-8; it becomes U+FFFD here (MSG keeps it JSON-escaped).
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8")


def _timestamp(value: Any) -> str:
    """RFC 5424 6.2.3 TIMESTAMP in UTC with "Z", or NILVALUE when the time is unknown."""
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return NILVALUE
    else:
        return NILVALUE
    if when.tzinfo is None or when.utcoffset() is None:
        return NILVALUE  # no offset: guessing one would misplace the act in time
    try:
        utc = when.astimezone(dt.UTC)
    except OverflowError:
        return NILVALUE
    return utc.replace(tzinfo=None).isoformat() + "Z"


def _msgid(action: Any) -> str:
    if action is None:
        return NILVALUE
    text = _NOT_PRINTUSASCII_RE.sub("_", _text(action))[:32]
    return text or NILVALUE


def severity_of(event: dict[str, Any]) -> int:
    """The RFC 5424 severity of an access event (see the module docstring)."""
    outcome = event.get("outcome")
    if outcome is None:
        outcome = "success"  # DESIGN.md: success is the default outcome
    severity = SEVERITY_WARNING  # an unknown outcome deserves a look
    if isinstance(outcome, str):
        severity = _SEVERITY_BY_OUTCOME.get(outcome, SEVERITY_WARNING)
    action = event.get("action")
    if isinstance(action, str) and action in _NOTICE_ACTIONS:
        severity = min(severity, SEVERITY_NOTICE)
    return severity


def _msg(event: dict[str, Any]) -> bytes:
    text = json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)
    try:
        return BOM + text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate: ASCII-only JSON escapes it exactly (\udXXX), still valid UTF-8.
        return BOM + json.dumps(event, separators=(",", ":"), default=str).encode("ascii")


def format_event(
    event: dict[str, Any],
    *,
    hostname: str,
    app_name: str = "egide",
    procid: str | None = None,
    facility: int = FACILITY_LOG_AUDIT,
    enterprise_id: str = DOCUMENTATION_PEN,
) -> bytes:
    """One access event as an RFC 5424 SYSLOG-MSG (without the RFC 5425 length prefix).

    `hostname`, `app_name` and `procid` are HEADER fields (RFC 5424 6.2.4-6.2.6): printable
    US-ASCII of at most 255, 48 and 128 characters, or None/"-" for the NILVALUE; anything else
    raises ExportError. Event values are never refused: they are encoded to fit the grammar.
    """
    if not 0 <= facility <= 23:
        msg = f"invalid syslog facility {facility}: RFC 5424 facilities are 0 to 23"
        raise ExportError(msg)
    pri = facility * 8 + severity_of(event)
    header = " ".join(
        (
            f"<{pri}>{_VERSION}",
            _timestamp(event.get("time")),
            _header_field(hostname, name="HOSTNAME", max_len=255),
            _header_field(app_name, name="APP-NAME", max_len=48),
            _header_field(procid, name="PROCID", max_len=128),
            _msgid(event.get("action")),
        )
    )
    sd = bytearray(b"[" + _sd_id(enterprise_id).encode("ascii"))
    for name in SD_FIELDS:
        value = event.get(name)
        if value is None:
            continue
        sd += b" " + name.encode("ascii") + b'="' + _param_value(value) + b'"'
    sd += b"]"
    return header.encode("ascii") + b" " + bytes(sd) + b" " + _msg(event)


def local_hostname() -> str:
    """This host's name for the HOSTNAME field: its FQDN when it fits RFC 5424 6.2.4 (printable
    US-ASCII, at most 255), else the NILVALUE rather than a refusal to export."""
    name = socket.getfqdn()
    if 0 < len(name) <= 255 and _PRINTUSASCII_RE.fullmatch(name):
        return name
    return NILVALUE


def frame(message: bytes) -> bytes:
    """RFC 5425 4.3 octet-counting frame: MSG-LEN SP SYSLOG-MSG (MSG-LEN >= 1, in octets)."""
    if not message:
        msg = "refusing to send an empty syslog message (RFC 5425 MSG-LEN is at least 1)"
        raise ExportError(msg)
    return str(len(message)).encode("ascii") + b" " + message


def _reason(exc: BaseException, *, server_hostname: str) -> str:
    """One line naming why the connection failed, without the stack."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH_CODES:
            return (
                f"hostname mismatch: the collector's certificate is not valid for "
                f"{server_hostname!r}"
            )
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLEOFError):
        return "the collector closed the connection without TLS close_notify"
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or type(exc).__name__
        return f"TLS failure: {str(detail).lower().replace('_', ' ')}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "connection closed by the collector"
    if isinstance(exc, socket.gaierror):
        return "cannot resolve the collector's host name"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


class SyslogTlsSender:
    """A TLS connection to one syslog collector (RFC 5425). Not thread-safe.

    Use it as a context manager: entering connects (TCP, then the TLS handshake that verifies
    the collector), leaving closes (see `close`), which confirms that every message was read.
    `send` connects on first use too.

    TLS runs over memory BIOs (`ssl.SSLObject`) so that this class, not the socket wrapper,
    decides what a close means: `SSLSocket.unwrap` reports success when the peer answers our
    close_notify with a fatal alert (OpenSSL marks the session shut down either way), which
    would turn a collector's refusal into silent loss.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        cafile: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        timeout: float = 10.0,
        server_hostname: str | None = None,
    ) -> None:
        if not 0 < port < 65536:
            msg = f"invalid syslog collector port {port}"
            raise ExportError(msg)
        if timeout <= 0:
            msg = "the syslog timeout must be positive"
            raise ExportError(msg)
        if keyfile is not None and certfile is None:
            msg = "a client key was given without its certificate"
            raise ExportError(msg)
        self.host = host
        self.port = port
        self.timeout = timeout
        self.server_hostname = server_hostname or host
        self._context = self._make_context(cafile, certfile, keyfile)
        self._sock: socket.socket | None = None
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    @staticmethod
    def _make_context(
        cafile: Path | None, certfile: Path | None, keyfile: Path | None
    ) -> ssl.SSLContext:
        # create_default_context: CERT_REQUIRED and check_hostname on. With a CA file it
        # trusts that file only (pinning the export to the collector's CA), else the system
        # store. TLS 1.2 is the floor RFC 5425 (as updated by RFC 9662) allows; strict X.509
        # checks, as Python 3.13 applies by default.
        try:
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None
            )
        except (OSError, ssl.SSLError) as exc:
            msg = f"cannot load the CA file {cafile}: {_reason(exc, server_hostname='')}"
            raise ExportError(msg) from None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.verify_flags |= ssl.VERIFY_X509_STRICT
        if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
            msg = "refusing a TLS context that does not verify the collector"
            raise ExportError(msg)
        if certfile is not None:
            try:
                context.load_cert_chain(
                    str(certfile), str(keyfile) if keyfile is not None else None
                )
            except (OSError, ssl.SSLError) as exc:
                msg = (
                    f"cannot load the client certificate {certfile}: "
                    f"{_reason(exc, server_hostname='')}"
                )
                raise ExportError(msg) from None
        return context

    # --- the byte pump between the socket and the TLS object ----------------------------------
    def _flush(self) -> None:
        assert self._sock is not None
        data = self._outgoing.read()
        if data:
            self._sock.sendall(data)

    def _fill(self) -> None:
        assert self._sock is not None
        data = self._sock.recv(65536)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _fill_available(self) -> None:
        """Feed the TLS object whatever has already arrived, without waiting for more."""
        assert self._sock is not None
        self._sock.settimeout(0.0)
        try:
            while data := self._sock.recv(65536):
                self._incoming.write(data)
            self._incoming.write_eof()
        except BlockingIOError:
            pass
        finally:
            self._sock.settimeout(self.timeout)

    def _fail(self, exc: BaseException, *, sent: int | None = None) -> ExportError:
        reason = _reason(exc, server_hostname=self.server_hostname)
        return ExportError(f"syslog export to {self.host}:{self.port} failed: {reason}", sent=sent)

    def connect(self) -> None:
        """Open TCP and complete the TLS handshake; nothing is written before it verifies."""
        if self._tls is not None:
            return
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise self._fail(exc) from None
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self._context.wrap_bio(
            self._incoming, self._outgoing, server_hostname=self.server_hostname
        )
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    self._fill()
            self._flush()
        except OSError as exc:
            self._send_alert_quietly()
            self.abort()
            raise self._fail(exc) from None
        self._tls = tls

    def _send_alert_quietly(self) -> None:
        """After a failed handshake, let the collector see our alert (best effort)."""
        try:
            self._flush()
        except OSError:
            return

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def send(self, message: bytes) -> None:
        """Send one SYSLOG-MSG, framed by octet counting (RFC 5425 4.3)."""
        data = frame(message)
        self.connect()
        assert self._tls is not None
        try:
            self._tls.write(data)
            self._flush()
        except OSError as exc:
            cause = self._pending_alert() or exc
            self.abort()
            raise self._fail(cause) from None

    def _pending_alert(self) -> ssl.SSLError | None:
        """After a failed write, the TLS alert the collector sent before closing, if any: it
        names the real cause (e.g. a client certificate refused after a TLS 1.3 handshake)."""
        assert self._tls is not None
        try:
            self._fill()
            self._tls.read(65536)
        except ssl.SSLError as alert:
            return None if isinstance(alert, ssl.SSLWantReadError) else alert
        except OSError:
            return None
        return None

    def send_events(
        self,
        events: Iterable[dict[str, Any]],
        *,
        hostname: str,
        app_name: str = "egide",
        procid: str | None = None,
        facility: int = FACILITY_LOG_AUDIT,
        enterprise_id: str = DOCUMENTATION_PEN,
    ) -> int:
        """Format and send every event in order; return how many were written."""
        sent = 0
        for event in events:
            message = format_event(
                event,
                hostname=hostname,
                app_name=app_name,
                procid=procid,
                facility=facility,
                enterprise_id=enterprise_id,
            )
            try:
                self.send(message)
            except ExportError as exc:
                msg = f"{exc.message} (after {sent} events were sent)"
                raise ExportError(msg, sent=sent) from None
            sent += 1
        return sent

    def close(self) -> None:
        """Send close_notify, wait for the collector's, then close the socket.

        RFC 5425 4.4: a receiver that gets close_notify MUST reply with close_notify, and it
        does so after reading everything before it; so its reply confirms that every message
        was read. A fatal alert instead (e.g. a refused client certificate), a reset, an EOF
        without close_notify, or no answer within the timeout raises ExportError: it is then
        not known what the collector kept.
        """
        tls = self._tls
        if tls is None:
            self.abort()
            return
        try:
            self._drain_received(tls)
            # Queues our close_notify; the collector's is awaited below.
            with contextlib.suppress(ssl.SSLWantReadError):
                tls.unwrap()
            self._flush()
            drained = 0
            while True:
                try:
                    data = tls.read(65536)
                    drained += len(data)
                    if drained > _MAX_UNEXPECTED_BYTES:
                        msg = f"syslog export to {self.host}:{self.port} failed: the collector"
                        raise ExportError(f"{msg} sent data instead of closing")
                    if data == b"" and tls.pending() == 0:
                        return  # close_notify received (read answers b"" for it)
                except ssl.SSLWantReadError:
                    self._fill()
                except ssl.SSLZeroReturnError:
                    return  # close_notify received
        except OSError as exc:
            raise self._fail(exc) from None
        finally:
            self.abort()

    def _drain_received(self, tls: ssl.SSLObject) -> None:
        """Process what already arrived (session tickets, an alert) before our close_notify.

        Otherwise unwrap could consume a fatal alert as the end of the session (OpenSSL marks
        the session shut down on either), and a close_notify the collector sent first (it
        gave up on the session) would confirm messages it may never have read.
        """
        self._fill_available()
        try:
            while tls.read(65536) != b"":
                pass  # a collector sends no application data in RFC 5425; ignore any
        except ssl.SSLWantReadError:
            return  # nothing more received: the session is still open
        except ssl.SSLZeroReturnError:
            pass
        msg = (
            f"syslog export to {self.host}:{self.port} failed: the collector closed the "
            "session before the export ended"
        )
        raise ExportError(msg)

    def abort(self) -> None:
        """Close the socket at once, without waiting for the collector (after an error)."""
        sock, self._sock, self._tls = self._sock, None, None
        if sock is not None:
            sock.close()
