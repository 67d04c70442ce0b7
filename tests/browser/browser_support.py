"""Chromium for the browser tests: the system's headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from egide.cli.runtime import OPERATOR, Services
from egide.db.engine import transaction
from egide.identity import accounts

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000


@contextmanager
def launch_chromium(extra_args: list[str] | None = None) -> Iterator[Browser]:
    """Headless Chromium (`CHROMIUM_ARGS` plus `extra_args`); skips the test when it is absent,
    fails instead on CI."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is absent: apt-get install chromium (scripts/ensure-system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *(extra_args or [])], headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


def invite_physician(services: Services, *, email: str, name: str) -> str:
    """A physician's account created by the operator; returns its invitation token."""
    with transaction(services.session_factory) as session:
        _, token = accounts.create_account(
            session,
            email=email,
            name=name,
            role="physician",
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
    return token
