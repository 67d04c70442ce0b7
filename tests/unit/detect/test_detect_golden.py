"""Detection output is fixed: the same events give byte-identical alert files, run after run,
whatever the hash seed, and equal to the golden files in `golden/`.

The golden files were written by the detector before its speed work (a small simulated hospital:
60 users, 1,500 patients, 12 days, seed 7; the events and context are checked in, so a change to
the simulator does not move them). Three settings: the defaults, sensitive thresholds (many more
findings, so every detector's evidence and reasons are compared), and the same with no grouping
into cases (every finding its own alert). A difference here is a change of detection semantics:
regenerate the golden files only when that change is intended.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from egide.cli.main import app
from egide.detect.engine import Detector
from egide.detect.events import context_from_json, write_alerts
from egide.detect.settings import DetectSettings

GOLDEN = Path(__file__).parent / "golden"
EVENTS = GOLDEN / "events.jsonl.gz"

SENSITIVE = DetectSettings(
    affinity_ordinary=0.05,
    affinity_sensitive=0.1,
    peers_ordinary=3,
    habit_days=8,
    slow_patients=8,
    slow_days=2,
    export_min_records=5,
    read_burst_min_patients=10,
    burst_z=2.0,
    burst_peer_factor=0.8,
    write_min_records=5,
    brute_force_failures=3,
    stuffing_accounts=2,
    concurrent_minutes=30.0,
    stolen_min_signals=1,
    break_glass_weekly=1,
    case_gap_days=1.0,
)
SETTINGS = {
    "default": DetectSettings(),
    "sensitive": SENSITIVE,
    "raw": dataclasses.replace(SENSITIVE, case_gap_days=-1e6),
}


@pytest.fixture(scope="module")
def context_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "context.json"
    path.write_bytes(gzip.decompress((GOLDEN / "context.json.gz").read_bytes()))
    return path


def _alerts(settings: DetectSettings, context: Path, out: Path) -> bytes:
    detector = Detector(context_from_json(orjson.loads(context.read_bytes())), settings)
    detector.feed_file(EVENTS)
    write_alerts(out, detector.finish())
    return out.read_bytes()


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_alerts_match_the_golden_file(name: str, context_file: Path, tmp_path: Path) -> None:
    produced = _alerts(SETTINGS[name], context_file, tmp_path / "alerts.jsonl")
    assert produced == (GOLDEN / f"alerts_{name}.jsonl").read_bytes()


def test_cli_writes_the_golden_file(context_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    result = CliRunner().invoke(
        app,
        [
            "detect",
            "run",
            "--events",
            str(EVENTS),
            "--context",
            str(context_file),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (GOLDEN / "alerts_default.jsonl").read_bytes()


def test_same_output_under_another_hash_seed(context_file: Path, tmp_path: Path) -> None:
    """Set iteration order changes with PYTHONHASHSEED; the alerts must not."""
    out = tmp_path / "alerts.jsonl"
    code = (
        "import sys; from egide.cli.main import app; "
        "sys.argv = ['egide', 'detect', 'run', '--events', sys.argv[1], '--context', "
        "sys.argv[2], '--out', sys.argv[3]]; app()"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run(
        [sys.executable, "-c", code, str(EVENTS), str(context_file), str(out)],
        check=True,
        env=env,
        capture_output=True,
    )
    assert out.read_bytes() == (GOLDEN / "alerts_default.jsonl").read_bytes()
