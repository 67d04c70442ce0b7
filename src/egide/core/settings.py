"""Settings from `EGIDE_*` environment variables and an optional TOML file.

Precedence, lowest first: defaults, the TOML file (`EGIDE_CONFIG`, else `./egide.toml` when it
exists), then environment variables. Secrets (the master secret) are never printed: their
`repr` is masked so a settings dump cannot leak them into a log (DESIGN.md, contract 4).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from egide.core.errors import BadRequest

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_WITNESS_NAME = "egide.local/witness"
DETECT_RESPONSES = ("disable_account", "require_step_up", "revoke_sessions")
DEFAULT_WEBAUTHN_ORIGIN = "http://localhost:8000"  # `egide serve` on its default port
# A C2SP signed-note key name: printable, no space, no "+".
_KEY_NAME = re.compile(r"[\x21-\x2a\x2c-\x7e]{1,200}")


class Settings(BaseModel):
    """Everything an Égide process needs to know before it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path(".egide")
    # None means the embedded SQLite database at $data_dir/egide.db.
    database_url: str | None = None
    # The secret the file keyring's wrapping key is derived from. When absent, `egide init`
    # generates one into $data_dir/master.key (mode 0600): fine for a demo, not for production.
    master_secret: SecretStr | None = None
    # The externally visible base URL (behind a reverse proxy); None: derived from requests.
    public_base_url: str | None = None
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # FHIR search paging (`_count`): default page size and the most a caller may ask for.
    default_page_size: int = Field(default=20, gt=0)
    max_page_size: int = Field(default=500, gt=0)
    # Maximum nesting depth of a JSON body; deeper bodies are refused before parsing into
    # models (a cheap guard against stack and CPU exhaustion).
    max_json_depth: int = Field(default=64, gt=0)
    # Argon2id cost for deriving the keyring wrapping key (RFC 9106 second recommended option
    # for memory-constrained settings: m=64 MiB, t=3, p=4 ... we use p=1 on small hosts).
    kdf_memory_kib: int = Field(default=64 * 1024, ge=8)
    kdf_iterations: int = Field(default=3, ge=1)
    # --- Identity (the identity issue; OWASP ASVS 5.0 V6, V7; NIST SP 800-63B-4).
    # Sessions end after this long without a request (ASVS V7.3.1), staff and patients, and
    # this long after sign-in whatever happens (ASVS V7.3.2).
    session_idle_minutes: int = Field(default=15, ge=1)
    patient_session_idle_minutes: int = Field(default=30, ge=1)
    session_absolute_hours: int = Field(default=12, ge=1)
    # At most this many live web sessions per account: a new sign-in beyond it ends the least
    # recently used ones (ASVS V7.1.2, documented concurrent-session limit).
    max_sessions_per_account: int = Field(default=10, ge=1)
    # --- Access control (issue 5, docs/access.md).
    # A care link holds this long after discharge or the end of care (grace period).
    care_grace_days: int = Field(default=30, ge=0, le=3650)
    # An appointment links its clinicians to the patient this long before it starts.
    appointment_lead_days: int = Field(default=7, ge=0, le=365)
    # A break-the-glass grant lasts this long, for that patient only.
    break_glass_hours: float = Field(default=4.0, gt=0, le=72)
    # How long an invitation link stays valid.
    invitation_hours: int = Field(default=72, ge=1)
    # Sensitive actions need a second factor checked within this many minutes (step-up).
    step_up_minutes: int = Field(default=10, ge=1)
    # The organisation's name: TOTP issuer, and a context word refused in passwords.
    clinic_name: str = Field(default="Égide demo clinic", min_length=1, max_length=200)
    # Argon2id cost of password hashes: OWASP Password Storage Cheat Sheet (m=19 MiB, t=2).
    argon2_memory_kib: int = Field(default=19_456, ge=8)
    argon2_iterations: int = Field(default=2, ge=1)
    # WebAuthn passkeys: the relying party's id (W3C WebAuthn Level 3 section 4, "RP ID": a
    # valid domain, never an IP address) and the exact origin browsers sign in from (checked
    # against the client data, sections 7.1 and 7.2). None: both derived from public_base_url, else
    # "localhost" and DEFAULT_WEBAUTHN_ORIGIN (the local `egide serve`; browsers treat
    # http://localhost as a secure context).
    webauthn_rp_id: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
    )
    webauthn_origin: str | None = Field(default=None, pattern=r"^https?://[^/?#\s]+$")
    # The ledger's checkpoint origin line and signing key name (C2SP tlog-checkpoint).
    ledger_origin: str = Field(default="egide.local/ledger", pattern=r"^[\x21-\x7e]{1,200}$")
    # A signed checkpoint every N new entries, and the server's sequencer runs every T s.
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    # Inclusion and consistency proofs one account may ask for per minute (429 beyond).
    proof_rate_per_minute: int = Field(default=120, ge=1)
    # Where checkpoints are also written, outside the database (None: $data_dir/witness).
    witness_dir: Path | None = None
    # --- This instance as a witness of other logs (C2SP tlog-witness, docs/ledger.md).
    # The witness's key name on its cosignatures (None: derived from public_base_url, else
    # "egide.local/witness").
    witness_name: str | None = Field(default=None, pattern=r"^[\x21-\x2a\x2c-\x7e]{1,200}$")
    # The logs this instance witnesses: checkpoint origin -> the log's verifier key(s) (signed-
    # note vkeys). A TOML table, or JSON in EGIDE_WITNESS_LOGS.
    witness_logs: dict[str, list[str]] = Field(default_factory=dict)
    # add-checkpoint requests allowed per source address and minute (bursts up to that many).
    witness_rate_per_minute: int = Field(default=60, ge=1)
    # --- This instance's ledger pushed to witnesses: their base URLs, and their verifier keys
    # (cosignature vkeys, type 0x04) to check what they return. JSON lists, or comma-separated.
    witness_urls: list[str] = Field(default_factory=list)
    witness_keys: list[str] = Field(default_factory=list)
    witness_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # --- Live behavioural detection (issue 6, docs/detection.md): the server feeds each new
    # ledger entry to the detector every `detect_interval_seconds`, keeping a window of
    # `detect_window_days` of history (per-user and peer baselines are learned from it).
    detect_live: bool = True
    detect_interval_seconds: float = Field(default=0.25, gt=0, le=60)
    detect_window_days: int = Field(default=28, ge=1, le=400)
    # The hospital's time zone (IANA name): nights and unusual hours are judged in local time.
    detect_timezone: str = Field(default="UTC", min_length=1, max_length=64)
    # What a new critical alert about an account does at once, as the administrator chose:
    # any of revoke_sessions, require_step_up, disable_account (comma-separated; none: alert
    # only). Applied in the transaction that stores the alert, and ledgered.
    detect_response: list[str] = Field(default_factory=list)

    @field_validator("witness_logs", mode="before")
    @classmethod
    def _witness_logs(cls, value: object) -> object:
        if isinstance(value, str):
            value = _json(value, "a JSON object of origin -> verifier key")
        if not isinstance(value, Mapping):
            return value
        logs: dict[object, object] = {}
        for origin, keys in value.items():
            if not isinstance(origin, str) or not origin or "\n" in origin:
                msg = "every witnessed origin must be a non-empty one-line string"
                raise ValueError(msg)
            logs[origin] = [keys] if isinstance(keys, str) else keys
        return logs

    @field_validator("detect_response", mode="before")
    @classmethod
    def _responses(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            unknown = [v for v in value if v not in DETECT_RESPONSES]
            if unknown:
                msg = f"unknown response {unknown[0]!r}; choose from {', '.join(DETECT_RESPONSES)}"
                raise ValueError(msg)
        return value

    @field_validator("detect_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {value!r} (an IANA name such as Europe/Paris)"
            raise ValueError(msg) from None
        return value

    @field_validator("witness_urls", "witness_keys", mode="before")
    @classmethod
    def _string_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return _json(text, "a JSON list of strings")
            return [item for item in re.split(r"[,\s]+", text) if item]
        return value

    @field_validator("witness_urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                msg = f"witness URL {url!r} is not an http(s) base URL"
                raise ValueError(msg)
            if parts.query or parts.fragment:
                msg = f"witness URL {url!r} must not have a query or a fragment"
                raise ValueError(msg)
        return value

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "egide.db"

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keyring.json"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def effective_witness_dir(self) -> Path:
        return self.witness_dir or self.data_dir / "witness"

    @property
    def effective_witness_name(self) -> str:
        """The witness's key name: set, or "<host>[/<path>]/witness" from public_base_url."""
        if self.witness_name:
            return self.witness_name
        if self.public_base_url:
            parts = urlsplit(self.public_base_url)
            name = f"{parts.netloc}{parts.path.rstrip('/')}/witness"
            if parts.netloc and _KEY_NAME.fullmatch(name):
                return name
        return DEFAULT_WITNESS_NAME

    @property
    def effective_webauthn_rp_id(self) -> str:
        """The passkeys' RP ID: set, else the host of public_base_url, else "localhost"."""
        if self.webauthn_rp_id:
            return self.webauthn_rp_id
        if self.public_base_url:
            host = urlsplit(self.public_base_url).hostname
            if host:
                return host.lower()
        return "localhost"

    @property
    def effective_webauthn_origin(self) -> str:
        """The one origin passkey ceremonies are accepted from: set, else the scheme, host
        and port of public_base_url, else DEFAULT_WEBAUTHN_ORIGIN."""
        if self.webauthn_origin:
            return self.webauthn_origin.lower()
        if self.public_base_url:
            parts = urlsplit(self.public_base_url)
            if parts.scheme and parts.netloc:
                return f"{parts.scheme}://{parts.netloc}".lower()
        return DEFAULT_WEBAUTHN_ORIGIN

    @property
    def witness_state_dir(self) -> Path:
        """Where the ledger remembers what each witness it pushes to holds."""
        return self.data_dir / "witness-state"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


def _json(text: str, what: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        msg = f"expected {what}"
        raise ValueError(msg) from None


_ENV_PREFIX = "EGIDE_"
_ENV_KEYS = {name.upper(): name for name in Settings.model_fields}


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Build settings from the TOML file and the environment; raise BadRequest when invalid."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["EGIDE_CONFIG"]) if env.get("EGIDE_CONFIG") else None)
    if path is None and Path("egide.toml").is_file():
        path = Path("egide.toml")
    if path is not None:
        try:
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            msg = f"cannot read settings file {path}: {exc}"
            raise BadRequest(msg) from exc
    for key, value in env.items():
        if key.startswith(_ENV_PREFIX) and key[len(_ENV_PREFIX) :] in _ENV_KEYS:
            values[_ENV_KEYS[key[len(_ENV_PREFIX) :]]] = value
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        msg = f"invalid setting {field_name}: {first['msg']}"
        raise BadRequest(msg) from exc
