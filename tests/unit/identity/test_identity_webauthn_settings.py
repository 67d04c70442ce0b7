"""Where the passkeys' relying party comes from: settings, never a request."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from egide.core.settings import Settings


def test_defaults_are_the_local_server() -> None:
    settings = Settings()
    assert settings.effective_webauthn_rp_id == "localhost"
    assert settings.effective_webauthn_origin == "http://localhost:8000"


def test_derived_from_the_public_base_url() -> None:
    settings = Settings(public_base_url="https://Soins.Clinique.example:8443/egide/")
    assert settings.effective_webauthn_rp_id == "soins.clinique.example"
    assert settings.effective_webauthn_origin == "https://soins.clinique.example:8443"


def test_explicit_values_win() -> None:
    settings = Settings(
        public_base_url="https://soins.clinique.example",
        webauthn_rp_id="clinique.example",
        webauthn_origin="https://soins.clinique.example",
    )
    assert settings.effective_webauthn_rp_id == "clinique.example"
    assert settings.effective_webauthn_origin == "https://soins.clinique.example"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("webauthn_rp_id", "Clinique.example"),
        ("webauthn_rp_id", "https://clinique.example"),
        ("webauthn_rp_id", ""),
        ("webauthn_origin", "https://clinique.example/path"),
        ("webauthn_origin", "clinique.example"),
    ],
)
def test_malformed_values_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: value})
