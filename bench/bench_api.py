"""FHIR API throughput through real HTTP, with AES-256-GCM versus a no-op cipher.

What is measured: requests per second, one client with keep-alive (httpx) against uvicorn on
127.0.0.1, for Patient create, Patient read by id, Patient search (`Patient?family=<prefix>`,
10 matches a page, so each search opens 10 sealed bodies) and Observation create (sealed under
its patient's data key). Every request is the whole path: bearer-token check, access decision,
validation, blind indexes, sealing or opening, the ledger entry, the commit on SQLite.

Two installations are built side by side in temporary directories, identical but for the
AEAD that seals resource bodies: the real `AesGcm` ("security on") and `UnsafeNullCipher`
("no-op cipher"). Their ratio is the price of the cipher layer as the API sees it. The issue's
goal is that the whole security layer costs at most 15 % of throughput.

What the ratio does NOT isolate: the no-op installation still writes the ledger, still computes
HMAC blind indexes, still wraps/unwraps data keys with the keyring's real AES-GCM and still
hashes bearer tokens; only resource-body sealing is switched off. Measuring the ledger's share
would need a configuration that skips it, which src/ deliberately does not offer.

Why this way: the cipher must be cheap next to everything else a request does, or people will
be tempted to switch it off. Rounds alternate between the installations (A B, B A, ...) and the
best round of each is kept, so drift (CPU frequency, page cache, database growth) hits both.

When EGIDE_TEST_POSTGRES_URL is set (`make bench` sets it), a third installation, security on
over PostgreSQL in a fresh database, is measured in the same rounds, for scale.

Run: `.venv/bin/python bench/bench_api.py [--quick] [--rounds N]`.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx

from _common import (
    PG_URL_ENV,
    environment_line,
    fmt_rate,
    fresh_pg_database,
    open_installation,
    parse_args,
    print_table,
    serve,
    service_token,
    temp_dir,
)
from egide.crypto.aead import UnsafeNullCipher

FHIR = "application/fhir+json"
GROUP = 10  # patients sharing a family-name prefix: one search page opens this many bodies
GOAL_OVERHEAD = 0.15

OPERATIONS = ("Patient create", "Patient read", "Patient search", "Observation create")


@dataclass
class Target:
    """One installation being served, with its client and the ids it has created so far."""

    label: str
    client: httpx.Client
    next_index: Iterator[int] = field(default_factory=itertools.count)
    best: dict[str, float] = field(default_factory=dict)


def _patient(index: int) -> dict[str, Any]:
    # Family "Bench00042c": the first 9 characters are shared by GROUP patients, the whole
    # name is unique. Normalised prefixes up to 12 characters are indexed.
    family = f"Bench{index // GROUP:05d}{chr(ord('a') + index % GROUP)}"
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Élodie", "Marie"]}],
        "gender": "female",
        "birthDate": "1987-04-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8",
                        "value": f"2870475{index:08d}"}],
        "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"}],
        "address": [{"line": ["12 rue des Lilas"], "city": "Lyon", "postalCode": "69003",
                     "country": "FR"}],
    }


def _observation(patient_id: str, index: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4",
                             "display": "Heart rate"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2026-02-01T10:{index % 60:02d}:00Z",
        "valueQuantity": {"value": 60 + index % 40, "unit": "/min",
                          "system": "http://unitsofmeasure.org", "code": "/min"},
    }


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        msg = f"{response.request.method} {response.request.url}: {response.status_code} " \
              f"{response.text[:300]}"
        raise RuntimeError(msg)
    return response


def _timed(calls: list[Callable[[], object]]) -> float:
    start = time.perf_counter()
    for call in calls:
        call()
    return len(calls) / (time.perf_counter() - start)


def run_round(target: Target, n: int) -> dict[str, float]:
    """One round of every operation on `target`; returns requests per second per operation."""
    client = target.client
    indices = [next(target.next_index) for _ in range(n)]
    ids: list[str] = []

    def create_patient(i: int) -> None:
        response = _expect(client.post("/fhir/Patient", json=_patient(i)), 201)
        ids.append(response.json()["id"])

    def read_patient(resource_id: str) -> None:
        _expect(client.get(f"/fhir/Patient/{resource_id}"), 200)

    def search(group: int) -> None:
        body = _expect(client.get("/fhir/Patient", params={"family": f"Bench{group:05d}"}),
                       200).json()
        if body.get("total") != GROUP:
            msg = f"search for group {group} found {body.get('total')}, expected {GROUP}"
            raise RuntimeError(msg)

    def create_observation(patient_id: str, i: int) -> None:
        _expect(client.post("/fhir/Observation", json=_observation(patient_id, i)), 201)

    rates: dict[str, float] = {}
    rates["Patient create"] = _timed([lambda i=i: create_patient(i) for i in indices])
    rates["Patient read"] = _timed([lambda r=r: read_patient(r) for r in ids])
    # Only groups this round completed (indices are consecutive; GROUP divides n).
    groups = sorted({i // GROUP for i in indices})
    searches = [groups[k % len(groups)] for k in range(n)]
    rates["Patient search"] = _timed([lambda g=g: search(g) for g in searches])
    rates["Observation create"] = _timed(
        [lambda p=ids[k], k=k: create_observation(p, k) for k in range(n)])
    return rates


def overall(rates: dict[str, float]) -> float:
    """Requests per second of a mix with equal counts of every operation (harmonic mean)."""
    return len(OPERATIONS) / sum(1 / rates[op] for op in OPERATIONS)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 60 if args.quick else 200
    rounds = args.rounds or (2 if args.quick else 3)
    if n % GROUP:
        n -= n % GROUP
    pg_url = os.environ.get(PG_URL_ENV)

    print("Égide API throughput over HTTP (uvicorn on 127.0.0.1, one httpx keep-alive client)")
    print(environment_line())
    print(f"{n} requests per operation per round, {rounds} rounds, installations alternated "
          "each round (A B, B A, ...); the best round of each is shown.")
    print()

    with ExitStack() as stack:
        targets: list[Target] = []

        def add(label: str, **install: Any) -> None:
            data_dir = stack.enter_context(temp_dir("egide-bench-"))
            services = open_installation(data_dir, **install)
            stack.callback(services.close)
            base = stack.enter_context(serve(services))
            client = stack.enter_context(httpx.Client(
                base_url=base, timeout=30,
                headers={"Authorization": f"Bearer {service_token(services)}",
                         "Content-Type": FHIR, "Accept": FHIR}))
            targets.append(Target(label, client))

        add("security on")
        add("no-op cipher", aead=UnsafeNullCipher())
        if pg_url:
            url = stack.enter_context(fresh_pg_database(pg_url))
            add("on, PostgreSQL", database_url=url)

        for target in targets:  # warm-up: imports, first connections, the _org key, caches
            run_round(target, GROUP)
        for r in range(rounds):
            order = targets if r % 2 == 0 else list(reversed(targets))
            for target in order:
                for op, value in run_round(target, n).items():
                    target.best[op] = max(target.best.get(op, 0.0), value)

    on, off = targets[0], targets[1]
    headers = ["operation (req/s)", on.label, off.label, "ratio on/off", "overhead"]
    if len(targets) > 2:
        headers.append(targets[2].label)
    rows = []
    for op in OPERATIONS:
        ratio = on.best[op] / off.best[op]
        row = [op, fmt_rate(on.best[op]), fmt_rate(off.best[op]), f"{ratio:.3f}",
               f"{(1 - ratio) * 100:+.1f} %"]
        if len(targets) > 2:
            row.append(fmt_rate(targets[2].best[op]))
        rows.append(row)
    total_on, total_off = overall(on.best), overall(off.best)
    ratio = total_on / total_off
    row = ["equal mix of the four", fmt_rate(total_on), fmt_rate(total_off), f"{ratio:.3f}",
           f"{(1 - ratio) * 100:+.1f} %"]
    if len(targets) > 2:
        row.append(fmt_rate(overall(targets[2].best)))
    rows.append(row)
    print_table(headers, rows)
    print()
    overhead = 1 - ratio
    verdict = "within" if overhead <= GOAL_OVERHEAD else "OVER"
    print(f"Cipher-layer overhead on the mix: {overhead * 100:.1f} % of throughput "
          f"({verdict} the {GOAL_OVERHEAD:.0%} goal).")
    print("Compared: AES-256-GCM sealing of resource bodies vs UnsafeNullCipher. Both "
          "installations write the ledger, compute HMAC blind indexes, wrap/unwrap data keys "
          "with real AES-GCM and check bearer tokens; the ledger's own cost is not separated "
          "(src/ has no switch to skip it, by design).")
    print("Client and server share one Python process (uvicorn in a thread), so client time "
          "is included in every figure; a negative overhead is noise.")
    if not pg_url:
        print(f"PostgreSQL column skipped: {PG_URL_ENV} is not set.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
