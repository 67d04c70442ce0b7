"""Settings from `EGIDE_*` environment variables and an optional TOML file.

Precedence, lowest first: defaults, the TOML file (`EGIDE_CONFIG`, else `./egide.toml` when it
exists), then environment variables. Secrets (the master secret) are never printed: their
`repr` is masked so a settings dump cannot leak them into a log (DESIGN.md, contract 4).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from egide.core.errors import BadRequest

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class Settings(BaseModel):
    """Everything an Égide process needs to know before it starts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path(".egide")
    # None means the embedded SQLite database at $data_dir/egide.db.
    database_url: str | None = None
    # The secret the file keyring's wrapping key is derived from. When absent, `egide init`
    # generates one into $data_dir/master.key (mode 0600): fine for a demo, not for production.
    master_secret: SecretStr | None = None
    # The externally visible base URL (behind a reverse proxy); None: derived from requests.
    public_base_url: str | None = None
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    # FHIR search paging (`_count`): default page size and the most a caller may ask for.
    default_page_size: int = Field(default=20, gt=0)
    max_page_size: int = Field(default=500, gt=0)
    # Maximum nesting depth of a JSON body; deeper bodies are refused before parsing into
    # models (a cheap guard against stack and CPU exhaustion).
    max_json_depth: int = Field(default=64, gt=0)
    # Argon2id cost for deriving the keyring wrapping key (RFC 9106 second recommended option
    # for memory-constrained settings: m=64 MiB, t=3, p=4 ... we use p=1 on small hosts).
    kdf_memory_kib: int = Field(default=64 * 1024, ge=8)
    kdf_iterations: int = Field(default=3, ge=1)
    # The ledger's checkpoint origin line and signing key name (C2SP tlog-checkpoint).
    ledger_origin: str = Field(default="egide.local/ledger", pattern=r"^[\x21-\x7e]{1,200}$")
    # A signed checkpoint every N new entries, and the server's sequencer runs every T s.
    checkpoint_every: int = Field(default=1000, ge=1)
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    # Where checkpoints are also written, outside the database (None: $data_dir/witness).
    witness_dir: Path | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "egide.db"

    @property
    def keyring_path(self) -> Path:
        return self.data_dir / "keyring.json"

    @property
    def master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    @property
    def effective_witness_dir(self) -> Path:
        return self.witness_dir or self.data_dir / "witness"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.sqlite_path.resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


_ENV_PREFIX = "EGIDE_"
_ENV_KEYS = {name.upper(): name for name in Settings.model_fields}


def load_settings(
    environ: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Build settings from the TOML file and the environment; raise BadRequest when invalid."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or (Path(env["EGIDE_CONFIG"]) if env.get("EGIDE_CONFIG") else None)
    if path is None and Path("egide.toml").is_file():
        path = Path("egide.toml")
    if path is not None:
        try:
            with path.open("rb") as fh:
                values.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            msg = f"cannot read settings file {path}: {exc}"
            raise BadRequest(msg) from exc
    for key, value in env.items():
        if key.startswith(_ENV_PREFIX) and key[len(_ENV_PREFIX) :] in _ENV_KEYS:
            values[_ENV_KEYS[key[len(_ENV_PREFIX) :]]] = value
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        msg = f"invalid setting {field_name}: {first['msg']}"
        raise BadRequest(msg) from exc
