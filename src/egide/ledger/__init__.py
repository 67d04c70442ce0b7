"""Ledger room: the append-only audit ledger.

Every access to patient data, every denial, every export and every administrative or key
operation is appended here in the same database transaction as the act (DESIGN.md, contract 2):
if the append fails, the act fails. Each entry carries the access-event fields of DESIGN.md and
a SHA-256 hash of its canonical JSON; the Merkle tree, signed checkpoints and proofs build on
these entries.
"""
