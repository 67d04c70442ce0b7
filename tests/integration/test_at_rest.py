"""No patient data in clear at rest (DESIGN.md, contract 3), on SQLite and PostgreSQL.

Distinctive values are written through the FHIR API (Patient demographics, an Observation note,
a Condition's code text, a DocumentReference attachment), searched and read back once so the
blind index and the ledger are exercised, and then the stored bytes are scanned:

- SQLite: every file of the installation (the database file and its -wal/-shm companions, the
  data directory) byte for byte while the engine is open and again after it is closed, plus a
  logical dump (`iterdump`, blobs as hex) so a value split across two pages of the file cannot
  hide from the scan;
- PostgreSQL: the plain SQL output of `pg_dump` (schema and data; bytea as hex) of the database.

Each value is looked for in many spellings: as written, lower/upper case, case-folded, the
blind index's normal form, NFC/NFD, without accents, JSON-escaped (`\\u00e9`), each in UTF-8,
UTF-16-LE and UTF-16-BE, and as hex of its UTF-8 bytes (how dumps print blobs).

Positive controls prove the scan can see what is there: resource ids are clear columns by design
(records_resource.id, see `egide.records.models.CLEAR_COLUMNS`) and must be found; a token name,
stored clear in identity_api_token.name, must be found as text; a token's SHA-256 (a blob) must
be found as raw bytes (SQLite file) and as hex (dumps).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services
from egide.crypto.blind import normalise_text
from egide.db.engine import transaction
from egide.identity.tokens import create_token
from tests.helpers import Database
from tests.integration.fhir_support import create, headers

FAMILY = "Wolkenbrüder-Xandrakis"
GIVEN = "Żanetta-Quorvielle"
ASCII_GIVEN = "Thistlewaite"
IDENTIFIER = "INS-77304188956-QXZ"
BIRTH_DATE = "1913-07-19"
PHONE = "+33 7 49 18 26 03 poste 9917"
ADDRESS_LINE = "17 impasse des Grenouillères-Zébrées"
ADDRESS_LINE_V2 = "4 allée Mürrenschwyl-Okapi"
NOTE = "Patiente signale vertiges nocturnes après ingestion de kumquats fermentés"
NOTE_FRAGMENT = "kumquats fermentés"
CONDITION_TEXT = "Syndrome de Vrolik-Zanthopoulos atypique"
ATTACHMENT_TEXT = "Compte rendu confidentiel : allergie au xylophaginol-B42"
ATTACHMENT_B64 = base64.b64encode(ATTACHMENT_TEXT.encode("utf-8")).decode("ascii")
TOKEN_NAME = "clear-canary-token-name-Q7W2"

SECRETS = {
    "family": FAMILY,
    "given": GIVEN,
    "ascii given": ASCII_GIVEN,
    "identifier": IDENTIFIER,
    "birth date": BIRTH_DATE,
    "phone": PHONE,
    "address line": ADDRESS_LINE,
    "address line (version 2)": ADDRESS_LINE_V2,
    "observation note": NOTE,
    "observation note fragment": NOTE_FRAGMENT,
    "condition code text": CONDITION_TEXT,
    "attachment text": ATTACHMENT_TEXT,
    "attachment base64": ATTACHMENT_B64,
}


def _spellings(value: str) -> set[str]:
    forms = {
        value,
        value.lower(),
        value.upper(),
        value.casefold(),
        normalise_text(value),
        unicodedata.normalize("NFC", value),
        unicodedata.normalize("NFD", value),
    }
    plain = "".join(
        ch for ch in unicodedata.normalize("NFKD", value) if not unicodedata.combining(ch)
    )
    forms |= {plain, plain.lower(), plain.upper()}
    forms |= {json.dumps(form)[1:-1] for form in list(forms)}  # \u00e9 escapes
    return forms


def needles(value: str) -> dict[str, bytes]:
    """Every byte pattern under which `value` could sit in a file or a dump."""
    found: dict[str, bytes] = {}
    for form in _spellings(value):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            found[f"{encoding} {form!r}"] = form.encode(encoding)
        raw = form.encode("utf-8")
        found[f"hex {form!r}"] = raw.hex().encode("ascii")
        found[f"HEX {form!r}"] = raw.hex().upper().encode("ascii")
    return found


def hits(blobs: dict[str, bytes], value: str) -> list[str]:
    """Where (which blob, which spelling) `value` occurs."""
    return [
        f"{where}: {label}"
        for where, blob in blobs.items()
        for label, needle in needles(value).items()
        if needle in blob
    ]


def assert_no_patient_data(blobs: dict[str, bytes]) -> None:
    assert blobs, "nothing was scanned"
    leaks = {name: found for name, value in SECRETS.items() if (found := hits(blobs, value))}
    assert not leaks, f"patient data in clear at rest: {leaks}"


def _sqlite_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _sqlite_logical_dump(path: Path) -> bytes:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(conn.iterdump()).encode("utf-8")
    finally:
        conn.close()


def _pg_dump_binary() -> str | None:
    candidates: list[str] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        ).stdout.strip()
        candidates.append(str(Path(bindir) / "pg_dump"))
    candidates += [
        str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"), reverse=True)
    ]
    if found := shutil.which("pg_dump"):
        candidates.append(found)
    return next((c for c in candidates if Path(c).is_file() and os.access(c, os.X_OK)), None)


def _pg_dump(url: str) -> bytes:
    binary = _pg_dump_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("pg_dump is required in CI for the PostgreSQL at-rest scan")
        pytest.skip("pg_dump not found (pg_config --bindir, /usr/lib/postgresql/*/bin)")
    result = subprocess.run(
        [binary, "--format=plain", "--no-password", f"--dbname={url}"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"CREATE TABLE public.records_version" in result.stdout
    return result.stdout


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def _write_and_use(client: TestClient, token: str) -> dict[str, str]:
    """Create the resources, update the patient, search and read everything once."""
    patient = create(
        client,
        token,
        {
            "resourceType": "Patient",
            "name": [{"family": FAMILY, "given": [GIVEN, ASCII_GIVEN]}],
            "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": IDENTIFIER}],
            "gender": "female",
            "birthDate": BIRTH_DATE,
            "telecom": [{"system": "phone", "value": PHONE, "use": "mobile"}],
            "address": [{"line": [ADDRESS_LINE], "city": "Lyon", "postalCode": "69003"}],
        },
    )
    pid = patient["id"]
    ref = {"reference": f"Patient/{pid}"}
    observation = create(
        client,
        token,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": ref,
            "effectiveDateTime": "2026-02-01T10:00:00Z",
            "valueQuantity": {
                "value": 72,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
            "note": [{"text": NOTE}],
        },
    )
    condition = create(
        client,
        token,
        {
            "resourceType": "Condition",
            "subject": ref,
            "code": {"text": CONDITION_TEXT},
        },
    )
    document = create(
        client,
        token,
        {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": ref,
            "content": [{"attachment": {"contentType": "text/plain", "data": ATTACHMENT_B64}}],
        },
    )
    # A second version: the first stays in the history, both must be sealed.
    updated = dict(patient, address=[{"line": [ADDRESS_LINE_V2], "city": "Lyon"}])
    response = client.put(f"/fhir/Patient/{pid}", json=updated, headers=headers(token))
    assert response.status_code == 200, response.text

    for query, expected in [
        (f"Patient?family={FAMILY}", pid),
        (f"Patient?given={ASCII_GIVEN.lower()}", pid),
        (f"Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{IDENTIFIER}", pid),
        (f"Patient?birthdate={BIRTH_DATE}", pid),
        (f"Observation?patient={pid}", observation["id"]),
        (f"Condition?patient={pid}", condition["id"]),
        (f"DocumentReference?patient={pid}", document["id"]),
    ]:
        found = client.get(f"/fhir/{query}", headers=headers(token))
        assert found.status_code == 200, found.text
        assert _ids(found.json()) == {expected}, query

    read = {
        kind: client.get(f"/fhir/{kind}/{rid}", headers=headers(token)).json()
        for kind, rid in [
            ("Patient", pid),
            ("Observation", observation["id"]),
            ("Condition", condition["id"]),
            ("DocumentReference", document["id"]),
        ]
    }
    assert read["Patient"]["name"][0]["family"] == FAMILY
    assert read["Patient"]["address"][0]["line"] == [ADDRESS_LINE_V2]
    v1 = client.get(f"/fhir/Patient/{pid}/_history/1", headers=headers(token)).json()
    assert v1["address"][0]["line"] == [ADDRESS_LINE]
    assert read["Observation"]["note"][0]["text"] == NOTE
    assert read["Condition"]["code"]["text"] == CONDITION_TEXT
    assert read["DocumentReference"]["content"][0]["attachment"]["data"] == ATTACHMENT_B64
    return {
        "Patient": pid,
        "Observation": observation["id"],
        "Condition": condition["id"],
        "DocumentReference": document["id"],
    }


def _canary_token(services: Services) -> str:
    """A token whose name is stored clear (identity_api_token.name) and whose SHA-256 is a
    clear blob (identity_api_token.token_hash): the scan's positive controls."""
    with transaction(services.session_factory) as session:
        return create_token(
            session, role="service", name=TOKEN_NAME, clock=services.records.clock
        ).token


def _assert_controls_found(
    blobs: dict[str, bytes], ids: Iterable[str], token: str, *, raw_blobs: bool
) -> None:
    # Ids are clear by design (records_resource.id and friends): the scan must see them.
    for rid in ids:
        assert hits(blobs, rid), f"resource id {rid} not found: the scan is blind"
    assert hits(blobs, TOKEN_NAME), "the clear token name was not found: the scan is blind"
    digest = hashlib.sha256(token.encode("ascii")).digest()
    as_hex = (digest.hex().encode(), digest.hex().upper().encode())
    in_blob = any(digest in blob or any(h in blob for h in as_hex) for blob in blobs.values())
    assert in_blob, "the token hash blob was not found: blobs are not scanned"
    if raw_blobs:
        assert any(digest in blob for blob in blobs.values()), "raw blob bytes not scanned"


def test_scanner_finds_a_value_in_every_spelling() -> None:
    """The scan itself: a planted value is found whichever spelling or encoding it takes."""
    value = FAMILY
    for planted in (
        value.encode("utf-8"),
        value.upper().encode("utf-16-le"),
        normalise_text(value).encode("utf-8"),
        value.encode("utf-8").hex().encode(),
        json.dumps(value).encode("ascii"),
        unicodedata.normalize("NFD", value).encode("utf-8"),
    ):
        assert hits({"blob": b"\x00junk" + planted + b"junk\x00"}, value), planted
    assert not hits({"blob": b"nothing to see here"}, value)
    with pytest.raises(AssertionError, match="patient data in clear"):
        assert_no_patient_data({"blob": b"..." + NOTE_FRAGMENT.encode("utf-16-le") + b"..."})


def test_no_patient_value_is_stored_in_clear(
    client: TestClient, service_token: str, services: Services, database: Database, tmp_path: Path
) -> None:
    ids = _write_and_use(client, service_token)
    canary = _canary_token(services)

    if database.backend == "sqlite":
        assert database.path is not None
        assert database.path.parent == tmp_path
        # While the engine is open: the -wal file holds recent pages.
        live = _sqlite_files(tmp_path)
        assert database.path.name in live
        services.engine.dispose()
        closed = _sqlite_files(tmp_path)
        assert database.path.name in closed
        logical = {"iterdump": _sqlite_logical_dump(database.path)}
        for blobs in (live, closed, logical):
            _assert_controls_found(blobs, ids.values(), canary, raw_blobs=blobs is not logical)
            assert_no_patient_data(blobs)
    else:
        dump = {"pg_dump": _pg_dump(database.url)}
        _assert_controls_found(dump, ids.values(), canary, raw_blobs=False)
        assert_no_patient_data(dump)
        data_dir = services.settings.data_dir
        files = _sqlite_files(data_dir)
        assert "keyring.json" in files
        assert_no_patient_data(files)
