"""Composition root: builds the services and wires the rooms together.

`create_app` is the ASGI application factory (`uvicorn --factory egide.app:create_app`);
`main` is the `egide` console script.
"""

from __future__ import annotations

from fastapi import FastAPI

from egide import __version__
from egide.api.application import create_api
from egide.api.context import ApiContext
from egide.cli.main import build
from egide.cli.runtime import Services, background_pass, open_services, open_witness, witness_pusher
from egide.core.settings import load_settings
from egide.db.lease import Lease, lease_for
from egide.detect.settings import DetectSettings
from egide.incidents.live import LiveDetection
from egide.web import access_views as web_access
from egide.web import alert_views as web_alerts
from egide.web import oauth as web_oauth
from egide.web import passkey_views as web_passkeys
from egide.web import views as web_views
from egide.web.context import WebContext, derive_csrf_key

# The lease of the one process that detects for the installation (db.lease).
LIVE_LEASE = "detect-live"


def live_detection(services: Services, *, lease: Lease | None = None) -> LiveDetection:
    """The ledger-to-detector feed, with the hospital's time zone for nights and hours;
    with `lease`, only while this process holds it."""
    return LiveDetection(
        session_factory=services.session_factory,
        records=services.records,
        settings=services.settings,
        detect_settings=DetectSettings(timezone=services.settings.detect_timezone),
        lease=lease,
    )


def api_for(services: Services) -> FastAPI:
    pusher = witness_pusher(services)
    # Every server process may run live detection; one per installation does (the lease),
    # the others wait and take over if it stops.
    live = (
        live_detection(services, lease=lease_for(services.engine, LIVE_LEASE))
        if services.settings.detect_live
        else None
    )
    ctx = ApiContext(
        settings=services.settings,
        session_factory=services.session_factory,
        records=services.records,
        version=__version__,
        started=services.records.clock.now(),
        # Each pass signs a checkpoint when the tree grew, so no entry stays uncovered by a
        # signed checkpoint (and the witness) for longer than the interval, then pushes it to
        # the remote witnesses (a failing witness is logged and retried, never fatal).
        background=lambda: background_pass(services, pusher),
        background_interval=services.settings.checkpoint_interval_seconds,
        ledger_vkey=services.signer.verifier_key(),
        witness=open_witness(services),
        # Live behavioural detection (issue 6): the ledger flows to the detector in
        # micro-batches; alerts go to the security officer, critical ones may contain the
        # account (EGIDE_DETECT_RESPONSE).
        live=live.step if live is not None else None,
        live_interval=services.settings.detect_interval_seconds,
        live_stop=live.close if live is not None else None,
    )
    app = create_api(ctx)
    # The server-rendered pages at `/` (sign-in, account); they authenticate with the session
    # cookie only, the API with bearer tokens only.
    web_views.install(
        app,
        WebContext(
            settings=services.settings,
            session_factory=services.session_factory,
            clock=services.records.clock,
            envelope=services.records.envelope,
            csrf_key=derive_csrf_key(services.keyring.secret("blind-index")),
        ),
    )
    # The passkey (WebAuthn) endpoints of those pages (JSON, for `passkeys.js`).
    web_passkeys.install(app)
    # SMART App Launch 2: the authorization endpoint is a page (sign-in and consent).
    web_oauth.install(app)
    web_access.install(app)  # the break-the-glass page (issue 5)
    web_alerts.install(app)  # the security officer's alert pages (issue 6)
    return app


def create_app() -> FastAPI:
    """ASGI factory reading settings from the environment."""
    return api_for(open_services(load_settings()))


def main() -> None:
    build(api_for)()
