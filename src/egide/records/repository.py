"""The FHIR repository bound to one caller and one transaction.

Order of work in every operation, so nothing escapes the policy or the ledger:

1. find the row(s) in clear metadata (type, id, version, patient id);
2. ask `access.decide` with the patient the row belongs to; a denial or an absent row answer
   the same 404 (DESIGN.md, contract 1) and are audited after the rollback;
3. open or seal the body under the patient's data key, with associated data binding the
   ciphertext to (type, id, version, patient) so a ciphertext moved to another row fails;
4. append to the ledger in the same transaction (contract 2).

Functions never commit: the caller's unit of work does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, or_, select
from sqlalchemy.orm import Session

from egide.access.masking import carry_masked, mask
from egide.access.policy import (
    Operation,
    Target,
    decide,
    may_search_type,
    may_write_type,
    needs_context,
    search_plan,
)
from egide.access.relationships import CLINICIANS, Relationship, Windows
from egide.access.rules import Obligation
from egide.access.scopes import scope_allows_any
from egide.core.clock import Clock
from egide.core.errors import (
    BadRequest,
    Conflict,
    EgideError,
    Forbidden,
    Gone,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    Unprocessable,
)
from egide.core.ids import RandomSource, SystemRandom, new_id
from egide.core.principal import Decision, Principal
from egide.crypto.blind import BlindIndex, normalise_text
from egide.crypto.envelope import Envelope
from egide.crypto.errors import CryptoError, KeyShredded
from egide.crypto.models import DataKey
from egide.fhir.search import (
    SEARCH_PARAMETERS,
    Criterion,
    DateValue,
    EverythingQuery,
    IndexValue,
    ReferenceValue,
    SearchQuery,
    StringValue,
    TokenValue,
    extract_index_values,
    include_targets,
)
from egide.fhir.validation import resource_types, validate_resource
from egide.ledger.service import Act, Action, Outcome, append
from egide.records.compartment import is_patient_data, patient_of
from egide.records.everything import (
    compartment_condition,
    include_reference_rows,
    revinclude_condition,
)
from egide.records.links import LINKED_TYPES, consent_problems, extract, security_codes
from egide.records.models import (
    ResourceHead,
    ResourceVersion,
    SearchDate,
    SearchReference,
    SearchToken,
)
from egide.records.visibility import (
    SECURITY_PARAM,
    PatientFacts,
    actors_of,
    context_for,
    gather,
    label_token_of,
    labels_of,
    relink,
    visible_rows,
)

ORG_KEY_OWNER = "_org"  # the data key for resources outside every patient compartment
# Served by api.audit from the ledger, never stored as ordinary resources.
LEDGER_TYPES = frozenset({"AuditEvent"})
_MIN_TIME = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_MAX_TIME = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)
# At most this many resources added by `_include`/`_revinclude` to one page (a warning says so).
MAX_INCLUDED = 1000
EVERYTHING = "operation Patient/$everything"  # the reason that marks its ledger entries


@dataclass(frozen=True)
class RecordServices:
    """The collaborators every repository needs, built once by the composition root."""

    envelope: Envelope
    index: BlindIndex
    clock: Clock
    random: RandomSource = field(default_factory=SystemRandom)
    # How long care links hold around their period (settings: care_grace_days...).
    windows: Windows = field(default_factory=Windows)


@dataclass(frozen=True)
class Stored:
    """A resource as stored: its body (with meta) and version bookkeeping."""

    resource: dict[str, Any]
    resource_type: str
    id: str
    version: int
    last_updated: dt.datetime
    created: bool = False

    @property
    def etag(self) -> str:
        return f'W/"{self.version}"'


@dataclass(frozen=True)
class HistoryItem:
    resource: dict[str, Any] | None  # None for a deletion
    resource_type: str
    id: str
    version: int
    last_updated: dt.datetime
    method: str


def defer_audit(exc: EgideError, session_action: Callable[[Session], object]) -> EgideError:
    """Attach an audit action to run in a fresh transaction after the failed one rolls back.

    A denial must be in the ledger even though the request fails and its transaction is
    rolled back (contract 2: every denial is audited).
    """
    pending: list[Callable[[Session], object]] = getattr(exc, "after_rollback", [])
    pending.append(session_action)
    exc.after_rollback = pending  # type: ignore[attr-defined]
    return exc


def pending_audits(exc: BaseException) -> list[Callable[[Session], object]]:
    """The audit actions a failed unit of work must still write (see `defer_audit`)."""
    return list(getattr(exc, "after_rollback", []))


def _aad(resource_type: str, resource_id: str, version: int, patient_id: str | None) -> bytes:
    # Associated data binds the ciphertext to its row (DESIGN.md, contract 3).
    return json.dumps(
        ["egide-record/1", resource_type, resource_id, version, patient_id or ""],
        separators=(",", ":"),
    ).encode()


def _instant(when: dt.datetime) -> str:
    # FHIR R4 `instant`: always with a timezone; we write UTC with milliseconds.
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _serialise(resource: dict[str, Any]) -> bytes:
    return json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def parse_etag(value: str) -> int:
    """The version in an `If-Match` header (`W/"3"` or `"3"`); 400 when malformed."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit() or len(text) > 9:
        msg = 'If-Match must be an ETag like W/"3"'
        raise BadRequest(msg)
    return int(text)


class Repository:
    """FHIR storage as seen by one principal within one transaction."""

    def __init__(self, session: Session, principal: Principal, services: RecordServices) -> None:
        self.session = session
        self.principal = principal
        self.services = services
        # Resource ids being created in the current transaction Bundle, so that references
        # between its entries resolve before the referenced row is written.
        self.pending_ids: set[tuple[str, str]] = set()
        self._new_heads: dict[tuple[str, str], ResourceHead] = {}
        self.acts: list[Act] = []  # what this repository appended to the ledger, in order
        self._last_decision: Decision | None = None
        self._actors: frozenset[str] | None = None

    # -- policy and audit -------------------------------------------------------------------

    def _audit(self, act: Act, decision: Decision | None = None, *, inherit: bool = True) -> None:
        """Append `act` with the reasons of `decision`, or (`inherit`) of the last decision
        this repository made: the one that allowed a single-resource act."""
        if decision is None and inherit:
            decision = self._last_decision
        if not act.reasons and decision is not None:
            # The reasons of the decision that allowed the act go into its ledger entry, so
            # the patient's access report can say why (the care link, or break-the-glass).
            act = dataclasses.replace(act, reasons=decision.reasons)
        if decision is not None and Obligation.BREAK_GLASS in decision.obligations:
            # An act allowed only by an emergency grant carries its reason as the purpose
            # (IHE BALP: purposeOfEvent; DICOM 110113 Security Alert in the AuditEvent view).
            act = dataclasses.replace(act, purpose=act.purpose or decision.purpose)
        append(self.session, principal=self.principal, act=act, clock=self.services.clock)
        self.acts.append(act)

    def reads_since(self, start: int) -> list[Act]:
        """The reads and searches audited since `acts[start]`: what a failed Bundle entry
        still has to leave in the ledger after its writes are rolled back."""
        return [a for a in self.acts[start:] if a.action in (Action.READ, Action.SEARCH)]

    def audit_later(self, exc: EgideError, acts: Sequence[Act]) -> EgideError:
        """Attach `acts` to `exc`, to be appended after the failed transaction rolls back."""
        principal, clock = self.principal, self.services.clock
        pending = list(acts)

        def write(session: Session) -> None:
            for act in pending:
                append(session, principal=principal, act=act, clock=clock)

        return defer_audit(exc, write)

    def _may_write_type(self, resource_type: str, action: Action) -> None:
        """Refuse, before looking at any row, a write the role may not make to this type at
        all: the answer then cannot depend on what exists (no existence oracle)."""
        if resource_type in LEDGER_TYPES:
            # AuditEvents are the ledger's own view (api.audit); a client-written one would
            # be a forged audit record, through a Bundle or otherwise.
            msg = f"{resource_type} resources are served from the audit ledger, read-only"
            raise MethodNotAllowed(msg)
        if not may_write_type(
            self.principal, resource_type, patient_data=is_patient_data(resource_type)
        ):
            self._raise_hidden(
                action,
                resource_type,
                None,
                None,
                [f"role {self.principal.role} may not write {resource_type}"],
                error=Forbidden,
            )

    def actors(self) -> frozenset[str]:
        """Who the principal is in the data (their practitioner, department...), once per
        repository: a unit of work sees one consistent answer."""
        if self._actors is None:
            self._actors = actors_of(self.session, self.principal, self.services.clock.now())
        return self._actors

    def _facts(self, patients: Sequence[str | None]) -> dict[str, PatientFacts]:
        # Links written earlier in this unit of work (a Bundle's Encounter) count too.
        self.session.flush()
        return gather(
            self.session,
            self.principal,
            actors=self.actors(),
            patients=[p for p in patients if p is not None],
            now=self.services.clock.now(),
            windows=self.services.windows,
        )

    def _decide(
        self,
        operation: Operation,
        resource_type: str,
        patient_id: str | None,
        *,
        labels: set[bytes],
        facts: PatientFacts | None,
    ) -> Decision:
        context, restricted = context_for(facts, labels, resource_type)
        target = Target(
            resource_type,
            patient_id,
            is_patient_data(resource_type, patient_id),
            restricted=restricted,
        )
        return decide(self.principal, operation, target, context)

    def _check(
        self,
        operation: Operation,
        resource_type: str,
        patient_id: str | None,
        *,
        action: Action,
        resource_id: str | None = None,
        labels: set[bytes] | None = None,
    ) -> Decision:
        """Decide; on denial raise a 404 whose ledger entry survives the rollback.

        `labels`: the security-label tokens of the resource; read from the index for a stored
        resource when not given (the labels of a body being written are given)."""
        facts: PatientFacts | None = None
        if needs_context(self.principal, resource_type, operation):
            if labels is None and resource_id is not None:
                labels = labels_of(self.session, [(resource_type, resource_id)])[
                    (resource_type, resource_id)
                ]
            facts = self._facts([patient_id]).get(patient_id) if patient_id else None
        labels = labels or set()
        decision = self._decide(operation, resource_type, patient_id, labels=labels, facts=facts)
        if not decision.allowed:
            hidden = resource_id is not None or operation is Operation.READ
            self._raise_hidden(
                action,
                resource_type,
                resource_id,
                patient_id,
                decision.reasons,
                error=None if hidden else Forbidden,
            )
        self._last_decision = decision
        return decision

    def _may_search(self, resource_type: str) -> None:
        """Refuse a search or type history the role may not make on this type at all (403:
        it depends only on the role, the token's scopes and the type)."""
        decision = may_search_type(
            self.principal, resource_type, patient_data=is_patient_data(resource_type)
        )
        if not decision.allowed:
            self._raise_hidden(
                Action.SEARCH, resource_type, None, None, decision.reasons, error=Forbidden
            )

    def _guard_links(
        self,
        resource_type: str,
        *,
        resource_id: str | None,
        patient_id: str | None,
        resource: dict[str, Any],
        decision: Decision,
        action: Action,
    ) -> None:
        """A write may not hand its writer a care link they did not already hold.

        Writing care data (an Encounter, a CareTeam, an order) needs a relationship; without
        this check a department-wide link could be turned into a personal one (which passes a
        consent's "treating team only"), and a four-hour break-the-glass grant into a lasting
        link. So: under break-the-glass a write may create no link at all; and a link naming
        the writer themself needs a personal relationship already. Documenting one's own
        ongoing care stays possible; promoting oneself is refused, and the refusal ledgered.
        """
        if resource_type not in LINKED_TYPES or patient_id is None:
            return
        if self.principal.role not in CLINICIANS:
            return
        found = extract(
            resource_type,
            resource_id or "",
            resource,
            now=self.services.clock.now(),
            label_token=lambda code: label_token_of(self.services.index, code),
        )
        if not found.links:
            return
        mine = self.actors()
        facts = self._facts([patient_id]).get(patient_id)
        held = {f.relationship for f in facts.facts} if facts is not None else set()
        reason = ""
        if Obligation.BREAK_GLASS in decision.obligations:
            reason = "a break-the-glass grant cannot create care links"
        elif Relationship.PERSONAL not in held and any(
            link.actor in mine and not link.actor.startswith("Organization/")
            for link in found.links
        ):
            reason = "only a clinician already treating this patient may name themself on it"
        if reason:
            # 403, not 404: the writer may write this patient's record (they passed the
            # check above), so the refusal reveals nothing; its reason is useful to them.
            principal, clock = self.principal, self.services.clock
            act = Act(
                action,
                Outcome.DENIED,
                patient_id,
                resource_type,
                resource_id,
                0,
                reasons=(reason,),
            )
            raise defer_audit(
                Forbidden(reason), lambda s: append(s, principal=principal, act=act, clock=clock)
            )

    def _label_tokens(self, resource: dict[str, Any]) -> set[bytes]:
        return {label_token_of(self.services.index, c) for c in security_codes(resource)}

    def _raise_hidden(
        self,
        action: Action,
        resource_type: str,
        resource_id: str | None,
        patient_id: str | None,
        reasons: Sequence[str],
        *,
        outcome: Outcome = Outcome.DENIED,
        error: type[EgideError] | None = None,
    ) -> None:
        """Raise 404 (contract 1: the caller learns nothing of what exists), or `error` for a
        refusal that reveals nothing about patient data (a role that may not search or create
        this type at all answers 403), with the ledger entry deferred past the rollback."""
        principal, clock = self.principal, self.services.clock
        act = Act(
            action=action,
            outcome=outcome,
            patient=patient_id,
            resource_type=resource_type,
            resource_id=resource_id,
            count=0,
            reasons=tuple(reasons),
        )
        label = f"{resource_type}/{resource_id}" if resource_id else resource_type
        if error is None:
            exc: EgideError = NotFound(f"{label} is not known")
        else:
            exc = error(f"this token's role may not {action} {resource_type} resources")
        raise defer_audit(exc, lambda s: append(s, principal=principal, act=act, clock=clock))

    # -- helpers ----------------------------------------------------------------------------

    def _head(self, resource_type: str, resource_id: str) -> ResourceHead | None:
        # Rows added in this unit of work are not flushed yet (one flush at commit keeps
        # writes batched); look at them first.
        pending = self._new_heads.get((resource_type, resource_id))
        if pending is not None:
            return pending
        return self.session.get(ResourceHead, (resource_type, resource_id))

    def _open(self, row: ResourceVersion) -> dict[str, Any]:
        assert row.body is not None
        try:
            clear = self.services.envelope.open(
                self.session,
                owner=row.key_owner,
                sealed=row.body,
                aad=_aad(row.resource_type, row.id, row.version, row.patient_id),
            )
        except KeyShredded as exc:
            # The patient's key was destroyed (GDPR erasure): the data no longer exists.
            msg = f"{row.resource_type}/{row.id} was erased"
            raise Gone(msg) from exc
        except CryptoError as exc:
            # Tampered ciphertext or row: refuse rather than return something unverified.
            msg = "a stored record failed its integrity check; it is not returned"
            raise EgideError(msg) from exc
        body: dict[str, Any] = json.loads(clear)
        return body

    def _validated(self, resource: dict[str, Any], resource_type: str) -> dict[str, Any]:
        checked = validate_resource(resource, expected_type=resource_type)
        if resource_type == "Consent" and (problems := consent_problems(checked)):
            # A refusal naming someone Égide cannot identify would silently mean something
            # else: refuse the Consent rather than enforce a guess (issue 5, item 4).
            raise Unprocessable("; ".join(problems))
        return checked

    def _patient_of(
        self, resource: dict[str, Any], resource_id: str, *, existing: bool = False
    ) -> str | None:
        """The patient whose data key seals this resource; it must exist (or be pending)."""
        if resource.get("resourceType") == "Patient":
            return resource_id
        patient_id = patient_of(resource)
        if patient_id is None:
            return None
        if ("Patient", patient_id) in self.pending_ids:
            return patient_id
        head = self._head("Patient", patient_id)
        if head is None or head.deleted:
            # Decide first, as for a patient who exists: a caller who may not write there gets
            # the same refusal either way, so the 422 is no oracle of which patient ids exist.
            self._check(
                Operation.WRITE,
                str(resource.get("resourceType")),
                patient_id,
                action=Action.UPDATE if existing else Action.CREATE,
                resource_id=resource_id if existing else None,
            )
            msg = "the resource refers to a Patient that does not exist"
            raise Unprocessable(msg)
        return patient_id

    def _write_version(
        self,
        resource: dict[str, Any],
        *,
        resource_type: str,
        resource_id: str,
        version: int,
        patient_id: str | None,
        method: str,
        now: dt.datetime,
    ) -> dict[str, Any]:
        resource = dict(resource)
        resource["id"] = resource_id
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = _instant(now)
        resource["meta"] = meta
        owner = patient_id or ORG_KEY_OWNER
        try:
            sealed = self.services.envelope.seal(
                self.session,
                owner=owner,
                plaintext=_serialise(resource),
                aad=_aad(resource_type, resource_id, version, patient_id),
            )
        except KeyShredded as exc:
            # The patient was erased (GDPR art. 17): nothing is written for them again.
            msg = "the patient's data was erased; nothing can be added to their record"
            raise Gone(msg) from exc
        self.session.add(
            ResourceVersion(
                resource_type=resource_type,
                id=resource_id,
                version=version,
                patient_id=patient_id,
                key_owner=owner,
                last_updated=now,
                method=method,
                body=sealed,
            )
        )
        return resource

    def _reindex(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        *,
        patient_id: str | None,
        fresh: bool = False,
    ) -> None:
        kept: set[bytes] = set()
        for model in () if fresh else (SearchToken, SearchReference, SearchDate):
            self.session.execute(
                delete(model).where(
                    model.resource_type == resource_type,
                    model.resource_id == resource_id,
                    # Security labels stay for the resource's whole history: its older
                    # versions (vread, _history) and its tombstone keep the restriction a
                    # label once put on them, whatever a later version says.
                    *((model.param != SECURITY_PARAM,) if model is SearchToken else ()),
                )
            )
        if not fresh:
            kept = labels_of(self.session, [(resource_type, resource_id)])[
                (resource_type, resource_id)
            ]
        # Who treats whom, guardianship and consent follow the resource at once (issue 5).
        trusted = self.principal.role == "service"
        relink(
            self.session,
            resource_type=resource_type,
            resource_id=resource_id,
            patient_id=patient_id,
            resource=resource,
            now=self.services.clock.now(),
            index=self.services.index,
            trusted=trusted,
            majority=(
                self._majority_of(patient_id)
                if trusted and resource_type == "RelatedPerson" and patient_id
                else None
            ),
        )
        if resource is None:
            return
        rows: list[Any] = []
        for value in extract_index_values(resource):
            rows.extend(self._index_rows(resource_type, resource_id, value))
        # Security labels (meta.security) as blind tokens: the consent filter matches them
        # without the label codes ever being stored in clear.
        key = {"resource_type": resource_type, "resource_id": resource_id}
        rows.extend(
            SearchToken(**key, param=SECURITY_PARAM, value=token)
            for token in sorted(self._label_tokens(resource) - kept)
        )
        self.session.add_all(rows)

    def _majority_of(self, patient_id: str) -> dt.datetime | None:
        """When the patient comes of age (18 in France, Code civil art. 414): a guardian's
        link ends then. Read inside the unit of work, never returned; None when unknown."""
        head = self._head("Patient", patient_id)
        if head is None or head.deleted:
            return None
        row = self.session.get(ResourceVersion, ("Patient", patient_id, head.version))
        if row is None or row.body is None:
            return None
        born = self._open(row).get("birthDate")
        if not isinstance(born, str) or len(born) < 4:
            return None
        try:
            year = int(born[:4])
            month = int(born[5:7]) if len(born) >= 7 else 12
            day = int(born[8:10]) if len(born) >= 10 else 28
            return dt.datetime(year + 18, month, min(day, 28), tzinfo=dt.UTC)
        except ValueError:
            return None

    def _index_rows(self, resource_type: str, resource_id: str, value: IndexValue) -> list[Any]:
        index = self.services.index
        param = SEARCH_PARAMETERS[resource_type][value.param]
        key = {"resource_type": resource_type, "resource_id": resource_id, "param": value.param}
        if value.type == "reference":
            if value.ref_type and value.ref_id:
                return [SearchReference(**key, ref_type=value.ref_type, ref_id=value.ref_id)]
            return []
        if value.type == "date" and not param.secret:
            low = value.low or _MIN_TIME
            high = value.high or _MAX_TIME
            return [SearchDate(**key, low=low, high=high)]
        tokens: list[bytes] = []
        if value.type == "date":
            # A secret date (birth date) is indexed at year, month and day precision only, so
            # `birthdate=1980`, `1980-04` and `1980-04-12` work and nothing else leaks.
            if value.low is not None and value.high is not None:
                day = value.low.date().isoformat()
                precision = _date_precision(value.low, value.high)
                tokens.extend(
                    index.token(value.param, "d:" + day[:cut])
                    for cut in (4, 7, 10)
                    if cut <= precision
                )
        elif value.type == "token":
            if value.code:
                tokens.append(index.token(value.param, "c:" + value.code))
                if value.system:
                    tokens.append(index.token(value.param, f"sc:{value.system}|{value.code}"))
                else:
                    tokens.append(index.token(value.param, "nc:" + value.code))
        elif value.type == "string" and value.text:
            tokens.append(index.token(value.param, "x:" + value.text))
            for word in normalise_text(value.text).split():
                tokens.extend(index.prefix_tokens(value.param, word))
        return [SearchToken(**key, value=t) for t in tokens]

    # -- interactions -----------------------------------------------------------------------

    def create(self, resource: dict[str, Any], *, resource_id: str | None = None) -> Stored:
        """FHIR create: the server assigns the id (a client-sent id is ignored, R4 3.1.0.6)."""
        resource_type = str(resource.get("resourceType", ""))
        self._may_write_type(resource_type, Action.CREATE)
        resource = self._validated(resource, resource_type)
        new = resource_id or new_id(self.services.random)
        patient_id = self._patient_of(resource, new)
        decision = self._check(
            Operation.WRITE,
            resource_type,
            patient_id,
            action=Action.CREATE,
            labels=self._label_tokens(resource),
        )
        if Obligation.MASK_CLINICAL in decision.obligations:
            resource = carry_masked(resource, None)
        self._guard_links(
            resource_type,
            resource_id=new,
            patient_id=patient_id,
            resource=resource,
            decision=decision,
            action=Action.CREATE,
        )
        # A server-made id is a fresh UUID4; only a client-chosen one can collide.
        if resource_id is not None and self._head(resource_type, new) is not None:
            msg = f"{resource_type}/{new} already exists"
            raise Conflict(msg)
        now = self.services.clock.now()
        stored = self._write_version(
            resource,
            resource_type=resource_type,
            resource_id=new,
            version=1,
            patient_id=patient_id,
            method="POST",
            now=now,
        )
        head = ResourceHead(
            resource_type=resource_type,
            id=new,
            version=1,
            patient_id=patient_id,
            last_updated=now,
            deleted=False,
        )
        self.session.add(head)
        self._new_heads[(resource_type, new)] = head
        self._reindex(resource_type, new, stored, patient_id=patient_id, fresh=True)
        self._audit(
            Act(Action.CREATE, patient=patient_id, resource_type=resource_type, resource_id=new)
        )
        return Stored(self._shown(stored, decision), resource_type, new, 1, now, created=True)

    def create_unless_exists(
        self, resource: dict[str, Any], query: SearchQuery
    ) -> tuple[Stored, bool]:
        """Conditional create (FHIR R4 3.1.0.8): create unless `query` matches; more than one
        match is a 412. The search runs with the caller's rights, so it reveals nothing the
        caller could not search for anyway."""
        self._may_write_type(query.resource_type, Action.CREATE)
        limited = dataclasses.replace(query, count=2, offset=0)
        found, _total = self.search(limited)
        if len(found) > 1:
            msg = "If-None-Exist matched more than one resource"
            raise PreconditionFailed(msg)
        if found:
            return found[0], False
        return self.create(resource), True

    def _visible_head(self, resource_type: str, resource_id: str, action: Action) -> ResourceHead:
        head = self._head(resource_type, resource_id)
        if head is None:
            self._raise_hidden(
                action, resource_type, resource_id, None, ["not found"], outcome=Outcome.ERROR
            )
            raise AssertionError  # pragma: no cover - _raise_hidden always raises
        operation = Operation.WRITE if action in (Action.UPDATE, Action.DELETE) else Operation.READ
        self._check(
            operation, resource_type, head.patient_id, action=action, resource_id=resource_id
        )
        return head

    def read(self, resource_type: str, resource_id: str) -> Stored:
        head = self._visible_head(resource_type, resource_id, Action.READ)
        if head.deleted:
            principal, clock = self.principal, self.services.clock
            act = Act(
                Action.READ,
                Outcome.ERROR,
                head.patient_id,
                resource_type,
                resource_id,
                0,
                reasons=("deleted",),
            )
            msg = f"{resource_type}/{resource_id} was deleted"
            raise defer_audit(
                Gone(msg), lambda s: append(s, principal=principal, act=act, clock=clock)
            )
        return self._read_version(head, head.version)

    def vread(self, resource_type: str, resource_id: str, version: int) -> Stored:
        head = self._visible_head(resource_type, resource_id, Action.READ)
        return self._read_version(head, version)

    def _read_version(self, head: ResourceHead, version: int) -> Stored:
        row = self.session.get(ResourceVersion, (head.resource_type, head.id, version))
        if row is None:
            msg = f"{head.resource_type}/{head.id} has no version {version}"
            raise NotFound(msg)
        decision = self._last_decision
        if row.patient_id != head.patient_id:
            # An older version belonged to another patient's compartment: decide on it too.
            decision = self._check(
                Operation.READ,
                row.resource_type,
                row.patient_id,
                action=Action.READ,
                resource_id=row.id,
            )
        if row.body is None:
            msg = f"{head.resource_type}/{head.id} version {version} is a deletion"
            raise Gone(msg)
        resource = self._shown(self._open(row), decision)
        self._audit(
            Act(
                Action.READ,
                patient=row.patient_id,
                resource_type=row.resource_type,
                resource_id=row.id,
            )
        )
        return Stored(resource, row.resource_type, row.id, row.version, row.last_updated)

    @staticmethod
    def _shown(resource: dict[str, Any], decision: Decision | None) -> dict[str, Any]:
        """The resource as the decision lets the caller see it (masked for a secretary)."""
        if decision is not None and Obligation.MASK_CLINICAL in decision.obligations:
            return mask(resource)
        return resource

    def update(
        self,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any],
        *,
        if_match: str | None = None,
    ) -> Stored:
        """FHIR update; creates the resource with the client's id when it does not exist
        (R4 3.1.0.4.2, update as create), which migrations and interface engines rely on."""
        if resource.get("id") != resource_id:
            msg = "the resource id in the body must equal the id in the URL"
            raise BadRequest(msg)
        expected = parse_etag(if_match) if if_match is not None else None
        self._may_write_type(resource_type, Action.UPDATE)
        resource = self._validated(resource, resource_type)
        head = self._head(resource_type, resource_id)
        if head is None:
            if expected is not None or self.principal.role != "service":
                # The same answer as for a resource the caller may not see. Creating under a
                # client-chosen id is for integration services (migrations, interface
                # engines): for anyone else, 201 here against 404 for a hidden resource would
                # tell which ids exist.
                self._raise_hidden(
                    Action.UPDATE,
                    resource_type,
                    resource_id,
                    None,
                    ["not found"],
                    outcome=Outcome.ERROR,
                )
            return self.create(resource, resource_id=resource_id)
        decision = self._check(
            Operation.WRITE,
            resource_type,
            head.patient_id,
            action=Action.UPDATE,
            resource_id=resource_id,
        )
        if expected is not None and expected != head.version:
            msg = f"version conflict: the current version is {head.version}, not {expected}"
            raise PreconditionFailed(msg)
        patient_id = self._patient_of(resource, resource_id, existing=True)
        new_labels = self._label_tokens(resource)
        if patient_id != head.patient_id or new_labels:
            # Moving a resource to another patient, or labelling it, needs the right to write
            # it there and so labelled as well.
            decision = self._check(
                Operation.WRITE,
                resource_type,
                patient_id,
                action=Action.UPDATE,
                resource_id=resource_id,
                labels=new_labels,
            )
        self._guard_links(
            resource_type,
            resource_id=resource_id,
            patient_id=patient_id,
            resource=resource,
            decision=decision,
            action=Action.UPDATE,
        )
        if Obligation.MASK_CLINICAL in decision.obligations:
            previous = self.session.get(ResourceVersion, (resource_type, resource_id, head.version))
            old_body = self._open(previous) if previous is not None and previous.body else None
            resource = carry_masked(resource, old_body)
        now = self.services.clock.now()
        version = head.version + 1
        stored = self._write_version(
            resource,
            resource_type=resource_type,
            resource_id=resource_id,
            version=version,
            patient_id=patient_id,
            method="PUT",
            now=now,
        )
        head.version, head.patient_id, head.last_updated, head.deleted = (
            version,
            patient_id,
            now,
            False,
        )
        self._reindex(resource_type, resource_id, stored, patient_id=patient_id)
        self._audit(
            Act(
                Action.UPDATE,
                patient=patient_id,
                resource_type=resource_type,
                resource_id=resource_id,
            )
        )
        return Stored(self._shown(stored, decision), resource_type, resource_id, version, now)

    def delete(self, resource_type: str, resource_id: str) -> bool:
        """FHIR delete: a tombstone version; history keeps the earlier versions (R4 3.1.0.7).

        Returns False when the resource was already deleted (idempotent, no new version).
        """
        self._may_write_type(resource_type, Action.DELETE)
        head = self._visible_head(resource_type, resource_id, Action.DELETE)
        if head.deleted:
            return False
        now = self.services.clock.now()
        head.version += 1
        head.last_updated, head.deleted = now, True
        self.session.add(
            ResourceVersion(
                resource_type=resource_type,
                id=resource_id,
                version=head.version,
                patient_id=head.patient_id,
                key_owner=head.patient_id or ORG_KEY_OWNER,
                last_updated=now,
                method="DELETE",
                body=None,
            )
        )
        self._reindex(resource_type, resource_id, None, patient_id=head.patient_id)
        self._audit(
            Act(
                Action.DELETE,
                patient=head.patient_id,
                resource_type=resource_type,
                resource_id=resource_id,
            )
        )
        return True

    # -- history ----------------------------------------------------------------------------

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        count: int,
        offset: int,
        since: dt.datetime | None = None,
    ) -> tuple[list[HistoryItem], int]:
        """Instance, type or system history, newest first, filtered by the policy in SQL."""
        self.session.flush()
        if resource_id is not None:
            assert resource_type is not None
            self._visible_head(resource_type, resource_id, Action.READ)
        stmt = select(ResourceVersion)
        if resource_type is not None:
            stmt = stmt.where(ResourceVersion.resource_type == resource_type)
        if resource_id is not None:
            stmt = stmt.where(ResourceVersion.id == resource_id)
        if since is not None:
            stmt = stmt.where(ResourceVersion.last_updated >= since)
        if resource_type is not None and resource_id is None:
            self._may_search(resource_type)
        stmt = stmt.where(self._visible(ResourceVersion, Operation.READ))
        total = self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        rows = self.session.scalars(
            # A total order: a transaction writes its entries at one instant, and without the
            # type and id as tie-breakers pages could repeat some versions and skip others.
            stmt.order_by(
                ResourceVersion.last_updated.desc(),
                ResourceVersion.version.desc(),
                ResourceVersion.resource_type,
                ResourceVersion.id,
            )
            .offset(offset)
            .limit(count)
        ).all()
        items: list[HistoryItem] = []
        touched: Counter[str | None] = Counter()
        decisions = self._decide_rows(
            Operation.READ, [(r.resource_type, r.id, r.patient_id) for r in rows]
        )
        for row, decision in zip(rows, decisions, strict=True):
            body = self._shown(self._open(row), decision) if row.body is not None else None
            items.append(
                HistoryItem(
                    body, row.resource_type, row.id, row.version, row.last_updated, row.method
                )
            )
            touched[row.patient_id] += 1
        self._audit_many(
            Action.READ,
            resource_type,
            resource_id,
            touched,
            decisions=decisions,
            patients=[r.patient_id for r in rows],
        )
        return items, total

    def _audit_many(
        self,
        action: Action,
        resource_type: str | None,
        resource_id: str | None,
        touched: Counter[str | None],
        *,
        decisions: Sequence[Decision] = (),
        patients: Sequence[str | None] = (),
    ) -> None:
        # One entry per patient whose data was returned, so every patient's access report
        # shows the searches that returned their records, with that patient's decision.
        by_patient = dict(zip(patients, decisions, strict=True))
        if not touched:
            self._audit(
                Act(
                    action,
                    patient=None,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    count=0,
                ),
                inherit=False,
            )
        for patient_id, n in sorted(touched.items(), key=lambda kv: kv[0] or ""):
            self._audit(
                Act(
                    action,
                    patient=patient_id,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    count=n,
                ),
                by_patient.get(patient_id),
                inherit=False,
            )

    # -- search -----------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> tuple[list[Stored], int]:
        """FHIR search over the blind, reference and date indexes; returns a page and the
        total, both computed after the policy filter so neither leaks hidden resources."""
        resource_type = query.resource_type
        if resource_type in LEDGER_TYPES:
            msg = f"search {resource_type} at /fhir/{resource_type}: it is the ledger's view"
            raise BadRequest(msg)
        # A search inside a transaction Bundle must see the Bundle's own earlier writes.
        self.session.flush()
        self._may_search(resource_type)
        stmt = self._search_statement(query)
        total = self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        heads = self.session.scalars(
            stmt.order_by(*self._ordering(query)).offset(query.offset).limit(query.count)
        ).all()
        versions = self._versions_of(heads)
        results: list[Stored] = []
        touched: Counter[str | None] = Counter()
        decisions = self._decide_rows(
            Operation.SEARCH, [(h.resource_type, h.id, h.patient_id) for h in heads]
        )
        for head, decision in zip(heads, decisions, strict=True):
            row = versions[(head.resource_type, head.id, head.version)]
            results.append(
                Stored(
                    self._shown(self._open(row), decision),
                    head.resource_type,
                    head.id,
                    head.version,
                    head.last_updated,
                )
            )
            touched[head.patient_id] += 1
        self._audit_many(
            Action.SEARCH,
            resource_type,
            None,
            touched,
            decisions=decisions,
            patients=[h.patient_id for h in heads],
        )
        return results, total

    # -- _include, _revinclude and $everything (records.everything) ------------------------

    def _reachable_types(self, operation: Operation, types: Sequence[str] | None) -> list[str]:
        """The types among `types` (None: every type) that the role may ever search, or read,
        and the token's scopes allow: the SQL filter knows the role's rules, not the scopes."""
        found: list[str] = []
        for resource_type in sorted(resource_types()) if types is None else types:
            if resource_type in LEDGER_TYPES:
                continue
            if operation is Operation.SEARCH:
                patient_data = is_patient_data(resource_type)
                ok = may_search_type(self.principal, resource_type, patient_data=patient_data)
                if not ok.allowed:
                    continue
            elif self.principal.scopes is not None and not scope_allows_any(
                self.principal.scopes, resource_type, "rs"
            ):
                continue
            found.append(resource_type)
        return found

    def _stored_rows(
        self, operation: Operation, heads: Sequence[ResourceHead]
    ) -> tuple[list[Stored], list[Decision]]:
        """Open `heads` as the policy lets the caller see them, each decided on again."""
        decisions = self._decide_rows(
            operation, [(h.resource_type, h.id, h.patient_id) for h in heads]
        )
        versions = self._versions_of(heads)
        stored = [
            Stored(
                self._shown(self._open(versions[(h.resource_type, h.id, h.version)]), decision),
                h.resource_type,
                h.id,
                h.version,
                h.last_updated,
            )
            for h, decision in zip(heads, decisions, strict=True)
        ]
        return stored, decisions

    def included(self, query: SearchQuery, matches: Sequence[Stored]) -> tuple[list[Stored], bool]:
        """What a search's `_include` and `_revinclude` add to its page (R4 3.1.1.5.4), under
        exactly the search's own policy: found by SQL under the same `_visible` filter (what
        the caller may not see is absent, with no count and no hint), of types the role and
        the token's scopes may search, decided on again row by row (fail closed), masked and
        audited per patient like search results. Returns the resources (never a page's own
        match twice) and whether `MAX_INCLUDED` cut them short."""
        if not query.includes or not matches:
            return [], False
        self.session.flush()
        ids = [m.id for m in matches]
        seen = {(m.resource_type, m.id) for m in matches}
        heads: list[ResourceHead] = []
        truncated = False
        for include in query.includes:
            types = self._reachable_types(Operation.SEARCH, include_targets(include))
            if include.reverse:
                candidates = revinclude_condition(include, query.resource_type, ids)
            else:
                targets: dict[str, set[str]] = {}
                for ref_type, ref_id in self.session.execute(include_reference_rows(include, ids)):
                    targets.setdefault(ref_type, set()).add(ref_id)
                wanted = [
                    and_(ResourceHead.resource_type == t, ResourceHead.id.in_(sorted(i)))
                    for t, i in sorted(targets.items())
                    if t in types
                ]
                candidates = or_(*wanted) if wanted else None
            if not types or candidates is None:
                continue  # nothing to follow, or a type the caller may not search at all
            stmt = select(ResourceHead).where(
                ResourceHead.deleted.is_(False),
                ResourceHead.resource_type.in_(types),
                candidates,
                self._visible(ResourceHead, Operation.SEARCH),
            )
            # Rows already on the page come back too: fetch enough to fill the room left.
            limit = MAX_INCLUDED - len(heads) + len(seen) + 1
            for head in self.session.scalars(
                stmt.order_by(ResourceHead.resource_type, ResourceHead.id).limit(limit)
            ):
                if (head.resource_type, head.id) in seen:
                    continue
                if len(heads) == MAX_INCLUDED:
                    truncated = True
                    break
                seen.add((head.resource_type, head.id))
                heads.append(head)
        found, decisions = self._stored_rows(Operation.SEARCH, heads)
        for resource_type in sorted({h.resource_type for h in heads}):
            mine = [i for i, h in enumerate(heads) if h.resource_type == resource_type]
            patients = [heads[i].patient_id for i in mine]
            self._audit_many(
                Action.SEARCH,
                resource_type,
                None,
                Counter(patients),
                decisions=[decisions[i] for i in mine],
                patients=patients,
            )
        return found, truncated

    def everything(self, patient_id: str, query: EverythingQuery) -> tuple[list[Stored], int]:
        """Patient `$everything` (FHIR R4 operation-patient-everything.html): a page of the
        resources of the patient's compartment (records.everything) the caller may read, the
        Patient first. A patient the caller may not read answers 404 like a read; the total
        and paging count only visible rows; every row is decided on again (fail closed) and
        masked as the decision says. One ledger entry for the patient (action read, reason
        `EVERYTHING`, with the count), and one per other patient whose rows were returned."""
        self.session.flush()
        head = self._visible_head("Patient", patient_id, Action.READ)
        decision = self._last_decision
        assert decision is not None
        shredded = self.session.scalar(
            select(DataKey.shredded_at).where(DataKey.owner == patient_id)
        )
        if head.deleted or shredded is not None:
            why = "erased" if shredded is not None else "deleted"
            principal, clock = self.principal, self.services.clock
            act = Act(
                Action.READ,
                Outcome.ERROR,
                patient_id,
                "Patient",
                patient_id,
                0,
                reasons=(EVERYTHING, why),
            )
            msg = f"Patient/{patient_id} was {why}"
            raise defer_audit(
                Gone(msg), lambda s: append(s, principal=principal, act=act, clock=clock)
            )
        stmt = select(ResourceHead).where(
            ResourceHead.deleted.is_(False),
            ResourceHead.resource_type.in_(self._reachable_types(Operation.READ, query.types)),
            compartment_condition(patient_id),
            self._visible(ResourceHead, Operation.READ),
        )
        if query.since is not None:
            stmt = stmt.where(ResourceHead.last_updated >= query.since)
        total = self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        itself = and_(ResourceHead.resource_type == "Patient", ResourceHead.id == patient_id)
        heads = self.session.scalars(
            stmt.order_by(case((itself, 0), else_=1), ResourceHead.resource_type, ResourceHead.id)
            .offset(query.offset)
            .limit(query.count)
        ).all()
        found, decisions = self._stored_rows(Operation.READ, heads)
        touched = Counter(h.patient_id for h in heads)
        self._audit(
            Act(
                Action.READ,
                patient=patient_id,
                resource_type="Patient",
                resource_id=patient_id,
                count=touched.pop(patient_id, 0),
                reasons=(EVERYTHING, *decision.reasons),
            ),
            decision,
        )
        # A resource of another patient's record that names this patient (an Observation
        # whose performer they are) shows in that patient's access report too.
        by_patient = dict(zip((h.patient_id for h in heads), decisions, strict=True))
        for other, n in sorted(touched.items(), key=lambda kv: kv[0] or ""):
            other_decision = by_patient[other]
            self._audit(
                Act(
                    Action.READ,
                    patient=other,
                    count=n,
                    reasons=(EVERYTHING, *other_decision.reasons),
                ),
                other_decision,
            )
        return found, total

    def _decide_rows(
        self, operation: Operation, rows: Sequence[tuple[str, str, str | None]]
    ) -> list[Decision]:
        """Defence in depth behind the SQL filter: every returned row is decided on, with its
        facts gathered in a few queries; a row the filter let through and the policy refuses
        fails the request (fail closed) rather than being dropped from a counted page."""
        facts = self._facts([p for _t, _i, p in rows])
        labels = labels_of(self.session, [(t, i) for t, i, _p in rows])
        decisions: list[Decision] = []
        for resource_type, resource_id, patient_id in rows:
            decision = self._decide(
                operation,
                resource_type,
                patient_id,
                labels=labels[(resource_type, resource_id)],
                facts=facts.get(patient_id) if patient_id else None,
            )
            if not decision.allowed:
                msg = "a search result failed its access check; nothing is returned"
                raise EgideError(msg)
            decisions.append(decision)
        return decisions

    def _visible(
        self, model: type[ResourceHead] | type[ResourceVersion], operation: Operation
    ) -> Any:
        """The policy as a SQL condition on `model`'s rows, so that results, totals and paging
        only ever count what the caller may see (no side doors)."""
        # Rows of a crypto-shredded patient no longer exist for anyone (GDPR art. 17).
        erased = select(DataKey.owner).where(DataKey.shredded_at.is_not(None))
        return visible_rows(
            model,
            search_plan(self.principal, operation),
            actors=self.actors(),
            now=self.services.clock.now(),
            windows=self.services.windows,
            erased=erased,
        )

    def _versions_of(
        self, heads: Sequence[ResourceHead]
    ) -> dict[tuple[str, str, int], ResourceVersion]:
        if not heads:
            return {}
        keys = [(h.resource_type, h.id, h.version) for h in heads]
        rows = self.session.scalars(
            select(ResourceVersion).where(
                or_(
                    *(
                        and_(
                            ResourceVersion.resource_type == t,
                            ResourceVersion.id == i,
                            ResourceVersion.version == v,
                        )
                        for t, i, v in keys
                    )
                )
            )
        ).all()
        return {(r.resource_type, r.id, r.version): r for r in rows}

    def _ordering(self, query: SearchQuery) -> list[Any]:
        """`_sort` (R4 3.1.1.5.3) over clear columns only: `_id`, `_lastUpdated` and clinical
        dates; blind-indexed values have no order to sort by. Default: newest first."""
        keys: list[Any] = []
        for key in query.sort:
            if key.param == "_id":
                column: Any = ResourceHead.id
            elif key.param == "_lastUpdated":
                column = ResourceHead.last_updated
            else:
                bound = func.max(SearchDate.high) if key.descending else func.min(SearchDate.low)
                column = (
                    select(bound)
                    .where(
                        SearchDate.resource_type == query.resource_type,
                        SearchDate.resource_id == ResourceHead.id,
                        SearchDate.param == key.param,
                    )
                    .scalar_subquery()
                )
            keys.append(column.desc() if key.descending else column.asc())
        keys.extend([ResourceHead.last_updated.desc(), ResourceHead.id])
        return keys

    def _search_statement(self, query: SearchQuery) -> Select[ResourceHead]:
        rt = query.resource_type
        stmt = select(ResourceHead).where(
            ResourceHead.resource_type == rt, ResourceHead.deleted.is_(False)
        )
        stmt = stmt.where(self._visible(ResourceHead, Operation.SEARCH))
        if query.ids:
            stmt = stmt.where(ResourceHead.id.in_(query.ids))
        for value in query.last_updated:
            low, high = _date_bounds(value)
            stmt = stmt.where(
                _date_match(
                    value.prefix, ResourceHead.last_updated, ResourceHead.last_updated, low, high
                )
            )
        for criterion in query.criteria:
            stmt = stmt.where(self._criterion(rt, criterion))
        return stmt

    def _criterion(self, resource_type: str, criterion: Criterion) -> Any:
        param = SEARCH_PARAMETERS[resource_type][criterion.param]
        alternatives: list[Any] = []
        for value in criterion.values:
            if isinstance(value, ReferenceValue):
                ref_type = value.ref_type or ("Patient" if criterion.param == "patient" else None)
                # `id IN (SELECT ...)` rather than a correlated EXISTS, for the reason given
                # in `_all_tokens`: the index leads with (resource_type, param, ref_id).
                cond = and_(
                    SearchReference.resource_type == resource_type,
                    SearchReference.param == criterion.param,
                    SearchReference.ref_id == value.ref_id,
                )
                if ref_type is not None:
                    cond = and_(cond, SearchReference.ref_type == ref_type)
                alternatives.append(
                    ResourceHead.id.in_(select(SearchReference.resource_id).where(cond))
                )
            elif isinstance(value, DateValue) and not param.secret:
                low, high = _date_bounds(value)
                alternatives.append(
                    ResourceHead.id.in_(
                        select(SearchDate.resource_id).where(
                            SearchDate.resource_type == resource_type,
                            SearchDate.param == criterion.param,
                            _date_match(value.prefix, SearchDate.low, SearchDate.high, low, high),
                        )
                    )
                )
            else:
                tokens = self._query_tokens(criterion, value)
                alternatives.append(_all_tokens(resource_type, criterion.param, tokens))
        return or_(*alternatives)

    def _query_tokens(self, criterion: Criterion, value: object) -> list[bytes]:
        index, name = self.services.index, criterion.param
        if isinstance(value, TokenValue):
            if value.system:
                return [index.token(name, f"sc:{value.system}|{value.code}")]
            if value.system_given:  # `|code`: a code with no system
                return [index.token(name, "nc:" + value.code)]
            return [index.token(name, "c:" + value.code)]
        if isinstance(value, StringValue):
            if value.contains:
                msg = (
                    f"{name}:contains is not supported: names are searched through blind "
                    "indexes, which match whole words and prefixes only"
                )
                raise BadRequest(msg)
            if value.exact:
                return [index.token(name, "x:" + value.text)]
            words = normalise_text(value.text).split()
            if not words:
                msg = f"search parameter {name} needs a value"
                raise BadRequest(msg)
            try:
                return [index.prefix_query_token(name, w) for w in words]
            except ValueError:
                msg = f"search parameter {name} needs at least 2 characters per word"
                raise BadRequest(msg) from None
        if isinstance(value, DateValue):
            # Secret dates (birth dates): equality at year, month or day precision only.
            if value.prefix != "eq":
                msg = f"{name} supports equality only (it is stored as a blind index)"
                raise BadRequest(msg)
            cut = _date_precision(value.low, value.high)
            return [index.token(name, "d:" + value.low.date().isoformat()[:cut])]
        msg = f"unsupported value for search parameter {name}"
        raise BadRequest(msg)


def _date_precision(low: dt.datetime, high: dt.datetime) -> int:
    """How many characters of YYYY-MM-DD a [low, high) range pins down: 10, 7 or 4."""
    span = high - low
    if span <= dt.timedelta(days=1):
        return 10
    if span <= dt.timedelta(days=31):
        return 7
    return 4


def _all_tokens(resource_type: str, param: str, tokens: Sequence[bytes]) -> Any:
    """Every token must be present for the resource (all words of a name search).

    Written as `id IN (SELECT resource_id ...)`, not as an EXISTS correlated on the id: the
    index is (resource_type, param, value), so SQLite ran the correlated form as one scan of
    every row holding the token per candidate resource (quadratic: 6 s for one
    `Observation?code=` page over 1,000 patients, bench/bench_access.py)."""
    return and_(
        *(
            ResourceHead.id.in_(
                select(SearchToken.resource_id).where(
                    SearchToken.resource_type == resource_type,
                    SearchToken.param == param,
                    SearchToken.value == token,
                )
            )
            for token in tokens
        )
    )


def _date_bounds(value: DateValue) -> tuple[dt.datetime, dt.datetime]:
    return value.low, value.high


def _date_match(
    prefix: str, col_low: Any, col_high: Any, low: dt.datetime, high: dt.datetime
) -> Any:
    """FHIR R4 search 3.1.1.4.1 prefixes over ranges: the target [col_low, col_high) against
    the search value's implicit range [low, high)."""
    eq = and_(col_low >= low, col_high <= high)
    if prefix == "eq":
        return eq
    if prefix == "ne":
        return ~eq
    if prefix == "gt":
        return col_high > high
    if prefix == "lt":
        return col_low < low
    if prefix == "ge":
        return or_(col_high > high, eq)
    if prefix == "le":
        return or_(col_low < low, eq)
    if prefix == "sa":
        return col_low >= high
    if prefix == "eb":
        return col_high <= low
    if prefix == "ap":
        # Approximately: overlaps the value widened by 10 % of its distance from now, kept
        # simple here as plain overlap of the ranges.
        return and_(col_low < high, col_high > low)
    msg = f"unsupported date prefix {prefix}"
    raise BadRequest(msg)


def repository_for(session: Session, principal: Principal, services: RecordServices) -> Repository:
    """The ordinary path: a repository bound to an authenticated caller."""
    return Repository(session, principal, services)


def system_repository(session: Session, services: RecordServices, *, job: str) -> Repository:
    """The privileged path, for maintenance jobs (seeding, migration, key rotation checks).

    It acts as a `service` principal named after the job; every act is still audited under
    that name, so the ledger shows which job touched what.
    """
    principal = Principal(id=f"system:{job}", role="service", name=f"system job {job}")
    return Repository(session, principal, services)
