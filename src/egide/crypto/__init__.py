"""Crypto room: keyring (KEKs and their providers), envelope encryption of owners' data,
crypto-shredding, KEK rotation and keyed blind indexes.

Security role: everything that keeps patient data unreadable at rest (DESIGN.md contract 3)
goes through here: AES-256-GCM (NIST SP 800-38D) under per-owner data keys wrapped by
key-encryption keys that never touch the database, and HMAC-SHA256 blind indexes (RFC 2104)
so search never needs clear values. It imports only egide.core and egide.db.
"""

from egide.crypto.aead import KEY_SIZE, NONCE_SIZE, Aead, AesGcm, UnsafeNullCipher
from egide.crypto.blind import BlindIndex, normalise_text
from egide.crypto.envelope import Envelope
from egide.crypto.errors import CryptoError, DecryptionError, KeyringError, KeyShredded
from egide.crypto.keyring import SECRET_NAMES, FileKeyProvider, KekInfo, KeyProvider
from egide.crypto.models import DataKey

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "SECRET_NAMES",
    "Aead",
    "AesGcm",
    "BlindIndex",
    "CryptoError",
    "DataKey",
    "DecryptionError",
    "Envelope",
    "FileKeyProvider",
    "KekInfo",
    "KeyProvider",
    "KeyShredded",
    "KeyringError",
    "UnsafeNullCipher",
    "normalise_text",
]
