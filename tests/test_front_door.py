"""What a new user meets first: a corpus in the box, output that reads at 80 columns and in a
log, one rule for commands that find no run, a help for `charrnn` alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from charrnn.builtin import BUILTIN, resolve_corpus
from charrnn.cli import app
from tests.conftest import VERSES

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "32", "--embed", "16", "--batch-size", "4", "--seq-len", "16"]
TINY += ["--max-steps", "6", "--sample-every", "0", "--stop-fit", "0", "--device", "cpu"]


def charrnn(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The program as a user runs it: output to a pipe, not a terminal."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHARRNN_CACHE": str(cwd / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_charrnn_alone_shows_the_help_and_exits_0():
    r = CliRunner().invoke(app, [])
    assert r.exit_code == 0 and "train" in r.output and "error" not in r.output


def test_the_builtin_corpus_is_in_the_package_and_in_its_wheel(tmp_path):
    shakespeare = BUILTIN["shakespeare"]
    assert shakespeare.path.stat().st_size == 1_115_394
    assert shakespeare.path.read_text(encoding="utf-8").startswith("First Citizen:")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("charrnn-*.whl")
    assert "charrnn/corpora/shakespeare.txt" in zipfile.ZipFile(wheel).namelist()


def test_train_without_a_corpus_takes_the_builtin_one_and_a_file_of_that_name_wins(tmp_path):
    r = charrnn(tmp_path, "train", *TINY, "--max-steps", "1", "--val-fraction", "0.01")
    assert r.returncode == 0, r.stderr
    assert "text: built-in shakespeare (1.1 MB)" in r.stdout
    assert (tmp_path / "checkpoints" / "shakespeare").is_dir()
    (tmp_path / "shakespeare").write_text(VERSES * 20, encoding="utf-8")
    assert resolve_corpus(tmp_path / "shakespeare").builtin is None
    r = charrnn(tmp_path, "train", "shakespeare", *TINY)
    assert r.returncode == 0, r.stderr
    assert "text: shakespeare (" in r.stdout and "built-in" not in r.stdout
    assert json.loads((tmp_path / "checkpoints" / "shakespeare-2" / "run.json").read_text())[
        "corpus"
    ] == str(tmp_path / "shakespeare")


def test_corpora_lists_the_builtin_texts():
    r = CliRunner().invoke(app, ["corpora", "--json"])
    assert r.exit_code == 0
    (row,) = json.loads(r.stdout)
    assert row["name"] == "shakespeare" and row["bytes"] == 1_115_394
    assert row["licence"] == "public domain"
    r = CliRunner().invoke(app, ["corpora"])
    assert "shakespeare" in r.stdout and "1.1 MB" in r.stdout


def test_train_reads_at_80_columns_and_in_a_log(tmp_path):
    """Piped to a file: no progress bar frames, every line under 80 columns, the run's length
    said on its first line, and a validation split too small to trust named with its size."""
    corpus = tmp_path / "verses.txt"
    corpus.write_text(VERSES * 20, encoding="utf-8")
    r = charrnn(tmp_path, "train", str(corpus), *TINY[:-6], "--time-budget", "5m")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert not any(c in r.stdout for c in "━╸╺")  # a bar's frame
    assert "for 5m (--time-budget)" in lines[0]
    assert any("warning: the validation split holds only" in ln for ln in lines)
    assert any(ln.startswith("step ") and " val " in ln for ln in lines)
    assert not r.stderr.strip()


def test_score_and_info_read_at_80_columns(trained_run):
    r = CliRunner().invoke(
        app,
        ["score", "-c", str(trained_run), "The cat sat on the mat.", "A dog " * 30],
        env={"COLUMNS": "80"},
    )
    rows = [ln for ln in r.stdout.splitlines() if ln.strip()[:1] in ("1", "2")]
    assert len(rows) == 2 and rows[1].strip().startswith("2")  # one row per sentence
    assert "…" in r.stdout  # the long one cut, not wrapped
    r = CliRunner().invoke(app, ["info", str(trained_run)], env={"COLUMNS": "80"})
    assert "tokenizer.level" in r.stdout and "tokenizer.sample_chars" in r.stdout


def test_docs_show_no_absolute_paths_of_a_machine():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for marker in ("/root/", "/work/", "/home/", "/tmp/pytest"):
            assert marker not in text, (page.name, marker)
