"""Identity room: who the caller is.

People sign in with a password and a second factor (`login`), hold a web session (`sessions`)
and are managed through `accounts`; services and integrations use API bearer tokens
(`tokens`). Secrets are stored only as hashes or sealed (DESIGN.md contract 4), and every
security event goes to the ledger. Patient-data code receives a `Principal`, never an account.
"""
