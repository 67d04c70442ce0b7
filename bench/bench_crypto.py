"""AES-256-GCM and blind-index throughput: Égide's wrappers against the raw library calls.

What is measured, for payloads of 256 B, 2 KiB and 16 KiB (a small Observation, a Patient, a
large DocumentReference or Bundle entry), in operations per second:

* floor: `cryptography`'s `AESGCM(key).encrypt/decrypt` with a fresh random 96-bit nonce, the
  least any AES-256-GCM seal/open can cost in Python (key object built per call, as our code
  does);
* `egide.crypto.aead.AesGcm`: the same plus its key/nonce size checks;
* `Envelope.seal/open` inside one real SQLite transaction with the owner's data key cached
  (the per-request path after the first use of a key): header, nonce, associated data;
* `BlindIndex.token` (HMAC-SHA256 search token) against a raw `hmac.new(...).digest()`.

Ratios are wrapper/floor (1.0 = no overhead). Why: the API benchmark shows the cipher layer's
share of a request; this one shows whether our wrappers add anything over the primitive, so a
regression in them is visible long before it shows in requests per second.

Each figure is the best of several timed repeats; within a repeat the floor and our code take
turns (order alternating), so load from elsewhere hits them alike. Run:
`.venv/bin/python bench/bench_crypto.py [--quick]`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from _common import (
    best_rates,
    environment_line,
    fmt_rate,
    open_installation,
    parse_args,
    print_table,
    temp_dir,
)
from egide.crypto.aead import NONCE_SIZE, AesGcm
from egide.crypto.blind import BlindIndex
from egide.db.engine import transaction

SIZES = (256, 2 * 1024, 16 * 1024)
AAD = b"Patient/0b6d1f6e-6a5c-4f7e-9a53-3c3f1b1c2d4e/1/0b6d1f6e-6a5c-4f7e-9a53-3c3f1b1c2d4e"
OWNER = "0b6d1f6e-6a5c-4f7e-9a53-3c3f1b1c2d4e"


def _size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 else f"{size} B"


def main() -> int:
    args = parse_args(__doc__.splitlines()[0] if __doc__ else "")
    n = 2_000 if args.quick else 10_000
    repeats = args.rounds or (3 if args.quick else 9)
    key = os.urandom(32)
    wrapper = AesGcm()

    print("Égide AES-256-GCM and blind-index throughput (operations per second)")
    print(environment_line())
    print(
        f"{n} operations per timing, best of {repeats} interleaved repeats; "
        "ratio = figure / floor (1.00 = as fast as the raw call)."
    )
    print()

    rows: list[list[str]] = []
    with temp_dir("egide-bench-crypto-") as data_dir:
        services = open_installation(data_dir)
        envelope = services.records.envelope
        try:
            with transaction(services.session_factory) as session:
                envelope.seal(session, owner=OWNER, plaintext=b"warm-up", aad=AAD)
            # One transaction for all timings: the DEK is unwrapped once, then cached.
            with transaction(services.session_factory) as session:
                for size in SIZES:
                    plaintext = os.urandom(size)

                    def raw_seal(p: bytes = plaintext) -> bytes:
                        nonce = os.urandom(NONCE_SIZE)
                        return nonce + AESGCM(key).encrypt(nonce, p, AAD)

                    def our_seal(p: bytes = plaintext) -> bytes:
                        nonce = os.urandom(NONCE_SIZE)
                        return nonce + wrapper.encrypt(key, nonce, p, AAD)

                    def env_seal(p: bytes = plaintext) -> bytes:
                        return envelope.seal(session, owner=OWNER, plaintext=p, aad=AAD)

                    raw_box = raw_seal()
                    sealed = env_seal()
                    r_nonce, r_ct = raw_box[:NONCE_SIZE], raw_box[NONCE_SIZE:]
                    checks: list[tuple[str, Callable[[], object], Callable[[], object]]] = [
                        ("seal", raw_seal, our_seal),
                        (
                            "open",
                            lambda n_=r_nonce, c=r_ct: AESGCM(key).decrypt(n_, c, AAD),
                            lambda n_=r_nonce, c=r_ct: wrapper.decrypt(key, n_, c, AAD),
                        ),
                    ]
                    envelope_ops: dict[str, Callable[[], object]] = {
                        "seal": env_seal,
                        "open": lambda s=sealed: envelope.open(
                            session, owner=OWNER, sealed=s, aad=AAD
                        ),
                    }
                    for name, raw_fn, our_fn in checks:
                        floor, ours, env = best_rates(
                            [raw_fn, our_fn, envelope_ops[name]], n, repeats
                        )
                        mib = floor * size / (1024 * 1024)
                        rows.append(
                            [
                                f"{name} {_size_label(size)}",
                                fmt_rate(floor),
                                f"{mib:,.0f}",
                                fmt_rate(ours),
                                f"{ours / floor:.2f}",
                                fmt_rate(env),
                                f"{env / floor:.2f}",
                            ]
                        )
            index_key = services.keyring.secret("blind-index")
        finally:
            services.close()

    print_table(
        [
            "AES-256-GCM",
            "floor op/s",
            "floor MiB/s",
            "AesGcm op/s",
            "ratio",
            "Envelope op/s",
            "ratio",
        ],
        rows,
    )
    print()

    index = BlindIndex(index_key)
    message = b"family\x00dupont"

    def raw_hmac() -> bytes:
        return hmac.new(index_key, message, hashlib.sha256).digest()

    blind_n = n * 2
    floor, ours = best_rates([raw_hmac, lambda: index.token("family", "dupont")], blind_n, repeats)
    start = time.perf_counter()
    words = 0
    while time.perf_counter() - start < 0.5:
        index.prefix_tokens("family", "lefevre-dupont")
        words += 1
    prefix_rate = words / (time.perf_counter() - start)
    print_table(
        ["HMAC-SHA256 blind index", "floor op/s", "BlindIndex op/s", "ratio"],
        [
            ["token (1 value)", fmt_rate(floor), fmt_rate(ours), f"{ours / floor:.2f}"],
        ],
    )
    print(
        f"prefix_tokens (12 tokens a word, what indexing one name costs): "
        f"{fmt_rate(prefix_rate)} words/s"
    )
    print()
    print(
        "floor = cryptography's AESGCM / hmac.new with a fresh nonce and a key object per "
        "call; AesGcm = our size-checked wrapper; Envelope = seal/open with header, random "
        "nonce and associated data, data key cached in the open transaction."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
