"""Settings from the environment and TOML; secrets masked; bad values refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from egide.core.errors import BadRequest
from egide.core.settings import load_settings


def test_defaults_use_embedded_sqlite(tmp_path: Path) -> None:
    settings = load_settings({"EGIDE_DATA_DIR": str(tmp_path)})
    assert settings.is_sqlite
    assert settings.effective_database_url.endswith(str(tmp_path / "egide.db"))


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "egide.toml"
    config.write_text("max_page_size = 50\ndefault_page_size = 10\n")
    settings = load_settings({"EGIDE_CONFIG": str(config), "EGIDE_MAX_PAGE_SIZE": "70"})
    assert settings.default_page_size == 10
    assert settings.max_page_size == 70


def test_master_secret_is_masked(tmp_path: Path) -> None:
    settings = load_settings(
        {"EGIDE_DATA_DIR": str(tmp_path), "EGIDE_MASTER_SECRET": "hunter2-very-secret"}
    )
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings.model_dump())
    assert settings.master_secret is not None
    assert settings.master_secret.get_secret_value() == "hunter2-very-secret"


@pytest.mark.parametrize(
    "env",
    [
        {"EGIDE_MAX_BODY_BYTES": "lots"},
        {"EGIDE_MAX_PAGE_SIZE": "0"},
        {"EGIDE_CONFIG": "/nonexistent/egide.toml"},
    ],
)
def test_bad_settings_are_one_clear_error(env: dict[str, str]) -> None:
    with pytest.raises(BadRequest) as caught:
        load_settings(env)
    assert "\n" not in caught.value.message


def test_unknown_keys_in_the_file_are_refused(tmp_path: Path) -> None:
    config = tmp_path / "egide.toml"
    config.write_text("mystery = 1\n")
    with pytest.raises(BadRequest, match="mystery"):
        load_settings({"EGIDE_CONFIG": str(config)})
