"""A software WebAuthn authenticator and client, for driving the passkey endpoints in tests.

It plays both the browser (it writes clientDataJSON with the challenge, the origin and the
ceremony type, W3C WebAuthn Level 3 section 5.8.1) and the authenticator (an ECDSA P-256 key
pair, ES256 = COSE algorithm -7; authenticator data of section 6.1: rpIdHash, flags, the
signature counter and, at registration, the attested credential data of section 6.5.1 with the
COSE_Key of RFC 9053 section 7.1.1; attestation format "none", section 8.7; assertion
signatures over authenticatorData || SHA-256(clientDataJSON), section 6.3.3).

Every field can be bent to build the adversarial cases: another origin or RP ID, flags without
UV, a counter that goes backwards, a flipped bit in the signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40  # L3 section 6.1 flags: user present, user verified, attested
ES256 = -7


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class SoftAuthenticator:
    """One authenticator holding (at most) one discoverable credential."""

    origin: str
    rp_id: str
    aaguid: bytes = field(default_factory=lambda: bytes(16))
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: os.urandom(32))
    sign_count: int = 0
    user_handle: bytes | None = None

    def cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: ES256,  # alg
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def authenticator_data(
        self, *, rp_id: str, flags: int, counter: int, attested: bool = False
    ) -> bytes:
        data = hashlib.sha256(rp_id.encode()).digest() + bytes([flags])
        data += struct.pack(">I", counter)
        if attested:
            data += self.aaguid + struct.pack(">H", len(self.credential_id))
            data += self.credential_id + self.cose_key()
        return data

    @staticmethod
    def client_data(kind: str, challenge: str, origin: str) -> bytes:
        return json.dumps(
            {"type": kind, "challenge": challenge, "origin": origin, "crossOrigin": False},
            separators=(",", ":"),
        ).encode()

    def create(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = UP | UV | AT,
    ) -> dict[str, Any]:
        """navigator.credentials.create(): a registration response (RegistrationResponseJSON)."""
        self.user_handle = unb64url(options["user"]["id"])
        client_data = self.client_data(
            "webauthn.create", options["challenge"], origin or self.origin
        )
        auth_data = self.authenticator_data(
            rp_id=rp_id or options["rp"]["id"], flags=flags, counter=self.sign_count,
            attested=True,
        )  # fmt: skip
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "attestationObject": b64url(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        flags: int = UP | UV,
        counter: int | None = None,
        flip_signature_bit: bool = False,
        user_handle: bytes | None = None,
        kind: str = "webauthn.get",
    ) -> dict[str, Any]:
        """navigator.credentials.get(): an assertion (AuthenticationResponseJSON). The counter
        goes up by one unless `counter` says what to send; the user handle is the one given at
        registration unless `user_handle` says otherwise."""
        if counter is None:
            self.sign_count += 1
            counter = self.sign_count
        client_data = self.client_data(kind, options["challenge"], origin or self.origin)
        auth_data = self.authenticator_data(
            rp_id=rp_id or options["rpId"], flags=flags, counter=counter
        )
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        if flip_signature_bit:
            signature = signature[:-1] + bytes([signature[-1] ^ 0x01])
        handle = user_handle if user_handle is not None else self.user_handle
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": b64url(handle) if handle is not None else None,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
