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
from egide.cli.runtime import Services, open_services, sequence_ledger
from egide.core.settings import load_settings


def api_for(services: Services) -> FastAPI:
    ctx = ApiContext(
        settings=services.settings,
        session_factory=services.session_factory,
        records=services.records,
        version=__version__,
        started=services.records.clock.now(),
        # Each pass signs a checkpoint when the tree grew, so no entry stays uncovered by a
        # signed checkpoint (and the witness) for longer than the interval.
        background=lambda: sequence_ledger(services, force=True),
        background_interval=services.settings.checkpoint_interval_seconds,
        ledger_vkey=services.signer.verifier_key(),
    )
    return create_api(ctx)


def create_app() -> FastAPI:
    """ASGI factory reading settings from the environment."""
    return api_for(open_services(load_settings()))


def main() -> None:
    build(api_for)()
