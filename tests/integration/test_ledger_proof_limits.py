"""Proofs are bounded per account: one token cannot keep the database busy proving.

`proof_rate_per_minute` proofs per account a minute; beyond that the API answers 429 with an
OperationOutcome (issue type `throttled`), while another account is still served.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from egide.cli.runtime import Services, sequence_ledger
from egide.core.settings import Settings
from tests.helpers import Database, issue_token, make_settings
from tests.integration.fhir_support import create, headers, patient


@pytest.fixture
def settings(tmp_path: Path, database: Database) -> Settings:
    return make_settings(
        tmp_path / "data",
        database.url,
        checkpoint_interval_seconds=86400,
        proof_rate_per_minute=3,
    )


def test_proofs_beyond_the_rate_answer_429_for_that_account_only(
    client: TestClient, services: Services, service_token: str
) -> None:
    create(client, service_token, patient())
    sequence_ledger(services, force=True)
    url = "/api/ledger/proof/inclusion?seq=1"
    answers = [client.get(url, headers=headers(service_token)).status_code for _ in range(5)]
    assert answers[:3] == [200, 200, 200]
    assert answers[3:] == [429, 429]
    refused = client.get("/api/ledger/proof/consistency?old=1", headers=headers(service_token))
    assert refused.status_code == 429
    body = refused.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == "throttled"
    other = issue_token(services, "service")
    assert client.get(url, headers=headers(other)).status_code == 200
