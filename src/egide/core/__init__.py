"""Core: settings, clock, ids, errors, Principal and Decision.

Imports nothing of egide. Everything that must be injected for testability (time, randomness)
starts here, so that every expiry and every key is reproducible in tests (DESIGN.md, contract 6).
"""
