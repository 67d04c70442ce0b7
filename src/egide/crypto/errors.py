"""Errors of the crypto room.

Security role: every authentication failure is reported as one opaque `DecryptionError`, whatever
its cause (tampered ciphertext, header, associated data, wrapped key, or a wrong key), so callers
and attackers learn nothing about which check failed (no padding/tag oracles, OWASP ASVS 5.0
V11.3). Messages never include key material, plaintext or derived values.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by `egide.crypto`."""


class DecryptionError(CryptoError):
    """Authentication failed: the data, its header, its associated data or its key is wrong."""


# The name is part of the agreed API (no "Error" suffix): it states a fact, not a fault.
class KeyShredded(CryptoError):
    """The owner's data key was destroyed (crypto-shredding); the data is gone for good."""


class KeyringError(CryptoError):
    """The keyring cannot be used: wrong master secret, corrupt or unknown file, unknown or
    retired key-encryption key, or a refused operation (e.g. retiring the current KEK)."""
