"""Access room: pure policy. `decide(principal, permission, target) -> Decision`.

Deny by default (DESIGN.md, contract 1): a permission not granted to a role is refused, and a
patient principal reaches only their own compartment. No I/O here: the records layer gathers
the facts (which patient a resource belongs to) and asks.
"""
