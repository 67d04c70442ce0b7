"""`egide client ...`: OAuth 2.0 clients (SMART apps and backend services), by the operator.

* `egide client create --name N --redirect-uri URI [--redirect-uri ...] [--public | --jwks
  FILE] [--scope S ...]`: a user-facing app (SMART App Launch 2, authorization code + PKCE).
  `--public` for an app without a server (no secret: PKCE alone); otherwise its JWKS (public
  keys) for `private_key_jwt`.
* `egide client create-backend --name N --jwks FILE --scope system/*.rs`: a backend service
  (SMART Backend Services, client credentials with a signed client assertion).
* `egide client list`, `egide client disable CLIENT_ID` (its tokens are revoked at once).

`create` and `create-backend` print the client id alone on stdout. Registration is an
operator's act, never dynamic (ASVS 5.0 V10.4.7), audited under the CLI operator.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from egide.cli.console import cli_errors, err, fail, out
from egide.cli.runtime import OPERATOR, open_services
from egide.core.settings import load_settings
from egide.db.engine import transaction
from egide.identity import oauth

client_app = typer.Typer(no_args_is_help=True, help="OAuth 2.0 clients: SMART apps, services.")
MAX_JWKS_BYTES = 64 * 1024


def _read_jwks(path: Path) -> object:
    try:
        if path.stat().st_size > MAX_JWKS_BYTES:
            fail(f"{path} is larger than {MAX_JWKS_BYTES} bytes")
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        fail(f"cannot read the JWKS {path}: {exc}")
        raise  # pragma: no cover - fail exits


def _register(
    *,
    name: str,
    kind: str,
    redirect_uris: list[str],
    jwks: object,
    scopes: list[str] | None,
) -> None:
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            view = oauth.register_client(
                session,
                name=name,
                kind=kind,
                clock=services.records.clock,
                actor=OPERATOR,
                redirect_uris=redirect_uris,
                jwks=jwks,
                scopes=" ".join(scopes) if scopes else None,
            )
    finally:
        services.close()
    out.print(view.client_id, markup=False)
    err.print(f"egide: {view.kind} client {view.name!r} may ask for: {view.scopes}", markup=False)


@client_app.command("create")
@cli_errors
def client_create(
    name: str = typer.Option(..., help="the app's name, shown on the consent page"),
    redirect_uri: list[str] = typer.Option(..., help="an exact redirect URI (repeatable)"),
    public: bool = typer.Option(False, "--public", help="no secret: PKCE alone"),
    jwks: Path | None = typer.Option(None, help="JWKS file of a confidential app"),
    scope: list[str] | None = typer.Option(
        None, help="a scope it may ask for (repeatable); default read-only patient/ user/"
    ),
) -> None:
    """Register a SMART app (authorization code + PKCE); prints its client_id."""
    if public == (jwks is not None):
        fail("give either --public or --jwks FILE (a confidential app's public keys)")
    _register(
        name=name,
        kind=oauth.PUBLIC if public else oauth.CONFIDENTIAL,
        redirect_uris=redirect_uri,
        jwks=None if jwks is None else _read_jwks(jwks),
        scopes=scope,
    )


@client_app.command("create-backend")
@cli_errors
def client_create_backend(
    name: str = typer.Option(..., help="the service's name"),
    jwks: Path = typer.Option(..., help="JWKS file with its public keys (ES384 or RS384)"),
    scope: list[str] | None = typer.Option(
        None, help="a system/ scope it may ask for (repeatable); default system/*.rs"
    ),
) -> None:
    """Register a SMART backend service (client credentials); prints its client_id."""
    _register(name=name, kind=oauth.BACKEND, redirect_uris=[], jwks=_read_jwks(jwks), scopes=scope)


@client_app.command("list")
@cli_errors
def client_list() -> None:
    """List the registered clients."""
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            rows = oauth.list_clients(session)
    finally:
        services.close()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("client_id", "name", "kind", "scopes", "redirect URIs", "status"):
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(
            row.client_id,
            row.name,
            row.kind,
            row.scopes,
            " ".join(row.redirect_uris),
            "disabled" if row.disabled else "active",
        )
    Console(highlight=False, width=None if out.is_terminal else 200).print(table)


@client_app.command("disable")
@cli_errors
def client_disable(client_id: str = typer.Argument(..., help="the client_id")) -> None:
    """Disable a client; its access tokens stop working at once."""
    services = open_services(load_settings())
    try:
        with transaction(services.session_factory) as session:
            count = oauth.disable_client(
                session, client_id=client_id, clock=services.records.clock, actor=OPERATOR
            )
    finally:
        services.close()
    err.print(f"egide: client {client_id} disabled; {count} tokens revoked", markup=False)
