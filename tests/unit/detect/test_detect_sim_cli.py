"""`egide simulate`: files written with a summary, gzip, and one-line errors on bad arguments."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egide.cli.main import app

runner = CliRunner()
SMALL = ["--users", "30", "--patients", "200", "--days", "2", "--seed", "5"]


def test_simulate_writes_the_four_files_and_a_summary(tmp_path: Path) -> None:
    out = tmp_path / "hospital"
    result = runner.invoke(app, ["simulate", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "context.json",
        "events.jsonl",
        "labels.jsonl",
        "meta.json",
    ]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 5
    assert f"egide: {meta['events']} events" in result.stderr
    assert "labelled attacks: snooping" in result.stderr
    assert result.stdout == ""


def test_simulate_gzip(tmp_path: Path) -> None:
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    assert runner.invoke(app, ["simulate", *SMALL, "--out", str(plain)]).exit_code == 0
    result = runner.invoke(app, ["simulate", *SMALL, "--gzip", "--out", str(packed)])
    assert result.exit_code == 0, result.stderr
    assert not (packed / "events.jsonl").exists()
    events = gzip.decompress((packed / "events.jsonl.gz").read_bytes())
    assert events == (plain / "events.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "--users must be between 30 and 50000, got 0"),
        (["--patients", "5"], "--patients must be between"),
        (["--days", "0"], "--days must be between"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["simulate", *args, "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"egide: error: {message}")
    assert not (tmp_path / "x").exists()


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("")
    result = runner.invoke(app, ["simulate", *SMALL, "--out", str(target)])
    assert result.exit_code == 1
    assert "is not a directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
