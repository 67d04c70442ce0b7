"""`egide detect run`: alerts written, summary table, bad lines reported or refused, missing
files as one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from typer.testing import CliRunner

from egide.cli.main import app
from egide.detect.events import read_alerts
from tests.unit.detect.detect_world import build

runner = CliRunner()


def _files(tmp_path: Path, *, bad: bool = False, gz: bool = False) -> tuple[Path, Path]:
    world = build(days=8)
    nurse = world.user("surgery", "nurse", 1)
    world.event(nurse, 5, 14.0, "read", patient=world.some_patient_not_in_care()["id"])
    lines = [json.dumps(e) for e in world.sorted_events()]
    if bad:
        lines.insert(3, "{not json")
        lines.insert(
            10, json.dumps({"id": "x", "time": "yesterday", "user": "u", "action": "read"})
        )
    data = ("\n".join(lines) + "\n").encode()
    events = tmp_path / ("events.jsonl.gz" if gz else "events.jsonl")
    events.write_bytes(gzip.compress(data) if gz else data)
    context = tmp_path / "context.json"
    context.write_text(json.dumps(world.context_json()))
    return events, context


def _paths(events: Path, context: Path, out: Path) -> list[str]:
    return ["--events", str(events), "--context", str(context), "--out", str(out)]


def test_run_writes_alerts_and_summary(tmp_path: Path) -> None:
    events, context = _files(tmp_path)
    out = tmp_path / "alerts.jsonl"
    result = runner.invoke(
        app,
        ["detect", "run", "--events", str(events), "--context", str(context), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "alerts by kind and severity" in result.stdout
    assert any(a.kind == "snooping" for a in read_alerts(out))


def test_bad_lines_reported_with_line_numbers_in_gzip(tmp_path: Path) -> None:
    events, context = _files(tmp_path, bad=True, gz=True)
    out = tmp_path / "alerts.jsonl"
    result = runner.invoke(
        app,
        ["detect", "run", "--events", str(events), "--context", str(context), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "line 4: not JSON" in result.stderr
    assert "line 11: time 'yesterday'" in result.stderr
    assert "2 bad lines skipped" in result.stderr


def test_strict_refuses_at_first_bad_line(tmp_path: Path) -> None:
    events, context = _files(tmp_path, bad=True)
    out = tmp_path / "alerts.jsonl"
    result = runner.invoke(
        app,
        ["detect", "run", "--strict", *_paths(events, context, out)],
    )
    assert result.exit_code == 1
    assert "line 4" in result.stderr
    assert "Traceback" not in result.output


def test_missing_file_and_bad_context_are_one_line_errors(tmp_path: Path) -> None:
    events, context = _files(tmp_path)
    out = tmp_path / "alerts.jsonl"
    missing = runner.invoke(
        app,
        ["detect", "run", *_paths(tmp_path / "nope.jsonl", context, out)],
    )
    assert missing.exit_code == 1
    assert missing.stderr.startswith("egide: error: no such events file")
    context.write_text("[1, 2]")
    bad = runner.invoke(
        app,
        ["detect", "run", "--events", str(events), "--context", str(context), "--out", str(out)],
    )
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1
    assert "context" in bad.stderr
