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
be tempted to switch it off. Each operation is timed on the installations back to back, in an
order that alternates every round (A B, B A, ...), and the best round of each is kept, so drift
(CPU frequency, page cache, database growth, other processes) hits both alike.

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
    best: dict[str, float] = field(default_factory=dict)  # highest req/s of any round
    cpu: dict[str, float] = field(default_factory=dict)  # lowest CPU ms/request of any round

    def record(self, op: str, sample: Sample) -> None:
        self.best[op] = max(self.best.get(op, 0.0), sample.rate)
        self.cpu[op] = min(self.cpu.get(op, float("inf")), sample.cpu_ms)


def _patient(index: int) -> dict[str, Any]:
    # Family "Bench00042c": the first 9 characters are shared by GROUP patients, the whole
    # name is unique. Normalised prefixes up to 12 characters are indexed.
    family = f"Bench{index // GROUP:05d}{chr(ord('a') + index % GROUP)}"
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Élodie", "Marie"]}],
        "gender": "female",
        "birthDate": "1987-04-12",
        "identifier": [{"system": "urn:oid:1.2.250.1.213.1.4.8", "value": f"2870475{index:08d}"}],
        "telecom": [{"system": "phone", "value": "+33 6 12 34 56 78", "use": "mobile"}],
        "address": [
            {"line": ["12 rue des Lilas"], "city": "Lyon", "postalCode": "69003", "country": "FR"}
        ],
    }


def _observation(patient_id: str, index: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": f"2026-02-01T10:{index % 60:02d}:00Z",
        "valueQuantity": {
            "value": 60 + index % 40,
            "unit": "/min",
            "system": "http://unitsofmeasure.org",
            "code": "/min",
        },
    }


def _expect(response: httpx.Response, status: int) -> httpx.Response:
    if response.status_code != status:
        request = response.request
        msg = f"{request.method} {request.url}: {response.status_code} {response.text[:300]}"
        raise RuntimeError(msg)
    return response


@dataclass(frozen=True)
class Sample:
    rate: float  # requests per second, wall clock
    cpu_ms: float  # this process's CPU time (client + server threads) per request


def _timed(calls: list[Callable[[], object]]) -> Sample:
    cpu, start = time.process_time(), time.perf_counter()
    for call in calls:
        call()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Sample(len(calls) / wall, cpu * 1000 / len(calls))


class Round:
    """One round's work on one target: the operations run in order, each timed on its own."""

    def __init__(self, target: Target, n: int) -> None:
        self.target = target
        self.n = n
        self.indices = [next(target.next_index) for _ in range(n)]
        self.ids: list[str] = []

    def run(self, op: str) -> Sample:
        client = self.target.client
        if op == "Patient create":

            def create_patient(i: int) -> None:
                response = _expect(client.post("/fhir/Patient", json=_patient(i)), 201)
                self.ids.append(response.json()["id"])

            return _timed([lambda i=i: create_patient(i) for i in self.indices])
        if op == "Patient read":
            return _timed(
                [lambda r=r: _expect(client.get(f"/fhir/Patient/{r}"), 200) for r in self.ids]
            )
        if op == "Patient search":

            def search(group: int) -> None:
                response = client.get("/fhir/Patient", params={"family": f"Bench{group:05d}"})
                total = _expect(response, 200).json().get("total")
                if total != GROUP:
                    msg = f"search for group {group} found {total}, expected {GROUP}"
                    raise RuntimeError(msg)

            # Only groups this round completed (indices are consecutive; GROUP divides n).
            groups = sorted({i // GROUP for i in self.indices})
            picks = [groups[k % len(groups)] for k in range(self.n)]
            return _timed([lambda g=g: search(g) for g in picks])
        assert op == "Observation create"
        return _timed(
            [
                lambda p=self.ids[k], k=k: _expect(
                    client.post("/fhir/Observation", json=_observation(p, k)), 201
                )
                for k in range(self.n)
            ]
        )


def overall(rates: dict[str, float]) -> float:
    """Requests per second of a mix with equal counts of every operation (harmonic mean)."""
    return len(OPERATIONS) / sum(1 / rates[op] for op in OPERATIONS)


def mean_cpu(cpu: dict[str, float]) -> float:
    """CPU ms per request of a mix with equal counts of every operation."""
    return sum(cpu[op] for op in OPERATIONS) / len(OPERATIONS)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 20 if args.quick else 30
    rounds = args.rounds or (3 if args.quick else 6)
    if n % GROUP:
        n -= n % GROUP
    pg_url = os.environ.get(PG_URL_ENV)

    print("Égide API throughput over HTTP (uvicorn on 127.0.0.1, one httpx keep-alive client)")
    print(environment_line())
    print(
        f"{n} requests per operation per round, {rounds} rounds; each operation runs on "
        "every installation back to back, order alternated each round (A B, B A, ...); "
        "the best round of each is shown."
    )
    print()

    with ExitStack() as stack:
        targets: list[Target] = []

        def add(label: str, **install: Any) -> None:
            data_dir = stack.enter_context(temp_dir("egide-bench-"))
            services = open_installation(data_dir, **install)
            stack.callback(services.close)
            base = stack.enter_context(serve(services))
            client = stack.enter_context(
                httpx.Client(
                    base_url=base,
                    timeout=30,
                    headers={
                        "Authorization": f"Bearer {service_token(services)}",
                        "Content-Type": FHIR,
                        "Accept": FHIR,
                    },
                )
            )
            targets.append(Target(label, client))

        add("security on")
        add("no-op cipher", aead=UnsafeNullCipher())
        if pg_url:
            url = stack.enter_context(fresh_pg_database(pg_url))
            add("on, PostgreSQL", database_url=url)

        for target in targets:  # warm-up: imports, first connections, caches
            warm = Round(target, GROUP)
            for op in OPERATIONS:
                warm.run(op)
        # Each operation is timed on every installation back to back, in an order that
        # alternates from round to round, so drift hits all of them alike.
        for r in range(rounds):
            order = targets if r % 2 == 0 else list(reversed(targets))
            work = [Round(target, n) for target in order]
            for op in OPERATIONS:
                for item in work:
                    item.target.record(op, item.run(op))

    on, off = targets[0], targets[1]
    extra = targets[2:]
    headers = [
        "operation",
        f"{on.label} req/s",
        f"{off.label} req/s",
        "ratio",
        "CPU ms on",
        "CPU ms off",
        "CPU ratio",
    ]
    headers += [f"{t.label} req/s" for t in extra]
    rows = [
        [
            op,
            fmt_rate(on.best[op]),
            fmt_rate(off.best[op]),
            f"{on.best[op] / off.best[op]:.3f}",
            f"{on.cpu[op]:.2f}",
            f"{off.cpu[op]:.2f}",
            f"{off.cpu[op] / on.cpu[op]:.3f}",
            *[fmt_rate(t.best[op]) for t in extra],
        ]
        for op in OPERATIONS
    ]
    mix_on, mix_off = overall(on.best), overall(off.best)
    cpu_on, cpu_off = mean_cpu(on.cpu), mean_cpu(off.cpu)
    rows.append(
        [
            "equal mix of the four",
            fmt_rate(mix_on),
            fmt_rate(mix_off),
            f"{mix_on / mix_off:.3f}",
            f"{cpu_on:.2f}",
            f"{cpu_off:.2f}",
            f"{cpu_off / cpu_on:.3f}",
            *[fmt_rate(overall(t.best)) for t in extra],
        ]
    )
    print_table(headers, rows)
    print()
    wall_overhead = 1 - mix_on / mix_off
    cpu_overhead = 1 - cpu_off / cpu_on
    verdict = "within" if cpu_overhead <= GOAL_OVERHEAD else "OVER"
    print(
        f"Cipher-layer overhead on the mix: {wall_overhead * 100:+.1f} % of throughput by "
        f"wall clock, {cpu_overhead * 100:+.1f} % by CPU time per request "
        f"({verdict} the {GOAL_OVERHEAD:.0%} goal, judged on CPU time)."
    )
    print(
        "ratio = req/s on / req/s off; CPU ratio = CPU off / CPU on (both 1.0 = free, "
        "0.85 = the 15 % goal). CPU time per request is the steadier figure on a shared "
        "machine: it does not count time spent waiting for a core."
    )
    print(
        "Compared: AES-256-GCM sealing of resource bodies vs UnsafeNullCipher. Both "
        "installations write the ledger, compute HMAC blind indexes, wrap/unwrap data keys "
        "with real AES-GCM and check bearer tokens; the ledger's own cost is not separated "
        "(src/ has no switch to skip it, by design)."
    )
    print(
        "Client and server share one Python process (uvicorn in a thread), so client time "
        "is in every figure; an overhead below zero is noise."
    )
    if not pg_url:
        print(f"PostgreSQL column skipped: {PG_URL_ENV} is not set.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
