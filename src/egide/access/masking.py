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

# Free-form places any resource can carry clinical content in: the narrative, contained
# resources (a contained Condition) and extensions. Masked on every masked type.
_ANYWHERE = ("contained", "extension", "modifierExtension", "text")
MASKED_ELEMENTS: Mapping[str, tuple[str, ...]] = {
    "Appointment": (
        *_ANYWHERE,
        "comment",
        "description",
        "patientInstruction",
        "reasonCode",
        "reasonReference",
        "supportingInformation",
    ),
    "CareTeam": (*_ANYWHERE, "note", "reasonCode", "reasonReference"),
    "Encounter": (*_ANYWHERE, "diagnosis", "reasonCode", "reasonReference"),
    "EpisodeOfCare": (*_ANYWHERE, "diagnosis"),
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
    # Security labels: the stored ones stay (a masked writer must not drop a sensitivity label
    # a consent relies on), new ones may be added; REDACTED describes a masked copy only.
    labels: list[Any] = []
    for source in (old or {}, new):
        meta = source.get("meta")
        if isinstance(meta, dict) and isinstance(meta.get("security"), list):
            labels.extend(
                x
                for x in meta["security"]
                if isinstance(x, dict) and x.get("code") != "REDACTED" and x not in labels
            )
    meta = dict(out.get("meta") or {}) if isinstance(out.get("meta"), dict | None) else {}
    if labels:
        meta["security"] = labels
    else:
        meta.pop("security", None)
    if meta:
        out["meta"] = meta
    else:
        out.pop("meta", None)
    return out
