"""Which rows an `_include`, a `_revinclude` or a Patient `$everything` reaches, as SQL.

Security role: these are the classic side doors of a FHIR server (issue 5, item 6): a search
whose matches the caller may see, but which pulls in resources they may not (another patient's
CareTeam named as a performer, a Condition of a patient the lab has an order for), or an
operation that returns a whole record in one call. The conditions here say only which rows
are *candidates*; `Repository.included` and `Repository.everything` always AND them with the
same policy filter as a search (`Repository._visible`), decide on every returned row again
(fail closed) and mask and audit them like search results. Nothing here looks at bodies: the
references come from the clear reference index (`SearchReference`), the patient from the
clear `patient_id` column.

The Patient compartment (FHIR R4 compartmentdefinition-patient.html) is read as: the rows
sealed under the patient (their primary patient, `records.compartment.patient_of`), and the
rows that reference the patient through a search parameter whose element is one of the
compartment's paths (`fhir.compartment.COMPARTMENT_PATHS`), e.g. an Observation whose
`performer` is the patient. A compartment path with no reference search parameter in
`SEARCH_PARAMETERS` (Condition.asserter, for instance) is not indexed and so not followed: that
resource is returned in the compartment of the patient it is sealed under, not of the one it
merely mentions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, and_, or_, select, tuple_

from egide.fhir.compartment import COMPARTMENT_PATHS
from egide.fhir.search import SEARCH_PARAMETERS, Include
from egide.records.models import ResourceHead, SearchReference

__all__ = [
    "COMPARTMENT_PARAMS",
    "compartment_condition",
    "include_reference_rows",
    "revinclude_condition",
]


def _compartment_params() -> tuple[tuple[str, str], ...]:
    """(type, reference parameter) pairs whose element is a Patient compartment path."""
    pairs: list[tuple[str, str]] = []
    for resource_type, paths in sorted(COMPARTMENT_PATHS.items()):
        for param in SEARCH_PARAMETERS.get(resource_type, {}).values():
            reaches_patient = not param.targets or "Patient" in param.targets
            if param.type == "reference" and set(param.paths) & set(paths) and reaches_patient:
                pairs.append((resource_type, param.name))
    return tuple(pairs)


COMPARTMENT_PARAMS = _compartment_params()


def compartment_condition(patient_id: str) -> Any:
    """The head rows in `patient_id`'s compartment: sealed under them, or referencing them
    through a compartment search parameter (found through the reference index's lookup)."""
    by_type: dict[str, list[str]] = {}
    for resource_type, param in COMPARTMENT_PARAMS:
        by_type.setdefault(resource_type, []).append(param)
    referencing = select(SearchReference.resource_type, SearchReference.resource_id).where(
        SearchReference.ref_type == "Patient",
        SearchReference.ref_id == patient_id,
        or_(
            *(
                and_(SearchReference.resource_type == t, SearchReference.param.in_(params))
                for t, params in sorted(by_type.items())
            )
        ),
    )
    return or_(
        ResourceHead.patient_id == patient_id,
        tuple_(ResourceHead.resource_type, ResourceHead.id).in_(referencing),
    )


def include_reference_rows(include: Include, source_ids: Sequence[str]) -> Select[str, str]:
    """The (type, id) pairs the `source_ids` reference through an `_include`'s parameter."""
    stmt = select(SearchReference.ref_type, SearchReference.ref_id).where(
        SearchReference.resource_type == include.source_type,
        SearchReference.resource_id.in_(sorted(set(source_ids))),
        SearchReference.param == include.param,
    )
    if include.target_type is not None:
        stmt = stmt.where(SearchReference.ref_type == include.target_type)
    return stmt.distinct()


def revinclude_condition(include: Include, target_type: str, target_ids: Iterable[str]) -> Any:
    """The `include.source_type` head rows whose parameter references one of the targets."""
    referencing = select(SearchReference.resource_id).where(
        SearchReference.resource_type == include.source_type,
        SearchReference.param == include.param,
        SearchReference.ref_type == target_type,
        SearchReference.ref_id.in_(sorted(set(target_ids))),
    )
    return and_(ResourceHead.resource_type == include.source_type, ResourceHead.id.in_(referencing))
