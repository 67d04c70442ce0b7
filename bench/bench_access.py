"""The access policy's cost: one decision, and search throughput with the policy on and off.

What is measured (issue 5, "Must show": the cost of a decision and search throughput with the
policy on vs. a policy that allows everything, in the same run):

1. **One `access.policy.decide` call**, in microseconds (best of `--rounds` `timeit` repeats):
   a physician allowed through two care facts (department and personal), a secretary allowed
   with the masking obligation on an Encounter, and a physician denied (no care link). Pure
   code, no I/O: what the records room adds on top of it is gathering the facts (two queries
   per request, in the figures of part 2).
2. **Search throughput** over a seeded SQLite installation (2,000 patients x 5 Observations;
   `--quick`: 400), each search in its own transaction through `records.Repository` as the
   API runs it (policy filter in SQL, every row decided on again, bodies opened and masked,
   one ledger entry per patient touched), for two principals taking turns in the same run:
   - **policy on**: a physician whose department (an active PractitionerRole) has an
     in-progress Encounter with ~10 % of the patients, so the SQL filter and the facts are
     real work;
   - **allow-all**: a `service` principal, whose rule is "every type, every patient" (SMART
     `system/*.cruds`), consent-exempt: the policy is still called but allows everything.
   Same queries for both, on treated patients only, so both return the same resources:
   `Observation?code=<c>&_count=20` (a full page from ~200 / ~2,000 candidates),
   `Observation?patient=<id>` (5), and `Patient?_id=<id>&_revinclude=Observation:subject`
   (1 + 5 included). Shown: searches/s and resources/s (matches plus included) per query and
   for the mix, best of `--rounds` rounds (default 3) in alternating order, and the ratio
   policy on / allow-all (1.00 = the policy is free).

Run: `.venv/bin/python bench/bench_access.py [--quick] [--rounds N]`. Nothing is asserted.
"""

from __future__ import annotations

import datetime as dt
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from _common import environment_line, fmt_rate, open_installation, parse_args, print_table, temp_dir
from egide.access.policy import AccessContext, Operation, Target, decide
from egide.access.relationships import CareFact, Relationship
from egide.cli.runtime import Services
from egide.core.principal import Decision, Principal
from egide.db.engine import transaction
from egide.fhir.search import SearchQuery, parse_search_query
from egide.records.repository import Repository, system_repository

OBSERVATIONS_PER_PATIENT = 5
CODES = ("8867-4", "8310-5", "9279-1", "59408-5", "8480-6")  # LOINC vital signs
TREATED_EVERY = 10  # one patient in ten has an Encounter with the physician's department


# -- 1. one decision -------------------------------------------------------------------------


def decision_costs(rounds: int, number: int) -> list[tuple[str, float, str]]:
    """(case, best µs per call, outcome) for the three cases."""
    physician = Principal(id="u1", role="physician", fhir_user="Practitioner/p1")
    secretary = Principal(id="u2", role="secretary")
    treating = AccessContext(
        (
            CareFact(Relationship.DEPARTMENT, "an in-progress encounter in their department"),
            CareFact(Relationship.PERSONAL, "an appointment with them"),
        )
    )
    cases: list[tuple[str, Callable[[], Decision]]] = [
        (
            "physician, two care facts",
            lambda: decide(physician, Operation.READ, Target("Observation", "p1"), treating),
        ),
        (
            "secretary, masked Encounter",
            lambda: decide(secretary, Operation.READ, Target("Encounter", "p1")),
        ),
        (
            "physician, no care link (deny)",
            lambda: decide(physician, Operation.READ, Target("Observation", "p1")),
        ),
    ]
    results = []
    for name, call in cases:
        best = min(timeit.Timer(call).repeat(repeat=rounds, number=number)) / number
        decision = call()
        outcome = "allow" if decision.allowed else "deny"
        if decision.obligations:
            outcome += " + " + ", ".join(str(o) for o in decision.obligations)
        results.append((name, best * 1e6, outcome))
    return results


# -- 2. search throughput --------------------------------------------------------------------


def seed(services: Services, patients: int) -> tuple[list[str], str]:
    """`patients` patients with 5 Observations each; a department treating one in ten.
    Returns the treated patients' ids and the physician's Practitioner id."""
    now = services.records.clock.now()
    treated: list[str] = []
    with transaction(services.session_factory) as session:
        repo = system_repository(session, services.records, job="bench-seed")
        department = repo.create({"resourceType": "Organization", "name": "Cardiologie"}).id
        practitioner = repo.create(
            {"resourceType": "Practitioner", "name": [{"family": "Benchmark"}]}
        ).id
        repo.create(
            {
                "resourceType": "PractitionerRole",
                "active": True,
                "practitioner": {"reference": f"Practitioner/{practitioner}"},
                "organization": {"reference": f"Organization/{department}"},
            }
        )
    batch = 100
    for start in range(0, patients, batch):
        with transaction(services.session_factory) as session:
            repo = system_repository(session, services.records, job="bench-seed")
            for i in range(start, min(start + batch, patients)):
                pid = repo.create(
                    {
                        "resourceType": "Patient",
                        "name": [{"family": f"Patient{i:05d}", "given": ["Bench"]}],
                        "gender": "female" if i % 2 else "male",
                        "birthDate": f"{1940 + i % 60}-0{1 + i % 9}-1{i % 10}",
                    }
                ).id
                for n, code in enumerate(CODES[:OBSERVATIONS_PER_PATIENT]):
                    repo.create(
                        {
                            "resourceType": "Observation",
                            "status": "final",
                            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                            "subject": {"reference": f"Patient/{pid}"},
                            "effectiveDateTime": (now - dt.timedelta(days=n)).isoformat(),
                            "valueQuantity": {"value": 60 + n, "unit": "1"},
                        }
                    )
                if i % TREATED_EVERY == 0:
                    repo.create(
                        {
                            "resourceType": "Encounter",
                            "status": "in-progress",
                            "class": {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "IMP",
                            },
                            "subject": {"reference": f"Patient/{pid}"},
                            "serviceProvider": {"reference": f"Organization/{department}"},
                            "period": {"start": (now - dt.timedelta(days=1)).isoformat()},
                        }
                    )
                    treated.append(pid)
    return treated, practitioner


def queries(treated: list[str]) -> list[tuple[str, list[SearchQuery]]]:
    """The workload: (label, one query per search of a round), the same for both principals."""
    by_code = [parse_search_query("Observation", [("code", c), ("_count", "20")]) for c in CODES]
    by_patient = [parse_search_query("Observation", [("patient", p)]) for p in treated]
    with_revinclude = [
        parse_search_query("Patient", [("_id", p), ("_revinclude", "Observation:subject")])
        for p in treated
    ]
    return [
        ("Observation?code=c&_count=20", by_code),
        ("Observation?patient=id", by_patient),
        ("Patient?_id=id&_revinclude=Observation:subject", with_revinclude),
    ]


def run_searches(
    services: Services, principal: Principal, workload: list[SearchQuery], n: int
) -> tuple[float, int]:
    """Seconds for `n` searches (cycling through `workload`), and resources returned."""
    returned = 0
    start = time.perf_counter()
    for i in range(n):
        query = workload[i % len(workload)]
        with transaction(services.session_factory) as session:
            repo = Repository(session, principal, services.records)
            found, _total = repo.search(query)
            extra, _cut = repo.included(query, found)
            returned += len(found) + len(extra)
    return time.perf_counter() - start, returned


def main() -> None:
    args = parse_args("Access decision cost and search throughput, policy on vs. allow-all.")
    patients = 400 if args.quick else 2000
    rounds = args.rounds or 3
    searches = 10 if args.quick else 40
    print(environment_line())
    print()
    print("1. one access.policy.decide call (pure, timeit, best of rounds)")
    number = 2_000 if args.quick else 20_000
    rows = [
        (name, f"{us:.2f}", outcome) for name, us, outcome in decision_costs(max(rounds, 3), number)
    ]
    print_table(["case", "µs/call", "decision"], rows)
    print()
    with temp_dir("egide-bench-access-") as root:
        services = open_installation(Path(root) / "vault")
        try:
            started = time.perf_counter()
            treated, practitioner = seed(services, patients)
            seeded = time.perf_counter() - started
            print(
                f"2. search throughput: SQLite, {patients:,} patients x "
                f"{OBSERVATIONS_PER_PATIENT} Observations (seeded in {seeded:.0f} s), "
                f"{len(treated)} treated by the physician's department; {searches} searches "
                f"per query and principal per round, best of {rounds} rounds"
            )
            physician = Principal(
                id="bench-physician", role="physician", fhir_user=f"Practitioner/{practitioner}"
            )
            allow_all = Principal(id="bench-service", role="service")
            principals = [("policy on", physician), ("allow-all", allow_all)]
            workload = queries(treated)
            best: dict[tuple[str, str], tuple[float, int]] = {}
            for _label, work in workload:  # warm-up: caches, both principals
                for _name, principal in principals:
                    run_searches(services, principal, work, 5)
            for r in range(rounds):
                order = principals if r % 2 == 0 else list(reversed(principals))
                for label, work in workload:
                    for name, principal in order:
                        seconds, returned = run_searches(services, principal, work, searches)
                        key = (label, name)
                        if key not in best or seconds < best[key][0]:
                            best[key] = (seconds, returned)
            table = []
            mix: dict[str, list[float]] = {"policy on": [0.0, 0.0], "allow-all": [0.0, 0.0]}
            for label, _work in workload:
                on_s, on_n = best[(label, "policy on")]
                off_s, off_n = best[(label, "allow-all")]
                for name, (s, n) in (("policy on", (on_s, on_n)), ("allow-all", (off_s, off_n))):
                    mix[name][0] += s
                    mix[name][1] += n
                table.append(
                    [
                        label,
                        fmt_rate(searches / on_s),
                        fmt_rate(on_n / on_s),
                        fmt_rate(searches / off_s),
                        fmt_rate(off_n / off_s),
                        f"{(searches / on_s) / (searches / off_s):.2f}",
                    ]
                )
            total = searches * len(workload)
            on_mix, off_mix = mix["policy on"], mix["allow-all"]
            table.append(
                [
                    "mix of the three",
                    fmt_rate(total / on_mix[0]),
                    fmt_rate(on_mix[1] / on_mix[0]),
                    fmt_rate(total / off_mix[0]),
                    fmt_rate(off_mix[1] / off_mix[0]),
                    f"{off_mix[0] / on_mix[0]:.2f}",
                ]
            )
            print_table(
                [
                    "query",
                    "on searches/s",
                    "on resources/s",
                    "all searches/s",
                    "all resources/s",
                    "ratio on/all",
                ],
                table,
            )
            same = all(
                best[(label, "policy on")][1] == best[(label, "allow-all")][1]
                for label, _w in workload
            )
            print()
            print(
                "both principals returned the same number of resources per query: "
                + ("yes" if same else "NO (the comparison is unfair; check the seed)")
            )
        finally:
            services.close()


if __name__ == "__main__":
    main()
