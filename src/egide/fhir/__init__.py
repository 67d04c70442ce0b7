"""Pure FHIR R4 (4.0.1) support: the wire format Égide speaks, with no storage and no I/O.

This room turns untrusted request bytes into validated FHIR resources and back into FHIR answers:

- `validation`: strict JSON parsing (duplicate keys, NaN, depth) and resource validation;
- `outcome`: OperationOutcome bodies for errors and informational answers;
- `references`: finding, parsing and rewriting `Reference.reference` values;
- `compartment`: which patients a resource belongs to (who owns its data key);
- `search`: search parameters, index extraction and query parsing;
- `bundle`: searchset, history, batch and transaction Bundles;
- `capability`: the server's CapabilityStatement.

Security role: it is the first gate for everything a client sends. Whatever leaves it is
well-formed, typed FHIR; its error messages name elements, never the values (which may be patient
data). It imports only `egide.core`, `fhir.resources`, pydantic and the standard library
(import-linter contract "FHIR room is pure").
"""
