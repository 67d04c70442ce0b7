"""Field masking: the clinical elements a secretary does not see (issue 5, item 2).

Pure. A secretary books appointments and admissions; the reason for the visit, diagnoses and
notes are clinical and are removed from what they read. The masked resource is labelled with
the HL7 v3 ObservationValue security label REDACTED (FHIR R4 security labels), so a client
knows elements were withheld rather than absent. When a masked principal updates a resource,
the masked elements are carried over from the stored version: they can neither erase nor
forge clinical content they cannot see.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

MASKED_ELEMENTS: Mapping[str, tuple[str, ...]] = {
    "Appointment": (
        "comment",
        "description",
        "patientInstruction",
        "reasonCode",
        "reasonReference",
        "supportingInformation",
    ),
    "CareTeam": ("note", "reasonCode", "reasonReference"),
    "Encounter": ("diagnosis", "reasonCode", "reasonReference"),
    "EpisodeOfCare": ("diagnosis",),
}
REDACTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "REDACTED",
    "display": "redacted",
}


def mask(resource: dict[str, Any]) -> dict[str, Any]:
    """`resource` without its clinical elements, labelled REDACTED when any were removed."""
    elements = MASKED_ELEMENTS.get(str(resource.get("resourceType")), ())
    removed = [e for e in elements if e in resource]
    if not removed:
        return resource
    out = {k: v for k, v in resource.items() if k not in removed}
    meta = copy.deepcopy(out.get("meta") or {})
    labels = [x for x in meta.get("security", []) if x.get("code") != "REDACTED"]
    meta["security"] = [*labels, dict(REDACTED)]
    out["meta"] = meta
    return out


def carry_masked(new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """`new` as written by a masked principal: its clinical elements are the stored ones."""
    elements = MASKED_ELEMENTS.get(str(new.get("resourceType")), ())
    out = {k: v for k, v in new.items() if k not in elements}
    if old is not None:
        out.update({e: old[e] for e in elements if e in old})
    meta = out.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("security"), list):
        # The REDACTED label describes a masked copy, never the stored resource.
        kept = [
            x for x in meta["security"] if not (isinstance(x, dict) and x.get("code") == "REDACTED")
        ]
        out["meta"] = {**meta, "security": kept}
    return out
