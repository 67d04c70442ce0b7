"""Records room: the FHIR repository.

A repository is bound to one caller (a `Principal`) and one database transaction. Every
operation asks `access.decide`, seals or opens bodies through `crypto` under the patient's own
data key, maintains blind search indexes, and appends to the ledger — all in the caller's
transaction, so the act and its audit entry commit or fail together (DESIGN.md, contracts 1-3).
The privileged path around the policy is `system_repository`, named so it is easy to find.
"""
