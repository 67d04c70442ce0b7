"""Shared helpers for the benchmarks: installations, a loopback HTTP server, tables.

Not a benchmark itself: `make bench` skips files whose name starts with `_`.

Everything here builds real installations the way `egide init` / `egide serve` do
(`initialise` + `open_services`), with a cheap Argon2id cost for the keyring only (the KDF runs
once at start-up and is not part of any measured path).
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cryptography
import uvicorn
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from sqlalchemy import Engine, create_engine, text

from egide.app import api_for
from egide.cli.runtime import Services, initialise, open_services
from egide.core.settings import Settings
from egide.crypto.aead import Aead
from egide.db.engine import transaction
from egide.identity.tokens import create_token

# A fixed, obviously fake master secret: benchmark data is synthetic and thrown away.
BENCH_MASTER_SECRET = "benchmark master secret, synthetic data only"  # noqa: S105
PG_URL_ENV = "EGIDE_TEST_POSTGRES_URL"
_pg_counter = itertools.count()


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick", action="store_true", help="smaller workload (a smoke run, figures are noisier)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds per configuration; the best round is reported",
    )
    return parser.parse_args()


def environment_line() -> str:
    """One line saying what the figures were measured on, to compare runs fairly."""
    return (
        f"python {platform.python_version()} | cryptography {cryptography.__version__} | "
        f"{openssl_backend.openssl_version_text()} | {os.cpu_count()} CPUs | "
        f"{platform.machine()}"
    )


def bench_settings(data_dir: Path, database_url: str | None = None) -> Settings:
    return Settings.model_validate(
        {
            "data_dir": data_dir,
            "database_url": database_url,
            "master_secret": BENCH_MASTER_SECRET,
            # Cheap KDF: it runs once when the keyring is opened, never per request.
            "kdf_memory_kib": 64,
            "kdf_iterations": 1,
        }
    )


def open_installation(
    data_dir: Path, *, aead: Aead | None = None, database_url: str | None = None
) -> Services:
    """A fresh, initialised installation (keyring + schema) opened with `aead`."""
    settings = bench_settings(data_dir, database_url)
    initialise(settings)
    return open_services(settings, aead=aead)


def service_token(services: Services) -> str:
    with transaction(services.session_factory) as session:
        return create_token(
            session, role="service", name="benchmark", clock=services.records.clock
        ).token


@contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as raw:
        yield Path(raw)


@contextmanager
def serve(services: Services) -> Iterator[str]:
    """Serve the installation's API over real HTTP on 127.0.0.1; yields the base URL.

    uvicorn runs in a daemon thread of this process (same interpreter, same GIL as the
    client): the socket is bound here first, so there is no free-port race.
    """
    # IPPROTO_TCP explicitly, not 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket's proto is IPPROTO_TCP; with proto 0 every response whose
    # headers and body are written separately waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        api_for(services), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            msg = "the benchmark server did not start"
            raise RuntimeError(msg)
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _pg_sibling(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def _pg_admin_engine(url: str) -> Engine:
    admin = _pg_sibling(url, "postgres").replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(admin, isolation_level="AUTOCOMMIT")


@contextmanager
def fresh_pg_database(url: str) -> Iterator[str]:
    """CREATE a throwaway database beside the one `url` names; DROP it afterwards."""
    name = f"egide_bench_{os.getpid()}_{next(_pg_counter)}"
    admin = _pg_admin_engine(url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield _pg_sibling(url, name)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def rate(fn: Callable[[], object], n: int) -> float:
    """Calls per second of `fn` over `n` calls (wall clock, perf_counter)."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def best_rates(fns: Sequence[Callable[[], object]], n: int, repeats: int) -> list[float]:
    """Best calls per second of each function; the functions take turns in every repeat
    (order alternating), so a burst of load from elsewhere hits them alike."""
    best = [0.0] * len(fns)
    for r in range(repeats):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            best[i] = max(best[i], rate(fns[i], n))
    return best


def fmt_rate(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain, aligned text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [str(cells[0]).ljust(widths[0])]
        out += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(out)

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
