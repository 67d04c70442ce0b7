"""`egide access ...`: explicit grants and the rebuilding of care links, for the local operator.

* `assign --practitioner ID | --user ACCOUNT --patient ID --days N --reason TEXT`: name a
  practitioner (or a clinician's account) as treating a patient (issue 5, item 3).
* `investigate --officer ACCOUNT --patient ID --hours N --reason TEXT`: let a security officer
  read one patient's record, read-only, until it expires (issue 5, item 2).
* `grants [--patient ID] [--all]`: the grants in force (or all of them).
* `end GRANT_ID`: end a grant now.
* `rebuild`: derive every care link, membership and consent rule again from the stored FHIR
  resources (after a migration, a restore, or to repair the tables), grants kept.

Each command is one transaction with its ledger entries, under the CLI operator principal
(DESIGN.md contract 2). `rebuild` reads the resources through the audited system repository,
so the ledger shows which job opened them. Errors are one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import datetime as dt

import typer
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from egide.cli.console import cli_errors, err, fail, out, progress
from egide.cli.runtime import OPERATOR, Services, open_services
from egide.core.errors import BadRequest
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.identity.accounts import normalise_email
from egide.identity.models import Account, ApiToken
from egide.records import grants
from egide.records.links import LINKED_TYPES
from egide.records.models import AccessLink, AccessMembership, ConsentRule, ResourceHead
from egide.records.repository import system_repository
from egide.records.unit_of_work import run_in_transaction
from egide.records.visibility import relink

access_app = typer.Typer(no_args_is_help=True, help="Access grants and care links.")
REBUILD_JOB = "access-rebuild"


def _account(session: Session, reference: str) -> tuple[str, str] | None:
    """(id, role) of an active account named by id or e-mail address, or of a live API token
    named by id (a token acts as its own account: grants name it `user:<token id>`)."""
    account = session.get(Account, reference) if len(reference) <= 36 else None
    if account is None and "@" in reference and "\x00" not in reference:
        account = session.scalar(select(Account).where(Account.email == normalise_email(reference)))
    if account is not None:
        return (account.id, account.role) if account.status == "active" else None
    token = session.get(ApiToken, reference) if len(reference) <= 64 else None
    if token is not None and token.revoked_at is None:
        return token.id, token.role
    return None


def _when(moment: dt.datetime | None) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ") if moment else "-"


def _print(grant: grants.Grant) -> None:
    out.print(grant.id, markup=False)


@access_app.command("assign")
@cli_errors
def assign(
    patient: str = typer.Option(..., help="the Patient id"),
    days: int = typer.Option(..., help="how many days the assignment holds (1 to 366)"),
    reason: str = typer.Option(..., help="why (10 to 500 characters)"),
    practitioner: str | None = typer.Option(None, help="the Practitioner id to assign"),
    user: str | None = typer.Option(None, help="or a clinician's account (id or e-mail)"),
) -> None:
    """Assign a practitioner or a clinician's account to a patient; prints the grant id."""
    if (practitioner is None) == (user is None):
        fail("name either --practitioner or --user")
    services = open_services(load_settings())

    def work(session: Session) -> grants.Granted:
        account = _account(session, user) if user is not None else None
        if user is not None and account is None:
            msg = f"no active account {user!r}"
            raise BadRequest(msg)
        return grants.assign(
            session,
            OPERATOR,
            patient_id=patient,
            practitioner_id=practitioner,
            account_id=account[0] if account else None,
            account_role=account[1] if account else None,
            clock=services.records.clock,
            days=days,
            reason=reason,
        )

    try:
        # The unit of work writes a refusal's ledger entry after the rollback.
        granted = run_in_transaction(services.session_factory, work)
    finally:
        services.close()
    _print(granted.grant)
    err.print(f"egide: {granted.grant.actor} assigned until {granted.grant.valid_to}", markup=False)


@access_app.command("investigate")
@cli_errors
def investigate(
    officer: str = typer.Option(..., help="the security officer's account (id or e-mail)"),
    patient: str = typer.Option(..., help="the Patient id"),
    hours: float = typer.Option(..., help="how long the officer may read the record"),
    reason: str = typer.Option(..., help="the incident (10 to 500 characters)"),
) -> None:
    """Let a security officer read one patient's record for some hours; prints the grant id."""
    services = open_services(load_settings())

    def work(session: Session) -> grants.Granted:
        account = _account(session, officer)
        return grants.open_investigation(
            session,
            OPERATOR,
            officer_id=account[0] if account else officer,
            officer_role=account[1] if account else None,
            patient_id=patient,
            clock=services.records.clock,
            hours=hours,
            reason=reason,
        )

    try:
        granted = run_in_transaction(services.session_factory, work)
    finally:
        services.close()
    _print(granted.grant)
    err.print(
        f"egide: investigation for {granted.grant.actor} until {granted.grant.valid_to}",
        markup=False,
    )


@access_app.command("grants")
@cli_errors
def list_grants(
    patient: str | None = typer.Option(None, help="only this patient's grants"),
    every: bool = typer.Option(False, "--all", help="ended and expired grants too"),
) -> None:
    """List the grants in force: id, kind, patient, actor, from, until, by, reason."""
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            found = grants.active_grants(
                session, clock=services.records.clock, patient_id=patient, include_ended=every
            )
    finally:
        services.close()
    # One grant a line, tab-separated, whole ids: for people and for scripts alike.
    for grant in found:
        fields = (
            grant.id,
            grant.kind.value,
            grant.patient_id,
            grant.actor,
            _when(grant.valid_from),
            _when(grant.valid_to),
            grant.granted_by or "-",
            grant.reason,
        )
        out.print("\t".join(fields), markup=False)
    err.print(f"egide: {len(found)} grants", markup=False)


@access_app.command("end")
@cli_errors
def end(
    grant_id: str = typer.Argument(..., help="the grant id (see `egide access grants`)"),
    reason: str = typer.Option("", help="why it ends early"),
) -> None:
    """End a grant now."""
    services = open_services(load_settings())
    try:
        ended = run_in_transaction(
            services.session_factory,
            lambda s: grants.end_grant(
                s, OPERATOR, grant_id=grant_id, clock=services.records.clock, reason=reason
            ),
        )
    finally:
        services.close()
    err.print(f"egide: {ended.kind.value} grant {ended.id} ended", markup=False)


# Guardianship is stated only by a trusted writer (records.links): the rebuild, a system job,
# cannot tell who wrote a stored RelatedPerson or Patient.link, so it keeps those rows as they
# are rather than re-deriving them (which would trust a desk's edit).
_KEPT = ("Patient", "RelatedPerson")


def rebuild_links(services: Services) -> int:
    """Delete every link, membership and consent rule derived from resources (grants and
    guardianship stay) and derive them again from each current resource; one transaction, so
    access never sees half a rebuild. Returns how many resources were read."""
    with transaction(services.session_factory) as session:
        types = sorted(LINKED_TYPES - set(_KEPT))
        heads = select(ResourceHead).where(
            ResourceHead.resource_type.in_(types), ResourceHead.deleted.is_(False)
        )
        total = session.scalar(select(func.count()).select_from(heads.subquery())) or 0
        session.execute(
            delete(AccessLink).where(AccessLink.source_type.not_in((grants.GRANT_SOURCE, *_KEPT)))
        )
        session.execute(delete(AccessMembership).where(AccessMembership.source_type.not_in(_KEPT)))
        session.execute(delete(ConsentRule))
        repo = system_repository(session, services.records, job=REBUILD_JOB)
        keys = session.execute(
            select(ResourceHead.resource_type, ResourceHead.id, ResourceHead.patient_id)
            .where(ResourceHead.resource_type.in_(types), ResourceHead.deleted.is_(False))
            .order_by(ResourceHead.resource_type, ResourceHead.id)
        ).all()
        done = 0
        with progress() as bar:
            task = bar.add_task("rebuilding care links", total=total)
            for resource_type, resource_id, patient_id in keys:
                stored = repo.read(resource_type, resource_id)  # audited, as the job
                relink(
                    session,
                    resource_type=resource_type,
                    resource_id=resource_id,
                    patient_id=patient_id,
                    resource=stored.resource,
                    now=services.records.clock.now(),
                    index=services.records.index,
                )
                done += 1
                bar.update(task, completed=done)
    return done


@access_app.command("rebuild")
@cli_errors
def rebuild() -> None:
    """Derive every care link, membership and consent rule again from the stored resources."""
    services = open_services(load_settings())
    try:
        count = rebuild_links(services)
    finally:
        services.close()
    err.print(f"egide: care links rebuilt from {count} resources", markup=False)
