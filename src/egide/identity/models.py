"""The identity room's tables: API tokens, accounts, factors, invitations and sessions."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from egide.db.base import Base
from egide.db.types import UTCDateTime


class ApiToken(Base):
    """A bearer token. Only its SHA-256 hash is stored (DESIGN.md, contract 4)."""

    __tablename__ = "identity_api_token"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    # For a clinician's token: the Practitioner they are, whose care links give them access.
    practitioner_id: Mapped[str | None] = mapped_column(String(64))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- Accounts, factors and sessions (the identity issue) ------------------------------------
# Secrets never sit here in clear (DESIGN.md contract 4): passwords are Argon2id hashes, TOTP
# seeds are sealed with `crypto.envelope` under the account's own data key, and recovery
# codes, invitation links, pending sign-ins and session tokens are stored as SHA-256 hashes.


class Account(Base):
    """A person who signs in: staff (any role but patient) or a patient."""

    __tablename__ = "identity_account"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # NFKC, stripped, lower-cased: the sign-in identifier (one account per address).
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    practitioner_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # invited | active | disabled
    password_hash: Mapped[str | None] = mapped_column(String(256))  # Argon2id, PHC format
    password_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    totp_seed_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    totp_pending_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger())
    mfa_enrolled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    failed_count: Mapped[int] = mapped_column(Integer(), default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    locked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class RecoveryCode(Base):
    """One of an account's ten single-use recovery codes, stored hashed."""

    __tablename__ = "identity_recovery_code"

    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(Integer(), primary_key=True)  # 0 to 9
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Invitation(Base):
    """A single-use, expiring link by which an invited account sets its password."""

    __tablename__ = "identity_invitation"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(64))


class WebSession(Base):
    """A signed-in browser. Only SHA-256 of its cookie token is stored (ASVS V7.2)."""

    __tablename__ = "identity_web_session"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    csrf_secret: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    mfa_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(128))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class LoginPending(Base):
    """A sign-in whose password was accepted and whose second factor (or enrolment) is due.

    Lives 5 minutes; only SHA-256 of its token is stored.
    """

    __tablename__ = "identity_login_pending"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class AddressThrottle(Base):
    """Failed sign-ins from one source address in the current fixed window."""

    __tablename__ = "identity_address_throttle"

    ip: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    failures: Mapped[int] = mapped_column(Integer())


# --- WebAuthn passkeys (the identity issue, item 4) ------------------------------------------
# A passkey's public key and counter are not secrets: the private key never leaves the
# authenticator (W3C WebAuthn Level 3 section 6). Challenges are stored as SHA-256 hashes.


class Passkey(Base):
    """A WebAuthn credential registered to an account (a "credential record", L3 section 4)."""

    __tablename__ = "identity_passkey"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    # At most 1023 bytes and unique across all accounts (L3 section 7.1).
    credential_id: Mapped[bytes] = mapped_column(LargeBinary(1023), unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary())  # COSE_Key (RFC 9052)
    sign_count: Mapped[int] = mapped_column(BigInteger())  # the 32-bit signature counter
    transports: Mapped[str | None] = mapped_column(String(200))  # comma-separated hints
    aaguid: Mapped[str] = mapped_column(String(36))
    name: Mapped[str] = mapped_column(String(64))  # the holder's own label
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class WebAuthnChallenge(Base):
    """A challenge handed to a browser for one ceremony: single use, 5 minutes, bound to an
    account (registration) or a pending sign-in (authentication). Only its SHA-256 is kept."""

    __tablename__ = "identity_webauthn_challenge"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    challenge_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))  # "register" | "authenticate"
    # None for a passwordless sign-in's challenge: the passkey itself names the account.
    account_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    # The pending sign-in (identity_login_pending.id) an authentication challenge belongs to.
    login_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("identity_login_pending.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


# --- OAuth 2.0 for apps: SMART App Launch 2 and SMART Backend Services (identity.oauth) -----
# Codes and access tokens are stored as SHA-256 hashes (DESIGN.md contract 4); a backend
# client's registered JWKS holds public keys only.


class OAuthClient(Base):
    """A registered app: `public` (PKCE, no secret), `confidential` (PKCE and a signed client
    assertion) or `backend` (client credentials with a signed client assertion)."""

    __tablename__ = "identity_oauth_client"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON())
    jwks: Mapped[dict[str, object] | None] = mapped_column(JSON())
    scopes: Mapped[str] = mapped_column(Text())  # what the client may ask for, space-separated
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OAuthCode(Base):
    """An authorization code (RFC 6749 section 4.1.2): 60 seconds, single use."""

    __tablename__ = "identity_oauth_code"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_oauth_client.client_id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    redirect_uri: Mapped[str] = mapped_column(Text())
    scopes: Mapped[str] = mapped_column(Text())
    code_challenge: Mapped[str] = mapped_column(String(128))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OAuthToken(Base):
    """An opaque access token (RFC 6750 bearer); only its SHA-256 is stored."""

    __tablename__ = "identity_oauth_token"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    client_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("identity_oauth_client.client_id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("identity_account.id", ondelete="CASCADE"), index=True
    )
    code_id: Mapped[str | None] = mapped_column(String(36), index=True)
    scopes: Mapped[str] = mapped_column(Text())
    patient_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OAuthJti(Base):
    """A client assertion's `jti`, kept until the assertion expires: each is used once
    (RFC 7523 section 3, item 7; SMART Backend Services)."""

    __tablename__ = "identity_oauth_jti"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(256), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
