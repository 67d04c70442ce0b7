"""`egide user ...`: accounts for people, managed by the local operator.

`create` prints the single-use invitation link (its token is shown once and stored only as a
hash) and when it expires; `disable`, `enable`, `unlock`, `reset-mfa` and `revoke-sessions`
change an account's security state; `purge` deletes expired sign-in housekeeping rows (the
server also does it on every background pass). Every command is one transaction with its
ledger entry, audited under the CLI operator principal (DESIGN.md contract 2). Errors are one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

from collections.abc import Callable

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from egide.cli.console import cli_errors, err, out
from egide.cli.runtime import OPERATOR, Services, open_services, purge_identity
from egide.core.clock import Clock
from egide.core.principal import Principal
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.identity import accounts

user_app = typer.Typer(no_args_is_help=True, help="Accounts of staff and patients.")
DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def invitation_link(services: Services, token: str) -> str:
    base = (services.settings.public_base_url or DEFAULT_BASE_URL).rstrip("/")
    return f"{base}/invite/{token}"


@user_app.command("create")
@cli_errors
def user_create(
    role: str = typer.Option(..., help="physician, nurse, secretary, admin, patient, ..."),
    email: str = typer.Option(..., help="the person's e-mail address (their sign-in name)"),
    name: str = typer.Option(..., help="the person's full name"),
    patient: str | None = typer.Option(None, help="Patient id, for a patient account"),
    practitioner: str | None = typer.Option(None, help="Practitioner id, for staff"),
) -> None:
    """Invite a person: prints the single-use invitation link and its expiry."""
    services = open_services(load_settings())
    try:
        clock = services.records.clock
        with transaction(services.session_factory) as session:
            account, token = accounts.create_account(
                session,
                email=email,
                name=name,
                role=role,
                clock=clock,
                settings=services.settings,
                envelope=services.records.envelope,
                actor=OPERATOR,
                patient_id=patient,
                practitioner_id=practitioner,
            )
            expires = accounts.invitation_expiry(session, token=token, clock=clock)
        link = invitation_link(services, token)
    finally:
        services.close()
    out.print(link, markup=False)
    err.print(
        f"egide: invited {account.email} ({account.role}); the link works once and expires "
        f"{expires.isoformat(timespec='minutes')}",
        markup=False,
    )


@user_app.command("list")
@cli_errors
def user_list() -> None:
    """List the accounts."""
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            rows = accounts.list_accounts(session)
    finally:
        services.close()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("e-mail", "name", "role", "status", "MFA", "linked to", "created"):
        table.add_column(header, overflow="fold")
    for row in rows:
        link = f"Patient/{row.patient_id}" if row.patient_id else ""
        if row.practitioner_id:
            link = f"Practitioner/{row.practitioner_id}"
        table.add_row(
            row.email,
            row.name,
            row.role,
            row.status,
            "yes" if row.mfa_enrolled else "no",
            link,
            row.created_at.strftime("%Y-%m-%d"),
        )
    # In a pipe or a file, rows stay whole lines (greppable) instead of fitting 80 columns.
    wide = Console(highlight=False, width=None if out.is_terminal else 200)
    wide.print(table)


Change = Callable[..., None]


def _change(email: str, change: Change, done: str) -> None:
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            _apply(session, change, email, services.records.clock, OPERATOR)
    finally:
        services.close()
    err.print(f"egide: {done} {accounts.normalise_email(email)}", markup=False)


def _apply(session: Session, change: Change, email: str, clock: Clock, actor: Principal) -> None:
    change(session, email=email, clock=clock, actor=actor)


@user_app.command("disable")
@cli_errors
def user_disable(email: str = typer.Argument(..., help="the account's e-mail address")) -> None:
    """Disable an account and end all its sessions."""
    _change(email, accounts.disable_account, "disabled")


@user_app.command("enable")
@cli_errors
def user_enable(email: str = typer.Argument(..., help="the account's e-mail address")) -> None:
    """Enable a disabled account."""
    _change(email, accounts.enable_account, "enabled")


@user_app.command("unlock")
@cli_errors
def user_unlock(email: str = typer.Argument(..., help="the account's e-mail address")) -> None:
    """Clear an account's failed attempts and lock."""
    _change(email, accounts.unlock_account, "unlocked")


@user_app.command("reset-mfa")
@cli_errors
def user_reset_mfa(email: str = typer.Argument(..., help="the account's e-mail address")) -> None:
    """Forget an account's authenticator and recovery codes; it enrols again at sign-in."""
    _change(email, accounts.reset_mfa, "second factor reset for")


@user_app.command("revoke-sessions")
@cli_errors
def user_revoke_sessions(
    email: str = typer.Argument(..., help="the account's e-mail address"),
) -> None:
    """Sign an account out everywhere (every session ends now)."""
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            count = accounts.revoke_account_sessions(
                session, email=email, clock=services.records.clock, actor=OPERATOR
            )
    finally:
        services.close()
    err.print(f"egide: {count} sessions of {accounts.normalise_email(email)} ended", markup=False)


@user_app.command("purge")
@cli_errors
def user_purge() -> None:
    """Delete ended sign-in throttle windows and spent or expired pending sign-ins."""
    services = open_services(load_settings())
    try:
        purged = purge_identity(services)
    finally:
        services.close()
    err.print(
        f"egide: purged {purged.address_throttles} address throttle windows and "
        f"{purged.pending_sign_ins} pending sign-ins",
        markup=False,
    )
