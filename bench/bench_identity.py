"""Identity primitives: Argon2id cost, and whether an unknown user answers as slowly as a known one.

What is measured:

* Password checks with the production parameters (OWASP: Argon2id m=19 MiB, t=2, p=1), per
  call, in microseconds: hashing a new password; verifying a known user's right and wrong
  password; `verify_or_dummy` for an unknown user (no stored hash) and for a corrupt row.
  Samples of all scenarios are taken in turns (order alternating), so load from elsewhere
  hits them alike. Shown: median, 10th and 90th percentiles, and the ratio of each median to
  the known user's wrong password. An unknown user must cost the same as a known user's
  failure (ASVS 5.0 V6.3.8): the ratio should be 1.00 within the spread of the percentiles.
  The test suite never asserts these times (shared machines are noisy); it proves instead
  that the dummy check runs the same Argon2id work with the same parameters.
* The whole first sign-in step through the database (`login.password_step` in its own
  transaction, as the sign-in page runs it: the account lookup, Argon2id, the failure counters,
  the per-address throttle and the ledger entry), for a known account with a wrong password
  and for an unknown e-mail address, on SQLite (and on PostgreSQL when
  EGIDE_TEST_POSTGRES_URL is set, as under `make bench`), production Argon2id parameters.
  Each attempt comes from its own source address and the known account's failure count is
  reset between samples (untimed), so neither the address throttle nor the account's
  backoff cuts an attempt short: what is compared is the answer a stranger gets for a first
  wrong guess. Shown: median, p10, p90 and the ratio of medians (unknown / known).
* The cheap checks, in operations per second (best of interleaved repeats): TOTP verification
  (three HMAC-SHA-1 steps), matching a recovery code against ten stored hashes, a CSRF check,
  hashing a session token.

Run: `.venv/bin/python bench/bench_identity.py [--quick] [--rounds N]` (N: password samples
per scenario).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

from sqlalchemy import update

from _common import (
    PG_URL_ENV,
    best_rates,
    environment_line,
    fmt_rate,
    fresh_pg_database,
    open_installation,
    parse_args,
    print_table,
    temp_dir,
)
from egide.cli.runtime import OPERATOR, Services
from egide.db.engine import transaction
from egide.identity import accounts, login
from egide.identity.models import Account
from egide.identity.passwords import PasswordHasher
from egide.identity.recovery import generate_codes, hash_code, match
from egide.identity.session_tokens import (
    check_csrf,
    csrf_token_for,
    new_csrf_secret,
    new_session_token,
    token_hash,
)
from egide.identity.totp import TotpVerifier, new_secret, totp_at_time

# Synthetic passwords, benchmark only.
PASSWORD = "violet stapler drifts over the quiet harbour"  # noqa: S105
WRONG = "violet stapler drifts over the quiet harbous"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _password_samples(
    scenarios: list[tuple[str, Callable[[], object]]], n: int
) -> dict[str, list[float]]:
    """`n` timings (µs) of each scenario, taken in turns with the order alternating."""
    samples: dict[str, list[float]] = {name: [] for name, _ in scenarios}
    for i in range(n):
        order = scenarios if i % 2 == 0 else list(reversed(scenarios))
        for name, fn in order:
            start = time.perf_counter_ns()
            fn()
            samples[name].append((time.perf_counter_ns() - start) / 1000)
    return samples


KNOWN_EMAIL = "known.user@clinic.example"
UNKNOWN_EMAIL = "nobody.here@clinic.example"


def _known_account(services: Services) -> str:
    """An active staff account with `PASSWORD`; returns its id."""
    with transaction(services.session_factory) as session:
        view, token = accounts.create_account(
            session,
            email=KNOWN_EMAIL,
            name="Known User",
            role="physician",
            clock=services.records.clock,
            settings=services.settings,
            envelope=services.records.envelope,
            actor=OPERATOR,
        )
        accounts.accept_invitation(
            session,
            token=token,
            password=PASSWORD,
            clock=services.records.clock,
            settings=services.settings,
            ip=None,
            device=None,
        )
    return view.id


def _sign_in_step_samples(services: Services, n: int) -> dict[str, list[float]]:
    account_id = _known_account(services)
    addresses = (f"bench-{i}" for i in range(10**9))

    def attempt(email: str) -> login.LoginResult:
        with transaction(services.session_factory) as session:
            return login.password_step(
                session,
                email=email,
                password=WRONG,
                clock=services.records.clock,
                settings=services.settings,
                envelope=services.records.envelope,
                ip=next(addresses),  # a fresh address: the per-address throttle never bites
                device="bench",
            )

    def reset() -> None:  # untimed: the account never reaches its backoff
        with transaction(services.session_factory) as session:
            session.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(failed_count=0, locked_until=None)
            )

    for email in (KNOWN_EMAIL, UNKNOWN_EMAIL):  # warm-up: caches, the dummy hash
        attempt(email)
        reset()
    samples: dict[str, list[float]] = {"known": [], "unknown": []}
    for i in range(n):
        order = [("known", KNOWN_EMAIL), ("unknown", UNKNOWN_EMAIL)]
        for name, email in order if i % 2 == 0 else reversed(order):
            start = time.perf_counter_ns()
            result = attempt(email)
            samples[name].append((time.perf_counter_ns() - start) / 1000)
            assert result.message == login.WRONG_CREDENTIALS, result
            reset()
    return samples


def _sign_in_step(n: int) -> None:
    """The full `password_step` through the database, known vs unknown, per backend."""
    print(f"Sign-in password step through the database ({n} samples each, in turns; µs)")
    rows = []
    with temp_dir("egide-bench-identity-") as root:
        backends: list[tuple[str, str | None]] = [("SQLite", None)]
        pg_url = os.environ.get(PG_URL_ENV)
        with contextlib.ExitStack() as stack:
            if pg_url:
                backends.append(("PostgreSQL", stack.enter_context(fresh_pg_database(pg_url))))
            for label, url in backends:
                services = open_installation(root / label.lower(), database_url=url)
                try:
                    samples = _sign_in_step_samples(services, n)
                finally:
                    services.close()
                known = statistics.median(samples["known"])
                for name in ("known", "unknown"):
                    values = samples[name]
                    rows.append(
                        [
                            label,
                            "known e-mail, wrong password" if name == "known" else "unknown e-mail",
                            f"{statistics.median(values):,.0f}",
                            f"{_percentile(values, 0.1):,.0f}",
                            f"{_percentile(values, 0.9):,.0f}",
                            f"{statistics.median(values) / known:.3f}",
                        ]
                    )
    print_table(["database", "attempt", "median µs", "p10 µs", "p90 µs", "ratio"], rows)
    print(
        "ratio: median / the known e-mail's median on the same database; within the known "
        "e-mail's own p10-p90 spread it is noise (ASVS 5.0 V6.3.8)."
    )
    print()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = args.rounds or (15 if args.quick else 60)
    repeats = 3 if args.quick else 7
    ops = 2_000 if args.quick else 10_000

    hasher = PasswordHasher()
    stored = hasher.hash(PASSWORD)
    hasher.verify_or_dummy(None, PASSWORD)  # the dummy hash is computed once, before timing

    print("Égide identity primitives")
    print(environment_line() + f" | argon2-cffi {version('argon2-cffi')}")
    p = hasher.params
    print(
        f"Argon2id m={p.memory_kib} KiB, t={p.time_cost}, p={p.parallelism}; "
        f"{n} samples per scenario, taken in turns; times in µs per call."
    )
    print()

    scenarios: list[tuple[str, Callable[[], object]]] = [
        ("known user, wrong password", lambda: hasher.verify_or_dummy(stored, WRONG)),
        ("unknown user (dummy hash)", lambda: hasher.verify_or_dummy(None, WRONG)),
        ("corrupt stored hash (dummy)", lambda: hasher.verify_or_dummy("!", WRONG)),
        ("known user, right password", lambda: hasher.verify_or_dummy(stored, PASSWORD)),
        ("hash a new password", lambda: hasher.hash(PASSWORD)),
    ]
    samples = _password_samples(scenarios, n)
    reference = statistics.median(samples[scenarios[0][0]])
    rows = []
    for name, _ in scenarios:
        values = samples[name]
        median = statistics.median(values)
        rows.append(
            [
                name,
                f"{median:,.0f}",
                f"{_percentile(values, 0.1):,.0f}",
                f"{_percentile(values, 0.9):,.0f}",
                f"{median / reference:.2f}",
            ]
        )
    print_table(["password check", "median µs", "p10 µs", "p90 µs", "ratio"], rows)
    unknown = statistics.median(samples[scenarios[1][0]]) / reference
    spread = (
        _percentile(samples[scenarios[0][0]], 0.9) - _percentile(samples[scenarios[0][0]], 0.1)
    ) / reference
    print()
    print(f"unknown / known user (failed login): {unknown:.3f}")
    print(
        f"the known user's own p10-p90 spread is {spread:.3f} of its median: "
        "a ratio within 1 ± that spread is noise."
    )
    print()

    _sign_in_step(max(10, n // 2))

    key = new_secret()
    verifier = TotpVerifier()
    now = time.time()
    code = totp_at_time(key, now)
    codes = generate_codes()
    stored_codes: list[bytes | None] = [hash_code(c) for c in codes]
    csrf_secret = new_csrf_secret()
    csrf_token = csrf_token_for(csrf_secret)
    session_token = new_session_token()
    cheap: list[tuple[str, Callable[[], object]]] = [
        ("TOTP verify (±1 step)", lambda: verifier.verify_at_time(key, code, now, None)),
        ("recovery code match (10 slots)", lambda: match(codes[9], stored_codes)),
        ("CSRF check", lambda: check_csrf(csrf_secret, csrf_token)),
        ("session token hash", lambda: token_hash(session_token)),
    ]
    rates = best_rates([fn for _, fn in cheap], ops, repeats)
    print_table(
        ["cheap check", "ops/s", "µs/op"],
        [
            [name, fmt_rate(rate), f"{1e6 / rate:.1f}"]
            for (name, _), rate in zip(cheap, rates, strict=True)
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
