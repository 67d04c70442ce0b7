"""`egide detect run`: alerts written, summary table, bad lines reported or refused, missing
files as one-line errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from egide.cli.main import app
from egide.detect import parallel
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


@pytest.mark.parametrize("gz", [False, True])
def test_two_processes_write_what_one_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    """With the size limit lowered, the file is read and judged in two processes (on a
    machine of two cores): the same alerts file, bad lines and summary as in one."""
    events, context = _files(tmp_path, bad=True, gz=gz)
    outputs = []
    calls: list[int] = []
    real = parallel.score_split

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(parallel, "score_split", counted)
    for limit in (1 << 40, 1):
        monkeypatch.setattr("egide.detect.features.PARALLEL_MIN_BYTES", limit)
        out = tmp_path / f"alerts-{limit}.jsonl"
        result = runner.invoke(app, ["detect", "run", *_paths(events, context, out)])
        assert result.exit_code == 0, result.output
        outputs.append((out.read_bytes(), result.stderr.replace(str(out), "OUT"), result.stdout))
    assert outputs[0] == outputs[1]
    assert b"snooping" in outputs[0][0]
    expected_calls = [1] if parallel.can_fork() and parallel.cores() >= 2 else []
    assert calls == expected_calls
