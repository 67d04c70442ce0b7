"""Identity room: who the caller is.

For now, API bearer tokens for services and integrations (256-bit random, stored only as
SHA-256 hashes, each bound to a role). Accounts, passwords, MFA and sessions arrive with the
identity issue behind the same `authenticate -> Principal` interface.
"""
