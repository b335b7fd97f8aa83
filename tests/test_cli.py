"""The command line end to end (its one-line errors are in test_bad_inputs.py)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.cli.options import parse_duration
from charrnn.config import DataConfig, Holdout
from charrnn.data import prepare
from tests.conftest import drifting_corpus

runner = CliRunner()
TINY = [
    "--layers",
    "1",
    "--hidden",
    "32",
    "--embed",
    "16",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--sample-every",
    "5",
    "--device",
    "cpu",
]


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_tokenize_train_sample_score(corpus: Path, tmp_path: Path):
    ck = tmp_path / "ck"
    r = run("tokenize", corpus)
    assert r.exit_code == 0, r.output
    assert "vocabulary" in r.output and "<unk> rate" in r.output and "mean unit length" in r.output

    r = run("train", corpus, *TINY, "--max-steps", "12", "--checkpoints", ck)
    assert r.exit_code == 0, r.output
    assert "training summary" in r.output and "val bits/char" in r.output
    assert "sample at step 5" in r.output
    assert (ck / "verses" / "best.safetensors").exists()

    r = run("sample", "--checkpoints", ck, "--temp", "0.8", "--seed", "3", "--max-tokens", "40")
    r2 = run("sample", "--checkpoints", ck, "--temp", "0.8", "--seed", "3", "--max-tokens", "40")
    assert r.exit_code == 0 and r.stdout == r2.stdout and r.stdout.strip()

    r = run(
        "sample",
        "-c",
        "verses",
        "--checkpoints",
        ck,
        "-n",
        "3",
        "--json",
        "--stop",
        "length",
        "--length",
        "12",
    )
    samples = json.loads(r.stdout)
    assert len(samples) == 3 and all(s["tokens"] == 12 and s["length"] == 12 for s in samples)

    r = run("score", "The cat sat.", "The cta sat.", "--checkpoints", ck, "--json")
    scores = json.loads(r.stdout)
    assert [s["text"] for s in scores] == ["The cat sat.", "The cta sat."]
    assert all(s["log_prob"] < 0 and s["bits_per_char"] > 0 for s in scores)
    assert all(s["bits_per_byte"] == pytest.approx(s["bits_per_char"]) for s in scores)  # ASCII

    r = run("score", "The cat sat.", "日本", "--checkpoints", ck, "--per-token")
    assert (
        r.exit_code == 0 and "log P" in r.stdout and "<unk>" in r.stdout and "surprisal" in r.stdout
    )


def test_train_validates_on_the_split_asked_for(tmp_path: Path):
    corpus = drifting_corpus(tmp_path)
    ds, _ = prepare(corpus, DataConfig())
    sizes = {h: [len(s) for s in ds.split(0.1, h)] for h in Holdout}
    assert sizes[Holdout.tail] != sizes[Holdout.spread]
    for split in ("tail", "spread"):
        ck = tmp_path / split
        r = run("train", corpus, *TINY, "--max-steps", "2", "--split", split, "--checkpoints", ck)
        assert r.exit_code == 0, r.output
        assert f"val tokens ({split} split)" in " ".join(r.output.split())
        info = json.loads((ck / "drift" / "run.json").read_text(encoding="utf-8"))
        _, val = ds.split(0.1, Holdout(split))
        assert info["train"]["split"] == split
        assert (info["data"]["val_tokens"], info["data"]["val_units"]) == (
            len(val),
            len(val.unit_starts),
        )


def test_tokenize_a_subword_level(corpus: Path, tmp_path: Path):
    args = ("tokenize", corpus, "--level", "unigram", "--vocab-size", "320")
    r = run(*args, "--sample-chars", "2000", "-o", tmp_path / "ds")
    assert r.exit_code == 0, r.output
    assert "unigram" in r.output and "tokenizer sample" in r.output and "bytes" in r.output
    assert (tmp_path / "ds" / "tokenizer.model").exists()
    sampled = json.loads((tmp_path / "ds" / "dataset.json").read_text())["tokenizer_sample_chars"]
    assert 0 < sampled <= 2000 and f"{sampled:,} characters" in r.output


def test_score_reads_a_file(corpus: Path, tmp_path: Path):
    ck = tmp_path / "ck"
    assert run("train", corpus, *TINY, "--max-steps", "3", "--checkpoints", ck).exit_code == 0
    sentences = tmp_path / "s.txt"
    sentences.write_text("The cat sat.\n\nThe dog sat.\n")
    r = run("score", "--file", sentences, "--checkpoints", ck, "--json")
    assert [s["text"] for s in json.loads(r.stdout)] == ["The cat sat.", "The dog sat."]


def test_version_and_help():
    assert "charrnn" in run("--version").stdout
    r = run("train", "-h")
    assert r.exit_code == 0 and "--time-budget" in r.stdout


def test_parse_duration():
    assert parse_duration("150s") == 150
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90") == 90
    assert parse_duration("none") is None


def test_train_names_the_level_auto_chose(corpus: Path, tmp_path: Path, monkeypatch):
    from charrnn import defaults

    ck = tmp_path / "ck"
    args = ("train", corpus, *TINY, "--max-steps", "2", "--checkpoints", ck)
    r = run(*args, "--run", "long")  # the default 15-minute budget: characters
    assert r.exit_code == 0, r.output
    assert "char level (" in r.output
    monkeypatch.setattr(defaults, "AUTO_BYTES_PER_SECOND", 10)  # the corpus: a few KB
    r = run(*args, "--run", "short", "--time-budget", "2m")
    assert r.exit_code == 0, r.output
    assert "bpe level (" in r.output and "symbols)" in r.output


def test_a_bug_is_one_line_that_says_so_and_the_traceback_is_there_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import charrnn.cli.runs

    def bug(root: Path) -> list:
        raise ValueError("a bug\nof ours")

    monkeypatch.setattr(charrnn.cli.runs, "summarize_all", bug)
    r = run("runs", "--checkpoints", tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 3 and len(lines) == 1 and "Traceback" not in r.output
    assert "internal error (ValueError: a bug of ours)" in lines[0]
    assert "CHARRNN_DEBUG=1" in lines[0]
    monkeypatch.setenv("CHARRNN_DEBUG", "1")
    r = run("runs", "--checkpoints", tmp_path)
    assert isinstance(r.exception, ValueError)  # raised, so Python shows its traceback


def test_running_out_of_memory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import charrnn.cli.runs

    def short(root: Path) -> list:
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate "
            "8589934592 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(charrnn.cli.runs, "summarize_all", short)
    r = run("runs", "--checkpoints", tmp_path)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr.strip() == (
        "error: not enough memory (8.0 GiB asked for at once); ask for less: a smaller model "
        "(--hidden, --embed, --layers), --batch-size or -n"
    )
