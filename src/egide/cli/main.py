"""The `egide` command.

Pinned commands (used by outside checks): `egide init`, `egide token create --role ROLE
--name NAME`, `egide serve --host H --port P`, `egide demo`, `egide keys rotate`.
The ASGI application is handed in by the composition root (`egide.app`), since the CLI may not
import the API room.
"""

from __future__ import annotations

import datetime as dt
import secrets
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import typer
from sqlalchemy.orm import Session

from egide import __version__
from egide.cli import archive as _archive  # noqa: F401 - registers `egide ledger archive`
from egide.cli import report as _report  # noqa: F401 - registers `egide ledger report`
from egide.cli.access import access_app
from egide.cli.clients import client_app
from egide.cli.console import cli_errors, err, fail, out, progress
from egide.cli.detect import detect_app
from egide.cli.ledger import ledger_app
from egide.cli.runtime import OPERATOR, Services, initialise, is_initialised, open_services
from egide.cli.simulate import simulate_command
from egide.cli.users import user_app
from egide.core.settings import Settings, load_settings
from egide.db.engine import transaction
from egide.identity.tokens import create_token
from egide.ledger.service import Act, Action, append

F = TypeVar("F", bound=Callable[..., Any])
AsgiFactory = Callable[[Services], Any]


def audit_operator(session: Session, services: Services, act: Act) -> None:
    """Ledger entry for an act of the local operator (init, tokens, keys): contract 2."""
    append(session, principal=OPERATOR, clock=services.records.clock, act=act)


def settings() -> Settings:
    return load_settings()


_ASGI_FACTORY: list[AsgiFactory] = []


def _factory() -> AsgiFactory:
    if not _ASGI_FACTORY:  # pragma: no cover - always set by egide.app.main
        fail("the web application was not wired in; run egide through its console script")
    return _ASGI_FACTORY[0]


app = typer.Typer(
    name="egide",
    no_args_is_help=True,
    add_completion=False,
    help="Égide: an encrypted, audited FHIR R4 record vault.",
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(no_args_is_help=True, help="API bearer tokens.")
keys_app = typer.Typer(no_args_is_help=True, help="Key-encryption keys.")
app.add_typer(token_app, name="token")
app.add_typer(keys_app, name="keys")
app.add_typer(ledger_app, name="ledger")
app.add_typer(user_app, name="user")
app.add_typer(client_app, name="client")
app.add_typer(access_app, name="access")
app.add_typer(detect_app, name="detect")
app.command(name="simulate")(simulate_command)


@app.command()
@cli_errors
def version() -> None:
    """Print the version."""
    out.print(__version__)


@app.command()
@cli_errors
def init() -> None:
    """Create the data directory, the keyring and the database schema."""
    cfg = settings()
    created = initialise(cfg)
    services = open_services(cfg)
    try:
        if created:
            with transaction(services.session_factory) as session:
                audit_operator(
                    session,
                    services,
                    Act(
                        Action.SYSTEM_INIT,
                        count=0,
                        reasons=("egide init created the keyring and schema",),
                    ),
                )
    finally:
        services.close()
    where = cfg.data_dir.resolve()
    err.print(
        f"egide: {'initialised' if created else 'already initialised; schema up to date'}"
        f" in {where}"
    )
    if created and cfg.master_secret is None:
        err.print(
            f"egide: a demo master secret was written to {cfg.master_key_path}; "
            "in production set EGIDE_MASTER_SECRET instead"
        )


@token_app.command("create")
@cli_errors
def token_create(
    role: str = typer.Option(..., help="service, admin, physician, nurse, patient, ..."),
    name: str = typer.Option(..., help="who or what holds the token"),
    patient: str | None = typer.Option(None, help="patient id, for a patient token"),
    practitioner: str | None = typer.Option(
        None, help="Practitioner id, for a clinician's token (their care links give access)"
    ),
    days: int | None = typer.Option(None, min=1, help="expire after this many days"),
) -> None:
    """Print a new API bearer token (and nothing else on stdout)."""
    services = open_services(settings())
    try:
        clock = services.records.clock
        expires = clock.now() + dt.timedelta(days=days) if days else None
        with transaction(services.session_factory) as session:
            issued = create_token(
                session,
                role=role,
                name=name,
                clock=clock,
                patient_id=patient,
                practitioner_id=practitioner,
                expires_at=expires,
            )
            audit_operator(
                session,
                services,
                Act(
                    Action.TOKEN_CREATE,
                    patient=patient,
                    resource_id=issued.id,
                    reasons=(f"role {issued.role}", f"name {issued.name}"),
                ),
            )
    finally:
        services.close()
    sys.stdout.write(issued.token + "\n")


@keys_app.command("rotate")
@cli_errors
def keys_rotate() -> None:
    """New key-encryption key; every data key re-wrapped; the old KEKs retired."""
    services = open_services(settings())
    try:
        rotate_keys(services)
    finally:
        services.close()


@keys_app.command("status")
@cli_errors
def keys_status() -> None:
    """Show the KEKs and how many data keys each wraps."""
    services = open_services(settings())
    try:
        with transaction(services.session_factory) as session:
            usage = services.records.envelope.kek_usage(session)
        current = services.keyring.current_kek_id()
        for info in services.keyring.list_keks():
            state = "current" if info.id == current else ("retired" if info.retired else "active")
            out.print(f"{info.id}  {state:8}  data keys: {usage.get(info.id, 0)}")
    finally:
        services.close()


@app.command()
@cli_errors
def serve(
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535),
) -> None:
    """Serve the API (FHIR R4 under /fhir)."""
    cfg = settings()
    if not is_initialised(cfg):
        fail(f"no installation in {cfg.data_dir.resolve()}: run `egide init` first")
    services = open_services(cfg)
    run_server(_factory()(services), host, port)


@app.command()
@cli_errors
def demo(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    patients: int = typer.Option(500, min=1, max=20000),
    serve_after: bool = typer.Option(
        True, "--serve/--no-serve", help="start the server once seeded"
    ),
) -> None:
    """Init if needed, seed the demonstration clinic, print URLs and a token, serve."""
    from egide.cli.demo.seed import seed_demo  # noqa: PLC0415 - heavy, demo only

    cfg = settings()
    initialise(cfg)
    services = open_services(cfg)
    summary = seed_demo(services, patients=patients, progress=progress)
    with transaction(services.session_factory) as session:
        clock = services.records.clock
        service_token = create_token(
            session, role="service", name="demo service token", clock=clock
        ).token
        patient_token = create_token(
            session,
            role="patient",
            name="demo patient token",
            clock=clock,
            patient_id=summary.first_patient,
        ).token
        audit_operator(
            session,
            services,
            Act(Action.TOKEN_CREATE, count=2, reasons=("demo tokens",)),
        )
    staff_login = _demo_staff_account(services, summary.physicians)
    officer_login = _demo_account(
        services, email=DEMO_OFFICER_EMAIL, name="Sam Sécurité", role="security_officer"
    )
    base = f"http://{host}:{port}"
    out.print(f"""
[bold]Égide demo clinic[/bold] — {summary.describe()}

  FHIR base URL      {base}/fhir
  Capability         {base}/fhir/metadata
  Data directory     {cfg.data_dir.resolve()}

  Service token (system read/write of clinical data):
{service_token}
  Patient token (patient {summary.first_patient}, own record only):
{patient_token}

  Sign in at {base}/login (staff: a TOTP authenticator app is enrolled at first sign-in):
{staff_login}
  The security officer (alerts of the live misuse detection at {base}/alerts):
{officer_login}
  To see an alert: try a wrong password on the physician's account ten times, then sign in
  as the officer (detection learns the clinic's normal from the ledger as it runs).

  Try:
curl -H "Authorization: Bearer {service_token}" "{base}/fhir/Patient?family=martin"
curl -H "Authorization: Bearer {patient_token}" "{base}/fhir/Observation"
""")
    if serve_after:
        run_server(_factory()(services), host, port)
    else:
        services.close()


DEMO_STAFF_EMAIL = "dr.demo@clinic.example"
DEMO_OFFICER_EMAIL = "security@clinic.example"


def busiest_practitioner(session: Session, candidates: Sequence[str]) -> str | None:
    """The practitioner among `candidates` named on the most care links."""
    from sqlalchemy import func, select  # noqa: PLC0415 - demo only

    from egide.records.models import AccessLink  # noqa: PLC0415 - demo only

    if not candidates:
        return None
    actors = [f"Practitioner/{c}" for c in candidates]
    row = session.execute(
        select(AccessLink.actor, func.count())
        .where(AccessLink.actor.in_(actors))
        .group_by(AccessLink.actor)
        .order_by(func.count().desc(), AccessLink.actor)
        .limit(1)
    ).first()
    return row[0].removeprefix("Practitioner/") if row else candidates[0]


def _demo_staff_account(services: Services, physicians: Sequence[str]) -> str:
    """A physician account for the demo with a fresh random password, printed once.

    It is one of the seeded physicians (the one with the most care links), so signing in shows
    access following care: their patients' records open, the others' answer 404."""
    with transaction(services.session_factory) as session:
        practitioner = busiest_practitioner(session, physicians)
    return _demo_account(
        services,
        email=DEMO_STAFF_EMAIL,
        name="Dr Camille Demo",
        role="physician",
        practitioner=practitioner,
    )


def _demo_account(
    services: Services, *, email: str, name: str, role: str, practitioner: str | None = None
) -> str:
    """A demo account with a fresh random password (96 random bits), printed once."""
    from egide.identity.accounts import (  # noqa: PLC0415 - demo only
        accept_invitation,
        create_account,
        find_account,
    )

    clock = services.records.clock
    with transaction(services.session_factory) as session:
        if find_account(session, email=email) is not None:
            return f"    {email} (password printed when it was created)"
        _account, invitation = create_account(
            session,
            email=email,
            name=name,
            role=role,
            practitioner_id=practitioner,
            clock=clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
        password = secrets.token_urlsafe(12)
        accept_invitation(
            session,
            token=invitation,
            password=password,
            clock=clock,
            settings=services.settings,
            ip=None,
            device="egide demo",
        )
    return f"    email {email}   password {password}"


def build(asgi_factory: AsgiFactory) -> typer.Typer:
    """The command tree; `asgi_factory` builds the web application for `serve` and `demo`."""
    _ASGI_FACTORY[:] = [asgi_factory]
    return app


def rotate_keys(services: Services) -> None:
    """Rotate in three crash-safe steps: add a KEK, re-wrap every DEK (one transaction),
    retire the old KEKs. A crash between steps leaves every DEK readable."""
    keyring, envelope = services.keyring, services.records.envelope
    new = keyring.rotate()
    retiring = [k for k in keyring.active_kek_ids() if k != new]
    with progress() as bar:
        task = bar.add_task("re-wrapping data keys", total=None)

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        with transaction(services.session_factory) as session:
            count = envelope.rewrap_all(session, on_progress=on_progress)
            audit_operator(
                session,
                services,
                Act(
                    Action.KEY_ROTATE,
                    count=count,
                    reasons=(f"new KEK {new}", f"retired {', '.join(retiring) or '-'}"),
                ),
            )
    for kek_id in retiring:
        keyring.retire(kek_id)
    err.print(
        f"egide: new key-encryption key {new}; {count} data keys re-wrapped; "
        f"retired {', '.join(retiring) or 'none'}"
    )


def run_server(asgi: Any, host: str, port: int) -> None:
    import uvicorn  # noqa: PLC0415 - only the server needs it

    # The access log is off: request lines carry search parameters (names, identifiers),
    # which are patient data. The ledger records every access instead (contract 4).
    uvicorn.run(asgi, host=host, port=port, access_log=False, log_level="info", server_header=False)
