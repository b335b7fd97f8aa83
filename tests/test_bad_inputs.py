"""A catalogue of bad inputs, every subcommand: each gets its exit code and one line on stderr
that names the problem; no traceback, and no file changed. docs/errors.md lists them all."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import pickle
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer.testing
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import charrnn
from charrnn.checkpoint import BEST, RUN_JSON
from charrnn.cli import app
from charrnn.errors import CharRNNError
from tests.conftest import VERSES
from tests.forkserver import ForkServer, cli_env

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
USAGE = 2  # a value click itself refuses
INTERRUPTED = 130


@dataclass(frozen=True)
class Case:
    id: str  # listed in docs/errors.md
    args: str  # split on spaces; {p} is the test's folder, which holds a trained run in {p}/ck
    needles: tuple[str, ...]  # words the one line must hold
    code: int = 1
    setup: Callable[[Path], object] | None = None
    stdin: bytes | Callable[[], io.RawIOBase] | None = None
    marks: tuple = field(default_factory=tuple)


def text(name: str, content: str | bytes) -> Callable[[Path], object]:
    def make(p: Path) -> object:
        path = p / name
        return path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return make


def folder(name: str, *files: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        (p / name).mkdir()
        for f in files:
            (p / name / f).write_text("mine\n")

    return make


def tamper(name: str, content: bytes) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        (p / "ck" / "verses" / name).write_bytes(content)

    return make


HELD: list[int] = []  # locks a setup holds for the length of its case


def hold_lock(folder: Path) -> None:
    """Hold a run's lock, as a process training it does."""
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(fd)


def word_dataset(p: Path, name: str) -> None:
    """A dataset folder of a text, made at word level (another tokenizer than the run's)."""
    from charrnn.config import DataConfig, Level, TokenizerConfig
    from charrnn.data import prepare

    (p / "w.txt").write_text(VERSES * 20, encoding="utf-8")
    prepare(p / "w.txt", DataConfig(TokenizerConfig(level=Level.word)), out=p / name)


class BrokenStdin(io.RawIOBase):
    """Standard input that gives one line, then fails as an interrupted or broken read."""

    def __init__(self, error: BaseException):
        self.error, self.sent = error, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not len(buffer):
            return 0
        if self.sent:
            raise self.error
        data = b"The cat sat.\n"
        buffer[: len(data)] = data
        self.sent = True
        return len(data)


CK = "--checkpoints {p}/ck"
# every symbol of the test run's text, each a --ban ({sp} is a space, \\n a line break)
BAN_ALL = " ".join("--ban " + {" ": "{sp}", "\n": "\\n"}.get(c, c) for c in sorted(set(VERSES)))
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
LATE_BAD_BYTE = b"a" * 70_000 + b"\xff" + b"a\n" * 10

CASES = [
    # tokenize
    Case("tokenize: missing corpus", "tokenize {p}/missing.txt", ("not found",)),
    Case("tokenize: corpus is a directory", "tokenize {p}/d", ("directory",), setup=folder("d")),
    Case("tokenize: empty corpus", "tokenize {p}/e.txt", ("empty",), setup=text("e.txt", "")),
    Case(
        "tokenize: blank corpus", "tokenize {p}/b.txt", ("empty",), setup=text("b.txt", " \n\n\t")
    ),
    Case(
        "tokenize: binary corpus",
        "tokenize {p}/b.bin",
        ("binary", "offset 1"),
        setup=text("b.bin", b"a\x00\x01\x02abc"),
    ),
    Case(
        "tokenize: invalid UTF-8",
        "tokenize {p}/u.txt",
        ("invalid UTF-8", "byte offset 10", "--replace-errors"),
        setup=text("u.txt", b"good text \xc3\x28 more"),
    ),
    Case(
        "tokenize: invalid UTF-8 far in",
        "tokenize {p}/u.txt",
        ("byte offset 70000",),
        setup=text("u.txt", LATE_BAD_BYTE),
    ),
    Case(
        "tokenize: --out is a folder of other files",
        "tokenize {p}/c.txt --out {p}/mine",
        ("not a charrnn dataset folder",),
        setup=lambda p: (text("c.txt", VERSES)(p), folder("mine", "notes.txt")(p)),
    ),
    Case(
        "tokenize: --vocab-size too small for the text",
        "tokenize {p}/c.txt --level bpe --vocab-size 100",
        ("--vocab-size 100 is too small",),
        setup=text("c.txt", VERSES),
    ),
    Case("tokenize: --min-freq 0", "tokenize x.txt --min-freq 0", ("--min-freq",), USAGE),
    Case("tokenize: unknown --unit", "tokenize x.txt --unit sentence", ("--unit",), USAGE),
    Case("tokenize: --max-vocab 3", "tokenize x.txt --max-vocab 3", ("--max-vocab",), USAGE),
    # train
    Case("train: missing corpus", "train {p}/missing.txt", ("not found",)),
    Case("train: corpus is a directory", "train {p}/d", ("directory",), setup=folder("d")),
    Case("train: empty corpus", "train {p}/e.txt", ("empty",), setup=text("e.txt", "")),
    Case(
        "train: binary corpus",
        "train {p}/b.bin",
        ("binary",),
        setup=text("b.bin", b"\x00\x01\x02abc"),
    ),
    Case(
        "train: invalid UTF-8",
        "train {p}/u.txt",
        ("byte offset 3",),
        setup=text("u.txt", b"abc\xff\n"),
    ),
    Case(
        "train: corpus too short for one batch",
        "train {p}/s.txt " + CK,
        ("too short for one batch", "--batch-size"),
        setup=text("s.txt", "too short\n"),
    ),
    Case("train: --layers 0", "train x.txt --layers 0", ("--layers",), USAGE),
    Case("train: --dropout 1.5", "train x.txt --dropout 1.5", ("--dropout",), USAGE),
    Case("train: unknown --cell", "train x.txt --cell transformer", ("--cell",), USAGE),
    Case("train: --time-budget soon", "train x.txt --time-budget soon", ("duration",), USAGE),
    Case("train: --time-budget 0", "train x.txt --time-budget 0s", ("positive",), USAGE),
    Case("train: --lr -1", "train x.txt --lr -1", ("--lr",), USAGE),
    Case("train: --min-lr-ratio 2", "train x.txt --min-lr-ratio 2", ("--min-lr-ratio",), USAGE),
    Case("train: --val-fraction 0", "train x.txt --val-fraction 0", ("--val-fraction",)),
    Case("train: --epochs 0", "train x.txt --epochs 0", ("--epochs",)),
    Case(
        "train: --device cuda without CUDA",
        "train {p}/c.txt --device cuda " + CK,
        ("--device cuda", "no CUDA"),
        setup=text("c.txt", VERSES),
        marks=(NO_CUDA,),
    ),
    Case(
        "train: unknown --device",
        "train {p}/c.txt --device tpu " + CK,
        ("unknown --device",),
        setup=text("c.txt", VERSES),
    ),
    Case("train: bad --run name", "train x.txt --run ../up " + CK, ("invalid run name",)),
    Case(
        "train: --run that exists",
        "train {p}/verses.txt --run verses " + CK,
        ("already exists", "--resume"),
        setup=text("verses.txt", VERSES * 20),
    ),
    Case(
        "train: --resume with no run",
        "train {p}/c.txt --resume --checkpoints {p}/none",
        ("no trained run",),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "train: --resume of an unknown run",
        "train {p}/c.txt --resume --run nope " + CK,
        ("no run named",),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "train: --resume on another corpus",
        "train {p}/other.txt --resume --run verses " + CK,
        ("corpus has changed",),
        setup=text("other.txt", VERSES * 30),
    ),
    Case(
        "train: --resume with another --lr",
        "train {p}/verses.txt --resume --run verses --lr 0.5 " + CK,
        ("--lr", "started with other values", "--max-steps"),
        setup=text("verses.txt", VERSES * 20),
    ),
    Case(
        "train: --from a run that does not exist",
        "train {p}/c.txt --from nope " + CK,
        ("no run named 'nope'",),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "train: --from a damaged run",
        "train {p}/c.txt --from verses " + CK,
        ("not a valid safetensors", "best.safetensors"),
        setup=lambda p: (text("c.txt", VERSES)(p), tamper(BEST, pickle.dumps([1.0]))(p)),
    ),
    Case(
        "train: --from a run of a newer format",
        "train {p}/c.txt --from verses " + CK,
        ("newer", "upgrade charrnn"),
        setup=lambda p: (text("c.txt", VERSES)(p), tamper(RUN_JSON, b'{"format_version": 99}')(p)),
    ),
    Case(
        "train: --from a run being trained",
        "train {p}/c.txt --from verses " + CK,
        ("is being trained", "wait for it"),
        setup=lambda p: (text("c.txt", VERSES)(p), hold_lock(p / "ck" / "verses")),
    ),
    Case(
        "train: --from with a dataset folder of another tokenizer",
        "train {p}/ds --from verses " + CK,
        ("encoded with another tokenizer", "give the text itself"),
        setup=lambda p: word_dataset(p, "ds"),
    ),
    Case(
        "train: --from with options that contradict it",
        "train {p}/c.txt --from verses --hidden 64 --cell gru " + CK,
        ("--cell gru (base: lstm)", "--hidden 64 (base: 32)", "leave these out"),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "train: --from with --resume",
        "train {p}/c.txt --from verses --resume " + CK,
        ("--from starts a new run", "--resume"),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "train: --checkpoints under a file",
        "train {p}/verses.txt --checkpoints {p}/verses.txt/ck --batch-size 4 --seq-len 16",
        ("cannot create the run folder",),
        setup=text("verses.txt", VERSES * 20),
    ),
    # sample
    Case("sample: no trained run", "sample --checkpoints {p}/none", ("no trained run",)),
    Case("sample: unknown run", "sample -c nope " + CK, ("no run named",)),
    Case(
        "sample: checkpoint is a folder of something else",
        "sample -c {p}/photos " + CK,
        ("not a charrnn run folder",),
        setup=folder("photos", "cat.jpg"),
    ),
    Case(
        "sample: checkpoint is a file of something else",
        "sample -c {p}/notes.txt " + CK,
        ("not a charrnn checkpoint",),
        setup=text("notes.txt", "hello"),
    ),
    Case(
        "sample: pickle in place of the weights",
        "sample " + CK,
        ("not a valid safetensors",),
        setup=tamper(BEST, pickle.dumps({"weights": [1.0]})),
    ),
    Case(
        "sample: run.json from the future",
        "sample " + CK,
        ("newer",),
        setup=tamper(RUN_JSON, b'{"format_version": 99}'),
    ),
    Case("sample: --temp -1", "sample --temp -1 " + CK, ("--temp",)),
    Case("sample: --temp nan", "sample --temp nan " + CK, ("--temp",)),
    Case("sample: --top-k 0", "sample --top-k 0 " + CK, ("--top-k",)),
    Case(
        "sample: --top-k larger than the vocabulary",
        "sample --top-k 100000 " + CK,
        ("--top-k", "larger than the vocabulary"),
    ),
    Case("sample: --top-p 0", "sample --top-p 0 " + CK, ("--top-p", "(0, 1]")),
    Case("sample: --top-p 1.5", "sample --top-p 1.5 " + CK, ("--top-p",)),
    Case("sample: --top-p nan", "sample --top-p nan " + CK, ("--top-p",)),
    Case("sample: --max-tokens 0", "sample --max-tokens 0 " + CK, ("--max-tokens",)),
    Case(
        "sample: --max-tokens absurd",
        "sample --max-tokens 1000000000000 " + CK,
        ("--max-tokens", "at most"),
    ),
    Case("sample: --length 0", "sample --stop length --length 0 " + CK, ("--length",)),
    Case(
        "sample: --length absurd",
        "sample --stop length --length 1000000000 " + CK,
        ("--length", "longest unit"),
    ),
    Case(
        "sample: --length without --stop length",
        "sample --length 5 " + CK,
        ("--length needs --stop length",),
    ),
    Case("sample: empty --prompt", "sample --prompt= " + CK, ("--prompt", "empty")),
    Case(
        "sample: --prompt of unknown symbols only",
        "sample --prompt 日本語 " + CK,
        ("--prompt", "does not know"),
    ),
    Case("sample: --min-p 1.5", "sample --min-p 1.5 " + CK, ("--min-p", "[0, 1]")),
    Case(
        "sample: --repeat-penalty 0.5", "sample --repeat-penalty 0.5 " + CK, ("--repeat-penalty",)
    ),
    Case("sample: --presence-penalty -1", "sample --presence-penalty -1 " + CK, ("--presence",)),
    Case("sample: --frequency-penalty -1", "sample --frequency-penalty -1 " + CK, ("--frequency",)),
    Case("sample: --repeat-window 0", "sample --repeat-window 0 " + CK, ("--repeat-window",)),
    Case("sample: --no-repeat-ngram -1", "sample --no-repeat-ngram -1 " + CK, ("--no-repeat",)),
    Case("sample: empty --stop-at", "sample --stop-at= " + CK, ("--stop-at", "empty")),
    Case("sample: --keep-stop without --stop-at", "sample --keep-stop " + CK, ("needs --stop-at",)),
    Case("sample: empty --ban", "sample --ban= " + CK, ("--ban", "empty")),
    Case(
        "sample: --ban of every token",
        "sample --stop halt --ban <unk> " + BAN_ALL + " " + CK,
        ("--ban leaves no token",),
    ),
    Case("sample: --ban of unknown symbols", "sample --ban 日 " + CK, ("--ban", "does not know")),
    Case("sample: --bias without a value", "sample --bias e " + CK, ("--bias", "TOKEN=VALUE")),
    Case("sample: --bias not a number", "sample --bias e=lots " + CK, ("--bias", "number")),
    Case("sample: --bias of several tokens", "sample --bias ab=1 " + CK, ("--bias", "one token")),
    Case("sample: --beam 0", "sample --beam 0 " + CK, ("--beam must be at least 1",)),
    Case("sample: --beam with --stop none", "sample --beam 3 --stop none " + CK, ("--beam",)),
    Case("sample: -n more than --beam", "sample --beam 2 -n 3 " + CK, ("-n 3", "--beam 2")),
    Case(
        "sample: --length-penalty nan", "sample --length-penalty nan " + CK, ("--length-penalty",)
    ),
    Case(
        "sample: --prompt-file missing",
        "sample --prompt-file {p}/none.txt " + CK,
        ("prompt file not found",),
    ),
    Case(
        "sample: --prompt-file is a folder",
        "sample --prompt-file {p}/d " + CK,
        ("prompt file is a folder",),
        setup=folder("d"),
    ),
    Case(
        "sample: --prompt-file empty",
        "sample --prompt-file {p}/e.txt " + CK,
        ("is empty",),
        setup=text("e.txt", ""),
    ),
    Case(
        "sample: --prompt-file invalid UTF-8",
        "sample --prompt-file {p}/u.txt " + CK,
        ("not valid UTF-8", "byte offset 3"),
        setup=text("u.txt", b"The\xff"),
    ),
    Case(
        "sample: empty stdin as --prompt-file", "sample --prompt-file - " + CK, ("standard input",)
    ),
    Case(
        "sample: --prompt and --prompt-file",
        "sample --prompt The --prompt-file {p}/p.txt " + CK,
        ("not both",),
        setup=text("p.txt", "The"),
    ),
    Case("sample: --interactive with -n 2", "sample -i -n 2 " + CK, ("--interactive", "-n")),
    Case("sample: --interactive with --beam", "sample -i --beam 2 " + CK, ("--interactive",)),
    Case(
        "sample: --interactive with --prompt-file -",
        "sample -i --prompt-file - " + CK,
        ("--interactive", "not -"),
    ),
    Case("sample: -n 0", "sample -n 0 " + CK, ("-n",), USAGE),
    Case(
        "sample: --adapt a folder",
        "sample --adapt {p}/d " + CK,
        ("text is a directory",),
        setup=folder("d"),
    ),
    Case("sample: unknown --stop", "sample --stop never " + CK, ("--stop",), USAGE),
    # score
    Case("score: nothing to score", "score " + CK, ("nothing to score",)),
    Case("score: empty sentence", "score The.cat. = " + CK, ("empty sentence", "argument 2")),
    Case("score: no trained run", "score hello --checkpoints {p}/none", ("no trained run",)),
    Case("score: --file missing", "score --file {p}/none.txt " + CK, ("not found",)),
    Case("score: --file is a folder", "score --file {p}/d " + CK, ("folder",), setup=folder("d")),
    Case(
        "score: --file invalid UTF-8",
        "score --file {p}/s.txt " + CK,
        ("not valid UTF-8", "byte offset 4"),
        setup=text("s.txt", b"abc\n\xff\n"),
    ),
    Case(
        "score: --file with no sentences",
        "score --file {p}/s.txt " + CK,
        ("has no sentences",),
        setup=text("s.txt", "\n  \n"),
    ),
    Case("score: empty stdin", "score --file - " + CK, ("standard input has no sentences",)),
    Case(
        "score: invalid UTF-8 on stdin",
        "score --file - " + CK,
        ("standard input", "byte offset 3"),
        stdin=b"abc\xfe\n",
    ),
    Case(
        "score: stdin interrupted (Ctrl-C)",
        "score --file - " + CK,
        ("interrupted while reading standard input",),
        INTERRUPTED,
        stdin=lambda: BrokenStdin(KeyboardInterrupt()),
    ),
    Case(
        "score: stdin read fails (broken pipe)",
        "score --file - " + CK,
        ("cannot read standard input", "Broken pipe"),
        stdin=lambda: BrokenStdin(BrokenPipeError(errno.EPIPE, "Broken pipe")),
    ),
    Case("score: --stop none", "score hello --stop none " + CK, ("needs a stopping rule",)),
    Case(
        "score: --file invalid UTF-8 with --jsonl",
        "score --file {p}/s.txt --jsonl " + CK,
        ("not valid UTF-8 at line 2", "byte offset 4"),
        setup=text("s.txt", b"abc\n\xff\n"),
    ),
    Case("score: --json and --jsonl", "score hello --json --jsonl " + CK, ("choose one",)),
    Case("score: --min-ppl 0", "score hello --min-ppl 0 " + CK, ("--min-ppl", "at least 1")),
    Case(
        "score: --min-ppl above --max-ppl",
        "score hello --min-ppl 50 --max-ppl 5 " + CK,
        ("no line can pass",),
    ),
    Case(
        "score: a filter with --per-token",
        "score hello --max-ppl 50 --per-token " + CK,
        ("--jsonl",),
    ),
    Case("score: unknown --bad-lines", "score hello --bad-lines go " + CK, ("--bad-lines",), USAGE),
    Case("score: --adapt missing", "score hello --adapt {p}/none.txt " + CK, ("not found",)),
    Case(
        "score: --adapt empty",
        "score hello --adapt {p}/e.txt " + CK,
        ("text is empty",),
        setup=text("e.txt", ""),
    ),
    # eval
    Case("eval: missing test file", "eval {p}/none.txt " + CK, ("test file not found",)),
    Case("eval: test file is a folder", "eval {p}/d " + CK, ("directory",), setup=folder("d")),
    Case(
        "eval: empty test file",
        "eval {p}/e.txt " + CK,
        ("test file is empty",),
        setup=text("e.txt", "\n \n"),
    ),
    Case(
        "eval: binary test file",
        "eval {p}/b.bin " + CK,
        ("test file looks binary", "offset 3"),
        setup=text("b.bin", b"abc\x00\x01"),
    ),
    Case(
        "eval: invalid UTF-8",
        "eval {p}/u.txt " + CK,
        ("invalid UTF-8 at byte offset 4", "--replace-errors"),
        setup=text("u.txt", b"abc\n\xff\n"),
    ),
    Case(
        "eval: no trained run",
        "eval {p}/c.txt --checkpoints {p}/none",
        ("no trained run",),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "eval: unknown run",
        "eval {p}/c.txt -c nope " + CK,
        ("no run named",),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "eval: --lr without --dynamic",
        "eval {p}/c.txt --lr 0.1 " + CK,
        ("--lr", "for --dynamic only"),
        setup=text("c.txt", VERSES),
    ),
    Case(
        "eval: --decay 1",
        "eval {p}/c.txt --dynamic --decay 1 " + CK,
        ("--decay must be a number in [0, 1)",),
        setup=text("c.txt", VERSES),
    ),
    Case("eval: --window 0", "eval x.txt --dynamic --window 0 " + CK, ("--window",), USAGE),
    Case(
        "eval: --device cuda without CUDA",
        "eval {p}/c.txt --device cuda " + CK,
        ("--device cuda", "no CUDA"),
        setup=text("c.txt", VERSES),
        marks=(NO_CUDA,),
    ),
    # runs, info
    Case(
        "runs: --checkpoints is a file",
        "runs --checkpoints {p}/notes.txt",
        ("is a file, not a folder",),
        setup=text("notes.txt", "mine\n"),
    ),
    Case("info: unknown run", "info nope " + CK, ("no run named",)),
    Case(
        "info: a folder of something else",
        "info {p}/photos " + CK,
        ("not a charrnn run folder",),
        setup=folder("photos", "cat.jpg"),
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` and a digest of its content."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        out[key] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_run(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES], ids=lambda c: c.id
)
def test_bad_input(case: Case, tmp_path: Path, trained_run: Path, monkeypatch):
    copy_run(trained_run, tmp_path / "ck" / "verses")
    if case.setup:
        case.setup(tmp_path)
    before = snapshot(tmp_path)
    stdin = case.stdin() if callable(case.stdin) else case.stdin
    real_stream = typer.testing.make_input_stream
    monkeypatch.setattr(
        typer.testing,
        "make_input_stream",
        lambda data, charset: data if hasattr(data, "read") else real_stream(data, charset),
    )
    args = [a.format(p=tmp_path, sp=" ") for a in case.args.split(" ")]
    args = ["" if a == "=" else a for a in args]  # "=" stands for an empty argument
    try:
        result = runner.invoke(app, args, input=stdin)
    finally:
        while HELD:
            os.close(HELD.pop())
    assert result.exit_code == case.code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:"), lines[0]
    for needle in case.needles:
        assert needle in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing written, nothing changed


def test_the_catalogue_is_large_and_documented():
    assert len(CASES) >= 30
    assert {c.id.split(":")[0] for c in CASES} >= {"tokenize", "train", "sample", "score", "eval"}
    docs = DOCS.read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| {c.id.split(': ', 1)[1]} |" not in docs]
    assert not missing, f"add to docs/errors.md: {missing}"


# == Round two: hostile inputs (issue 28) ===================================================
#
# Each case runs ``python -m charrnn`` as a real process (forked from tests/forkserver.py, so
# torch is imported once) and uses nothing but the command line and the public API, so that
# the cases hold whatever the package's modules are called. A case expects an exit status and
# exactly one line on stderr that matches a loose pattern naming the problem (the file and
# field, the option); no traceback, no hang, and no file changed but those it was asked to
# write. They specify the fixes of issue 28: until those are made, many of them fail.

CLASSES = {
    1: "an exception escapes as a traceback",
    2: "a file on disk of valid syntax but wrong types or values",
    3: "a special file or a symlink as the output, or a user's files in it",
    4: "a run overwritten or mismatched",
    5: "a corpus that changes or is a stream",
    6: "an unbounded read",
    7: "numbers at the edges, and messages that name a temporary file",
    8: "terminal escape sequences from a run's files",  # found in round two
}
OPTION = (1, 2)  # a value refused by the library (1) or by the command-line parser (2)


@dataclass(frozen=True)
class Hostile:
    id: str  # "N: what", N a key of CLASSES; listed in docs/errors.md
    argv: tuple[str, ...]  # run in a copy of the world folder (see ``world``)
    line: str | None  # pattern of the one stderr line when the exit status is not 0
    code: int | tuple[int, ...] = 1
    setup: Callable[[Path], object] | None = None
    stdin: Callable[[Path], Path] | str | None = None  # a file to read, or "closed"
    writes: tuple[str, ...] = ()  # patterns of the paths the command was asked to write
    check: Callable[[Path, str, str], object] | None = None  # (folder, stdout, stderr)
    timeout: float = 30.0


def _set_key(obj: Any, path: str, value: Any) -> Any:
    """``obj`` with the value at a dotted ``path`` (list indices as numbers) set or removed."""
    if not path:
        return value
    *parents, last = path.split(".")
    at = obj
    for k in parents:
        at = at[int(k) if isinstance(at, list) else k]
    key = int(last) if isinstance(at, list) else last
    if value is _DELETE:
        del at[key]
    else:
        at[key] = value
    return obj


_DELETE = object()
_RAW = "\u0000raw\u0000"


def jset(rel: str, path: str, value: Any = None, raw: str | None = None) -> Callable[[Path], None]:
    """Set a field of a JSON file; ``raw`` is JSON text for values Python cannot dump as such
    (1e400, NaN) or that are too deep for it."""

    def make(p: Path) -> None:
        obj = _set_key(json.loads((p / rel).read_text()), path, _RAW if raw else value)
        text = json.dumps(obj, indent=1)
        (p / rel).write_text(text.replace(json.dumps(_RAW), raw) if raw else text)

    return make


def _rewrite_safetensors(path: Path, change: Callable[[dict, dict], None]) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    change(meta, tensors)
    save_file(tensors, str(path), metadata=meta)


def meta_set(rel: str, path: str, value: Any = None, raw: str | None = None) -> Callable:
    """Set a field of the JSON metadata charrnn keeps in a safetensors file."""

    def change(meta: dict, tensors: dict) -> None:
        obj = _set_key(json.loads(meta["charrnn"]), path, _RAW if raw else value)
        text = json.dumps(obj)
        meta["charrnn"] = text.replace(json.dumps(_RAW), raw) if raw else text

    return lambda p: _rewrite_safetensors(p / rel, change)


def tensor_set(rel: str, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable:
    def change(meta: dict, tensors: dict) -> None:
        tensors[name] = fn(tensors[name]).contiguous()

    return lambda p: _rewrite_safetensors(p / rel, change)


def put(rel: str, content: str | bytes) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        path = p / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.is_file():
            path.unlink()
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return make


def append(rel: str, text: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        with (p / rel).open("a", encoding="utf-8") as f:
            f.write(text)

    return make


def remove(rel: str) -> Callable[[Path], None]:
    return lambda p: (p / rel).unlink()


def make_fifo(rel: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        (p / rel).unlink(missing_ok=True)
        os.mkfifo(p / rel)

    return make


def symlink(rel: str, target: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        (p / rel).unlink(missing_ok=True)
        os.symlink(target, p / rel)

    return make


def copy_file(src: str, dst: str) -> Callable[[Path], None]:
    return lambda p: shutil.copyfile(p / src, p / dst)


def swap_pieces(rel: str, i: int = 5, j: int = 6) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        tok = json.loads((p / rel).read_text())
        tok["pieces"][i], tok["pieces"][j] = tok["pieces"][j], tok["pieces"][i]
        (p / rel).write_text(json.dumps(tok))

    return make


def rewrite_tokens(rel: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable:
    def make(p: Path) -> None:
        dtype = json.loads((p / rel).parent.joinpath("dataset.json").read_text())["dtype"]
        fn(np.fromfile(p / rel, dtype=dtype)).tofile(p / rel)

    return make


def save_units(rel: str, units: Callable[[np.ndarray], np.ndarray]) -> Callable:
    return lambda p: np.save(p / rel, units(np.load(p / rel)), allow_pickle=True)


def in_cache(fn: Callable[[Path], None]) -> Callable[[Path], None]:
    """Apply ``fn`` to the cached encoding of verses.txt (the world's cache holds one)."""
    return lambda p: fn(next((p / "cache" / "datasets").glob("verses-*")))


def steps(*fns: Callable[[Path], object]) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        for fn in fns:
            fn(p)

    return make


def deep(n: int = 100_000) -> str:
    return "[" * n + "]" * n


def device_node(rel: str) -> Callable[[Path], None]:
    """A private copy of /dev/null (the same device numbers), where the system allows it."""

    def make(p: Path) -> None:
        try:
            os.mknod(p / rel, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("this system does not let the tests make a device node")

    return make


def feed_fifo(path: Path, data: bytes, times: int = 1, seconds: float = 20.0) -> None:
    """Write ``data`` into the FIFO ``path`` each time a reader opens it, ``times`` times, for
    at most ``seconds`` (a daemon thread: a command that never reads does not block the test)."""

    def feed() -> None:
        deadline = time.monotonic() + seconds
        for _ in range(times):
            while time.monotonic() < deadline:
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no reader
                    break
                except OSError:
                    time.sleep(0.01)
            else:
                return
            os.set_blocking(fd, True)
            with contextlib.suppress(OSError):
                os.write(fd, data)
            os.close(fd)

    threading.Thread(target=feed, daemon=True).start()


def fifo_corpus(rel: str, times: int = 3) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        os.mkfifo(p / rel)
        feed_fifo(p / rel, (VERSES * 20).encode(), times)

    return make


def piped(data: bytes) -> Callable[[Path], Path]:
    """Standard input that is a pipe holding ``data``, as ``cat FILE | charrnn ...`` gives: the
    read end of a pipe of this process, which the command opens through /proc."""

    def make(p: Path) -> Path:
        read, write = os.pipe()
        os.write(write, data)  # a small text fits in the pipe's buffer
        os.close(write)
        return Path(f"/proc/{os.getpid()}/fd/{read}")

    return make


def stdout_has(pattern: str) -> Callable[[Path, str, str], None]:
    def check(p: Path, out: str, err: str) -> None:
        assert re.search(pattern, out, re.IGNORECASE | re.DOTALL), out[-2000:]

    return check


def lists_damaged(run: str, pattern: str) -> Callable[[Path, str, str], None]:
    """``runs`` lists every run, and says of ``run`` what is wrong with it."""

    def check(p: Path, out: str, err: str) -> None:
        assert "bpe2" in out, out  # the others are listed as ever
        assert re.search(rf"{run}\b.*{pattern}", out, re.IGNORECASE), out

    return check


def still_a_link(rel: str, target: str) -> Callable[[Path, str, str], None]:
    def check(p: Path, out: str, err: str) -> None:
        assert (p / rel).is_symlink(), f"{rel} was a symlink and is one no more"
        got = (p / target).read_bytes()  # text, or an image (info --plot)
        assert got not in (b"", b"mine\n"), f"{target} did not get the output"

    return check


def still_a_device(rel: str) -> Callable[[Path, str, str], None]:
    def check(p: Path, out: str, err: str) -> None:
        assert stat.S_ISCHR(os.lstat(p / rel).st_mode), f"the device node {rel} was replaced"

    return check


MINE = "mine\n"  # what a user's file holds before a command writes it


def names_no_temporary_file(p: Path, out: str, err: str) -> None:
    assert not re.search(r"\.tmp\b|/\.[^/\s]+\.[a-z0-9_]{8}", err), err


def json_sample_is_drawn(p: Path, out: str, err: str) -> None:
    [s] = json.loads(out)  # json.loads refuses NaN and Infinity only with parse_constant
    assert s["tokens"] >= 1 and s["text"], s
    assert math.isfinite(s["log_prob"]), s


def strict_json(p: Path, out: str, err: str) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    json.loads(out, parse_constant=refuse)


def strict_json_if_any(p: Path, out: str, err: str) -> None:
    if out.strip():
        strict_json(p, out, err)


def no_escapes(p: Path, out: str, err: str) -> None:
    assert "\x1b" not in out and "\x07" not in out, repr(out[-500:])
    assert "\x1b" not in err and "\x07" not in err, repr(err)


CKS = ("--checkpoints", "ck")
VERSES_RUN = ("-c", "verses", *CKS)
SMALL = ("--hidden", "32", "--embed", "16", "--batch-size", "4", "--seq-len", "16")
SMALL += ("--max-steps", "2", "--time-budget", "none", "--stop-fit", "0", "--level", "char")
SAMPLE = ("sample", "--max-tokens", "5", "--seed", "1", *VERSES_RUN)
SCORE = ("score", "the cat sat", *VERSES_RUN)
INFO = ("info", "verses", *CKS)
RUNS = ("runs", *CKS)
RESUME = ("train", "verses.txt", "--run", "verses", "--resume", "--max-steps", "42", *CKS)
FROM_DS = ("train", "ds", "--run", "fromds", "--stop-fit", "0", *SMALL[:-2], *CKS)
BPE = ("-c", "bpe", *CKS)
RUN = "ck/verses/"
RUN_WRITES = (
    r"^ck/verses/(last|best)\.safetensors$",
    r"^ck/verses/(metrics\.jsonl|stopfit\.json)$",
)
NAN = float("nan")

HOSTILE = [
    # 1: an exception escapes as a traceback
    Hostile(
        "1: sample --seed beyond 64 bits",
        ("sample", "--seed", "1180591620717411303424", "--max-tokens", "5", *VERSES_RUN),
        r"--seed",
        OPTION,
    ),
    Hostile(
        "1: train --seed beyond 64 bits",
        ("train", "verses.txt", "--seed", str(2**70), *SMALL, *CKS),
        r"--seed",
        OPTION,
    ),
    Hostile(
        "1: score an undecodable byte from the shell (bpe)",
        ("score", "ab\udcffcd", *BPE),
        r"UTF-8|undecodable|cannot be decoded",
    ),
    Hostile(
        "1: sample --prompt with an undecodable byte (bpe)",
        ("sample", "--prompt", "ab\udcffcd", "--max-tokens", "5", *BPE),
        r"--prompt.*(UTF-8|decod)",
    ),
    Hostile(
        "1: score --file - with standard input closed",
        ("score", "--file", "-", *VERSES_RUN),
        r"standard input",
        stdin="closed",
    ),
    Hostile(
        "1: tokenize --vocab-size past what sentencepiece takes",
        ("tokenize", "verses.txt", "--level", "bpe", "--vocab-size", "1000000000000", "-o", "x"),
        r"--vocab-size",
        OPTION,
    ),
    # 2: a file on disk of valid syntax but wrong types or values
    Hostile(
        "2: run.json model.hidden 32.0",
        SAMPLE,
        r"run\.json.*hidden|hidden.*run\.json",
        setup=jset(RUN + "run.json", "model.hidden", 32.0),
    ),
    Hostile(
        "2: run.json model.layers 10**6 (refused before it is built)",
        SAMPLE,
        r"run\.json.*layers|layers.*run\.json",
        setup=jset(RUN + "run.json", "model.layers", 10**6),
        timeout=10,
    ),
    Hostile(
        "2: run.json model.max_len 10**15",
        SAMPLE,
        r"run\.json.*max_len|max_len.*run\.json",
        setup=jset(RUN + "run.json", "model.max_len", 10**15),
    ),
    Hostile(
        "2: run.json model.max_len 1e400 (no warnings on stderr)",
        SAMPLE,
        r"max_len",
        setup=jset(RUN + "run.json", "model.max_len", raw="1e400"),
    ),
    Hostile(
        "2: run.json data is a list: runs lists the run as damaged",
        RUNS,
        None,
        0,
        setup=jset(RUN + "run.json", "data", []),
        check=lists_damaged("verses", r"run\.json"),
    ),
    Hostile(
        "2: best.safetensors val_loss is a string: runs lists the run as damaged",
        RUNS,
        None,
        0,
        setup=meta_set(RUN + "best.safetensors", "val_loss", "x"),
        check=lists_damaged("verses", r"best\.safetensors"),
    ),
    Hostile(
        "2: last.safetensors loop.step 1e400: runs lists the run as damaged",
        RUNS,
        None,
        0,
        setup=meta_set(RUN + "last.safetensors", "loop.step", raw="1e400"),
        check=lists_damaged("verses", r"last\.safetensors"),
    ),
    Hostile(
        "2: last.safetensors loop.elapsed 1e400 (info)",
        INFO,
        r"last\.safetensors.*elapsed|elapsed.*last\.safetensors",
        setup=meta_set(RUN + "last.safetensors", "loop.elapsed", raw="1e400"),
    ),
    Hostile(
        "2: best.safetensors step is a string (info)",
        INFO,
        r"best\.safetensors.*step|step.*best\.safetensors",
        setup=meta_set(RUN + "best.safetensors", "step", "abc"),
    ),
    Hostile(
        "2: NaN in the weights",
        SAMPLE,
        r"best\.safetensors.*(nan|finite)|(nan|finite).*best\.safetensors",
        setup=tensor_set(RUN + "best.safetensors", "model.head.weight", lambda t: t.fill_(NAN)),
    ),
    Hostile(
        "2: NaN in the start state (score)",
        SCORE,
        r"best\.safetensors.*(nan|finite|start_h)|(nan|finite|start_h).*best\.safetensors",
        setup=tensor_set(RUN + "best.safetensors", "model.start_h", lambda t: t.fill_(NAN)),
    ),
    Hostile(
        "2: integer weights",
        SAMPLE,
        r"best\.safetensors.*(dtype|int32|float)|(dtype|int32|float).*best\.safetensors",
        setup=tensor_set(RUN + "best.safetensors", "model.head.weight", lambda t: t.int()),
    ),
    Hostile(
        "2: tokenizer.json sample_chars 1e400 (bpe)",
        ("sample", "--max-tokens", "5", *BPE),
        r"tokenizer\.json.*sample_chars|sample_chars.*tokenizer\.json",
        setup=jset("ck/bpe/tokenizer.json", "sample_chars", raw="1e400"),
    ),
    Hostile(
        "2: a tokenizer piece that is a lone surrogate",
        ("sample", "--temp", "0", "--max-tokens", "60", *VERSES_RUN),
        r"tokenizer\.json",
        setup=jset(RUN + "tokenizer.json", "pieces.5", "\ud800"),
    ),
    Hostile(
        "2: stopfit.json n 1e400: info names the problem",
        INFO,
        None,
        0,
        setup=jset(RUN + "stopfit.json", "n", raw="1e400"),
        check=stdout_has(r"stopfit\.json"),
    ),
    Hostile(
        "2: stopfit.json nested 100000 deep: info names the problem",
        INFO,
        None,
        0,
        setup=put(RUN + "stopfit.json", deep()),
        check=stdout_has(r"stopfit\.json"),
    ),
    Hostile(
        "2: metrics.jsonl a line nested 100000 deep: info skips it",
        INFO,
        None,
        0,
        setup=append(RUN + "metrics.jsonl", deep() + "\n"),
    ),
    Hostile(
        "2: metrics.jsonl step 1e400: info skips it",
        INFO,
        None,
        0,
        setup=append(RUN + "metrics.jsonl", '{"step": 1e400, "loss": 1}\n'),
    ),
    Hostile(
        "2: dataset.json n_tokens -5",
        FROM_DS,
        r"dataset\.json.*n_tokens|n_tokens.*dataset\.json",
        setup=jset("ds/dataset.json", "n_tokens", -5),
    ),
    Hostile(
        "2: dataset.json n_tokens past the end of tokens.bin",
        FROM_DS,
        r"tokens\.bin|n_tokens",
        setup=jset("ds/dataset.json", "n_tokens", 10**15),
    ),
    Hostile(
        "2: dataset.json config is a list",
        FROM_DS,
        r"dataset\.json.*config|config.*dataset\.json",
        setup=jset("ds/dataset.json", "config", []),
    ),
    Hostile(
        "2: dataset.json dtype uint8 (a token file read at half width)",
        FROM_DS,
        r"dtype|tokens\.bin",
        setup=jset("ds/dataset.json", "dtype", "uint8"),
    ),
    Hostile(
        "2: units.npy a pickled object array",
        FROM_DS,
        r"units\.npy",
        setup=lambda p: np.save(p / "ds/units.npy", np.array([{}], dtype=object)),
    ),
    Hostile(
        "2: units.npy of one dimension",
        FROM_DS,
        r"units\.npy",
        setup=save_units("ds/units.npy", lambda u: u[:, 0]),
    ),
    Hostile(
        "2: tokens.bin ids beyond the vocabulary (and no run left behind)",
        FROM_DS,
        r"tokens\.bin|vocabulary",
        setup=rewrite_tokens("ds/tokens.bin", lambda a: np.where(a == 5, 60000, a).astype(a.dtype)),
    ),
    Hostile(
        "2: a cached encoding cut short is encoded again",
        ("tokenize", "verses.txt", "--level", "char"),
        None,
        0,
        setup=in_cache(lambda e: (e / "tokens.bin").write_bytes(b"\x05\x00" * 9)),
        writes=(r"^cache/",),
    ),
    Hostile(
        "2: best.safetensors is a FIFO (refused, not waited on)",
        SAMPLE,
        r"best\.safetensors",
        setup=make_fifo(RUN + "best.safetensors"),
        timeout=10,
    ),
    Hostile(
        "2: last.safetensors is a FIFO: runs lists the run as damaged",
        RUNS,
        None,
        0,
        setup=make_fifo(RUN + "last.safetensors"),
        check=lists_damaged("verses", r"last\.safetensors"),
        timeout=10,
    ),
    # 3: a special file or a symlink as the output, or a user's files in it
    Hostile(
        "3: sample --output onto a symlink writes its target",
        (*SAMPLE, "--output", "out.txt"),
        None,
        0,
        setup=steps(put("target.txt", "mine\n"), symlink("out.txt", "target.txt")),
        writes=(r"^target\.txt$",),
        check=still_a_link("out.txt", "target.txt"),
    ),
    Hostile(
        "3: sample --output onto a dangling symlink makes its target",
        (*SAMPLE, "--output", "out.txt"),
        None,
        0,
        setup=symlink("out.txt", "made.txt"),
        writes=(r"^made\.txt$",),
        check=still_a_link("out.txt", "made.txt"),
    ),
    Hostile(
        "3: sample --output onto a device node writes to the device",
        (*SAMPLE, "--output", "null"),
        None,
        0,
        setup=device_node("null"),
        check=still_a_device("null"),
    ),
    Hostile(
        "3: info --plot onto a symlink writes its target",
        ("info", "verses", "--plot", "loss.png", *CKS),
        None,
        0,
        setup=steps(put("mine.png", "mine\n"), symlink("loss.png", "mine.png")),
        writes=(r"^mine\.png$",),
        check=still_a_link("loss.png", "mine.png"),
    ),
    Hostile(
        "3: sample --output keeps a private file private",
        (*SAMPLE, "--output", "secret.txt"),
        None,
        0,
        setup=lambda p: (put("secret.txt", "mine\n")(p), os.chmod(p / "secret.txt", 0o600)),
        writes=(r"^secret\.txt$",),
        check=lambda p, out, err: oct(os.stat(p / "secret.txt").st_mode & 0o777) == "0o600",
    ),
    Hostile(
        "3: tokenize --out a dataset folder that holds the user's files",
        ("tokenize", "verses.txt", "--unit", "line", "--out", "ds"),
        r"\bds\b",
        setup=put("ds/notes.txt", "mine\n"),
    ),
    # 4: a run overwritten or mismatched
    Hostile(
        "4: train --run over a run whose last.safetensors is lost",
        ("train", "verses.txt", "--run", "verses", *SMALL, *CKS),
        r"verses.*(best\.safetensors|trained|weights|exists)",
        setup=steps(remove(RUN + "last.safetensors"), remove(RUN + "stopfit.json")),
    ),
    Hostile(
        "4: train --resume of a run whose last.safetensors is lost",
        RESUME,
        r"last\.safetensors",
        setup=steps(remove(RUN + "last.safetensors"), remove(RUN + "stopfit.json")),
        check=lambda p, out, err: "without --resume" not in err,  # never invite the overwrite
    ),
    Hostile(
        "4: --run onto a folder of the user's files that holds a best.safetensors",
        ("train", "verses.txt", "--run", "mine", *SMALL, *CKS),
        r"mine",
        setup=steps(
            put("ck/mine/best.safetensors", b"my weights"), put("ck/mine/metrics.jsonl", "{}\n")
        ),
    ),
    Hostile(
        "4: two pieces swapped in tokenizer.json",
        SAMPLE,
        r"tokenizer",
        setup=swap_pieces(RUN + "tokenizer.json"),
    ),
    Hostile(
        "4: two pieces swapped in tokenizer.json (resume)",
        RESUME,
        r"tokenizer",
        setup=swap_pieces(RUN + "tokenizer.json"),
    ),
    Hostile(
        "4: another bpe model of the same size",
        ("sample", "--max-tokens", "5", *BPE),
        r"tokenizer",
        setup=steps(
            copy_file("ck/bpe2/tokenizer.json", "ck/bpe/tokenizer.json"),
            copy_file("ck/bpe2/tokenizer.model", "ck/bpe/tokenizer.model"),
        ),
    ),
    Hostile(
        "4: another run's weights of the same shape",
        ("score", "the cat", *BPE),
        r"tokenizer|weights|best\.safetensors",
        setup=copy_file("ck/bpe2/best.safetensors", "ck/bpe/best.safetensors"),
    ),
    Hostile(
        "4: resume on another corpus once run.json has lost the corpus hash",
        ("train", "other.txt", "--run", "verses", "--resume", "--max-steps", "42", *CKS),
        r"corpus",
        setup=jset(RUN + "run.json", "data.hash", _DELETE),
    ),
    Hostile(
        "4: a dataset whose tokenizer.json has two pieces swapped",
        FROM_DS,
        r"tokenizer",
        setup=swap_pieces("ds/tokenizer.json"),
    ),
    # 5: a corpus that changes or is a stream
    Hostile(
        "5: tokenize a FIFO (read once, or refused; never waited on)",
        ("tokenize", "c.fifo", "--out", "x"),
        r"c\.fifo",
        (0, 1),
        setup=fifo_corpus("c.fifo"),
        writes=(r"^x(/|$)",),
        check=lambda p, out, err: "error" in err or "3,700" in out,
        timeout=10,
    ),
    Hostile(
        "5: tokenize /dev/stdin from a pipe",
        ("tokenize", "/dev/stdin", "--out", "x"),
        None,
        0,
        stdin=piped((VERSES * 20).encode()),
        writes=(r"^x(/|$)",),
        check=stdout_has(r"3,700"),
        timeout=20,
    ),
    Hostile(
        "5: train /dev/stdin from a pipe",
        ("train", "/dev/stdin", *SMALL, *CKS),
        None,
        0,
        stdin=piped((VERSES * 20).encode()),
        writes=(r"^ck/stdin",),
        timeout=30,
    ),
    Hostile(
        "5: score --file /dev/stdin from a pipe",
        ("score", "--file", "/dev/stdin", *VERSES_RUN),
        None,
        0,
        stdin=piped(b"the cat sat\nthe dog sat\n"),
        check=stdout_has(r"the dog sat"),
    ),
    Hostile(
        "5: score --file a FIFO, as <(...) gives",
        ("score", "--file", "s.fifo", *VERSES_RUN),
        None,
        0,
        setup=lambda p: (os.mkfifo(p / "s.fifo"), feed_fifo(p / "s.fifo", b"the dog sat\n")),
        check=stdout_has(r"the dog sat"),
        timeout=10,
    ),
    Hostile(
        "5: a corpus whose first 64 KiB are blank lines",
        ("tokenize", "c.txt", "--out", "x"),
        None,
        0,
        setup=put("c.txt", "\n" * 65536 + VERSES * 20),
        writes=(r"^x(/|$)",),
    ),
    Hostile(
        "5: a NUL byte past the first 64 KiB",
        ("tokenize", "c.txt", "--out", "x"),
        r"binary|NUL",
        setup=put("c.txt", VERSES * 400 + "\x00\n"),
    ),
    # 7: numbers at the edges, and messages that name a temporary file
    Hostile(
        "7: sample --top-p 1e-300 keeps the likeliest token",
        ("sample", "--top-p", "1e-300", "--max-tokens", "20", "--seed", "1", "--json", *VERSES_RUN),
        None,
        0,
        check=json_sample_is_drawn,
    ),
    Hostile(
        "7: runs --json with a NaN validation loss prints JSON",
        ("runs", "--json", *CKS),
        None,
        0,
        setup=meta_set(RUN + "best.safetensors", "val_loss", raw="NaN"),
        check=strict_json,
    ),
    Hostile(
        "7: score --json of a sentence past the longest unit under --stop length",
        ("score", "x" * 400, "--stop", "length", "--json", *VERSES_RUN),
        r"longest|length",
        (0, 1),
        check=strict_json_if_any,
    ),
    Hostile(
        "7: train --run with a trailing newline",
        ("train", "verses.txt", "--run", "x\n", *SMALL, *CKS),
        r"invalid run name",
    ),
    Hostile(
        "7: sample --output into a missing folder names the user's path",
        (*SAMPLE, "--output", "nofolder/out.txt"),
        r"nofolder/out\.txt",
        check=names_no_temporary_file,
    ),
    Hostile(
        "7: sample --output onto a folder names the user's path",
        (*SAMPLE, "--output", "ck"),
        r"\bck\b",
        check=names_no_temporary_file,
    ),
    Hostile(
        "7: info --plot into a missing folder names the user's path",
        ("info", "verses", "--plot", "nofolder/loss.png", *CKS),
        r"nofolder/loss\.png",
        check=names_no_temporary_file,
    ),
    # 8: terminal escape sequences from a run's files
    Hostile(
        "8: runs shows a run folder's name without its escape sequences",
        RUNS,
        None,
        0,
        setup=lambda p: shutil.copytree(p / "ck/verses", p / "ck/evil\x1b]0;owned\x07\x1b[2J"),
        check=no_escapes,
    ),
    Hostile(
        "8: info shows run.json's corpus without its escape sequences",
        INFO,
        None,
        0,
        setup=jset(RUN + "run.json", "corpus", "\x1b]52;c;b3duZWQ=\x07"),
        check=no_escapes,
    ),
    Hostile(
        "8: an error line shows a run name without its escape sequences",
        ("sample", "-c", "\x1b[2Jgone", *CKS),
        r"no run named",
        check=no_escapes,
    ),
    Hostile(
        "8: info shows a tokenizer piece without its escape sequence",
        INFO,
        None,
        0,
        setup=jset(RUN + "tokenizer.json", "pieces.5", "\x1b"),
        check=no_escapes,
    ),
    # -- more of each class, added with the fixes -------------------------------------------
    Hostile(
        "1: sample --seed below -2**63",
        ("sample", "--seed", str(-(2**63) - 1), "--max-tokens", "5", *VERSES_RUN),
        r"--seed",
        OPTION,
    ),
    Hostile(
        "1: train --stop-fit past its cap",
        ("train", "verses.txt", *SMALL[:-4], "--stop-fit", str(10**9), "--level", "char", *CKS),
        r"--stop-fit",
        OPTION,
    ),
    Hostile(
        "2: run.json format_version 4.0",
        SAMPLE,
        r"run\.json.*format_version",
        setup=jset(RUN + "run.json", "format_version", 4.0),
    ),
    Hostile(
        "2: run.json train.warmup_steps is text (resume)",
        RESUME,
        r"run\.json.*warmup_steps",
        setup=jset(RUN + "run.json", "train.warmup_steps", "x"),
    ),
    Hostile(
        "2: last.safetensors loop.best_loss NaN (resume)",
        RESUME,
        r"last\.safetensors.*best_loss",
        setup=meta_set(RUN + "last.safetensors", "loop.best_loss", raw="NaN"),
    ),
    Hostile(
        "2: dataset.json n_tokens is text",
        FROM_DS,
        r"dataset\.json.*n_tokens",
        setup=jset("ds/dataset.json", "n_tokens", "abc"),
    ),
    Hostile(
        "2: units.npy starts beyond the tokens",
        FROM_DS,
        r"units\.npy",
        setup=save_units("ds/units.npy", lambda u: u + np.array([10**6, 0, 0])),
    ),
    Hostile(
        "2: tokens.bin all <pad>",
        FROM_DS,
        r"tokens\.bin",
        setup=rewrite_tokens("ds/tokens.bin", np.zeros_like),
    ),
    Hostile(
        "2: a cached unit index of garbage is encoded again",
        ("tokenize", "verses.txt", "--level", "char"),
        None,
        0,
        setup=in_cache(lambda e: (e / "units.npy").write_bytes(b"junk")),
        writes=(r"^cache/",),
    ),
    Hostile(
        "2: stopfit.json is a FIFO: info names it",
        INFO,
        None,
        0,
        setup=make_fifo(RUN + "stopfit.json"),
        check=stdout_has(r"stopfit\.json"),
        timeout=10,
    ),
    Hostile(
        "3: sample --output onto a hard-linked file writes both names",
        (*SAMPLE, "--output", "a.txt"),
        None,
        0,
        setup=lambda p: (put("a.txt", "mine\n")(p), os.link(p / "a.txt", p / "b.txt")),
        writes=(r"^[ab]\.txt$",),
        check=lambda p, out, err: (
            (p / "b.txt").read_text() == (p / "a.txt").read_text() != "mine\n"
        ),
    ),
    Hostile(
        "3: sample --output onto the run's own weights",
        (*SAMPLE, "--output", RUN + "best.safetensors"),
        r"best\.safetensors.*verses",
    ),
    Hostile(
        "3: tokenize --out a dataset folder that holds a subfolder",
        ("tokenize", "verses.txt", "--unit", "line", "--out", "ds"),
        r"\bds\b.*mine/",
        setup=put("ds/mine/a.txt", "mine\n"),
    ),
    Hostile(
        "4: weights of today's format that do not name their tokenizer",
        SAMPLE,
        r"tokenizer",
        setup=meta_set(RUN + "best.safetensors", "tokenizer_hash", _DELETE),
    ),
    Hostile(
        "4: resume once run.json names another level (another tokenizer)",
        RESUME,
        r"tokenizer",
        setup=jset(RUN + "run.json", "data.config.tokenizer.level", "word"),
        writes=(r"^cache/",),  # the corpus is encoded as asked, then refused
    ),
    Hostile(
        "5: a corpus that is a symlink to a named FIFO",
        ("tokenize", "c.txt", "--out", "x"),
        r"c\.txt.*FIFO",
        setup=lambda p: (os.mkfifo(p / "f"), os.symlink("f", p / "c.txt")),
        timeout=10,
    ),
    Hostile(
        "5: a corpus blank past its first MiB is empty",
        ("tokenize", "c.txt", "--out", "x"),
        r"empty",
        setup=put("c.txt", "\n" * (1 << 20) + " \n" * 10),
    ),
    Hostile(
        "5: score --file /dev/urandom is not text",
        ("score", "--file", "/dev/urandom", *VERSES_RUN),
        r"/dev/urandom.*(not text|NUL|UTF-8)",
    ),
    Hostile(
        "7: sample --top-p 5e-324 keeps the likeliest token",
        ("sample", "--top-p", "5e-324", "--max-tokens", "20", "--seed", "1", "--json", *VERSES_RUN),
        None,
        0,
        check=json_sample_is_drawn,
    ),
    Hostile(
        "7: info --json with a NaN in metrics.jsonl prints JSON",
        ("info", "verses", "--json", *CKS),
        None,
        0,
        setup=append(RUN + "metrics.jsonl", '{"final_val_loss": NaN, "final_val_bpc": Infinity}\n'),
        check=strict_json,
    ),
]


@pytest.fixture(scope="module")
def hostile_server():
    server = ForkServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, trained_run: Path, hostile_server: ForkServer
) -> Path:
    """The folder every hostile case starts from (copied afresh for each):

    verses.txt, other.txt   a corpus, and another
    ck/verses               a char-level run (the session's trained run)
    ck/bpe, ck/bpe2         bpe runs of the same vocabulary size, on verses and on other.txt
    ds/                     verses.txt encoded at char level by tokenize --out
    cache/                  the cache of tokenize verses.txt --level char
    """
    root = tmp_path_factory.mktemp("world")
    (root / "verses.txt").write_text(VERSES * 20, encoding="utf-8")
    (root / "other.txt").write_text(VERSES.upper() * 20, encoding="utf-8")
    copy_run(trained_run, root / "ck" / "verses")
    tiny = dict(hidden=32, embed=16, batch_size=4, seq_len=16, max_steps=4, time_budget=None)
    tiny.update(stop_fit=0, sample_every=0, evals=2, eval_tokens=256, device="cpu")
    old = os.environ.get("CHARRNN_CACHE")
    os.environ["CHARRNN_CACHE"] = str(tmp_path_factory.mktemp("bpe-cache"))
    try:
        for run, corpus in (("bpe", "verses.txt"), ("bpe2", "other.txt")):
            charrnn.train(
                root / corpus, run=run, checkpoints=root / "ck", level="bpe", vocab_size=300, **tiny
            )
    finally:
        os.environ.pop("CHARRNN_CACHE") if old is None else os.environ.update(CHARRNN_CACHE=old)
    for argv in (
        ("tokenize", "verses.txt", "--level", "char", "--out", "ds"),
        ("tokenize", "verses.txt", "--level", "char"),
    ):
        r = hostile_server.run(
            list(argv), root / "log", root, {"CHARRNN_CACHE": str(root / "cache")}
        )
        assert r["rc"] == 0, (root / "log").read_text()
    (root / "log").unlink()
    return root


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` and what it is: a file's digest and mode, a link's target, a
    special file's kind (never opened: a FIFO would block)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                what = "link to " + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                what = f"file {digest} {stat.S_IMODE(st.st_mode):o}"
            else:
                what = "dir" if stat.S_ISDIR(st.st_mode) else f"special {stat.S_IFMT(st.st_mode)}"
            out[str(path.relative_to(root))] = what
    return out


def one_error_line(err: str, pattern: str) -> str:
    """The one line on stderr, checked to start with error: and to match ``pattern``."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:"), lines[0]
    assert re.search(pattern, lines[0], re.IGNORECASE), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", HOSTILE, ids=lambda c: c.id)
def test_hostile_input(case: Hostile, tmp_path: Path, world: Path, hostile_server: ForkServer):
    folder = tmp_path / "w"
    shutil.copytree(world, folder, symlinks=True)
    if case.setup:
        case.setup(folder)
    stdin = case.stdin(folder) if callable(case.stdin) else None
    before = tree(folder)
    out, err = tmp_path / "out", tmp_path / "err"
    r = hostile_server.run(
        list(case.argv),
        out,
        folder,
        {"CHARRNN_CACHE": str(folder / "cache")},
        timeout=case.timeout,
        err=err,
        stdin=stdin,
        close_stdin=case.stdin == "closed",
    )
    if isinstance(stdin, Path) and stdin.parent.name == "fd":
        os.close(int(stdin.name))  # the pipe's read end, which the command has opened
    stdout, stderr = out.read_text(errors="replace"), err.read_text(errors="replace")
    assert r["rc"] != -9, f"still running after {case.timeout:g} s (a hang): {stderr[-2000:]}"
    assert "Traceback" not in stderr, "\n".join(stderr.strip().splitlines()[-3:])
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    assert r["rc"] in codes, f"exit {r['rc']}: {stderr[-3000:]}"
    if r["rc"] == 0:
        assert "error:" not in stderr, stderr
    else:
        one_error_line(stderr, case.line or "")
    after = tree(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    unasked = [k for k in changed if not any(re.search(w, k) for w in case.writes)]
    assert not unasked, {k: (before.get(k), after.get(k)) for k in unasked}
    if case.check:
        assert case.check(folder, stdout, stderr) is not False, (stdout[-2000:], stderr)


def test_hostile_cases_cover_every_class_and_are_documented():
    assert len(HOSTILE) + len(HOSTILE_API) + len(HOSTILE_SPECIAL) >= 40
    covered = {int(c.id.split(":")[0]) for c in [*HOSTILE, *HOSTILE_API]} | {
        int(c.split(":")[0]) for c in HOSTILE_SPECIAL
    }
    assert covered == set(CLASSES), set(CLASSES) - covered
    docs = DOCS.read_text(encoding="utf-8")
    ids = [c.id for c in [*HOSTILE, *HOSTILE_API]] + list(HOSTILE_SPECIAL)
    missing = [i for i in ids if f"| {i.split(': ', 1)[1]} |" not in docs]
    assert not missing, f"add to docs/errors.md: {missing}"


# -- the Python API refuses as the command line does: the library's own error, one line ------


@dataclass(frozen=True)
class HostileCall:
    id: str  # "N: what", N a key of CLASSES; listed in docs/errors.md
    call: Callable[[Path], object]  # given the world folder
    message: str  # pattern of the CharRNNError's message


def _verses(world: Path, **kw: Any) -> Any:
    return charrnn.load("verses", world / "ck", **kw)


def _bpe(world: Path) -> Any:
    return charrnn.load("bpe", world / "ck")


def _api_train(world: Path, **kw: Any) -> Any:
    tiny = dict(hidden=32, embed=16, batch_size=4, seq_len=16, max_steps=2, time_budget=None)
    tiny.update(stop_fit=0, level="char", device="cpu")
    return charrnn.train(world / "verses.txt", checkpoints=world / "ck", **{**tiny, **kw})


HOSTILE_API = [
    HostileCall("1: load(device='tpu')", lambda w: _verses(w, device="tpu"), r"device"),
    HostileCall(
        "1: load(which='middle')", lambda w: _verses(w, which="middle"), r"which|best|last"
    ),
    HostileCall(
        "1: score(stop='never')", lambda w: _verses(w).score("the cat", stop="never"), r"stop"
    ),
    HostileCall(
        "1: next_tokens(stop='bogus')",
        lambda w: _verses(w).next_tokens("the cat", stop="bogus"),
        r"stop",
    ),
    HostileCall(
        "1: sample(prompt=a lone surrogate) (bpe)",
        lambda w: _bpe(w).sample("ab\udcff", max_tokens=5),
        r"prompt|surrogate|UTF-8|encod",
    ),
    HostileCall(
        "1: score(a lone surrogate) (bpe)",
        lambda w: _bpe(w).score("ab\udcff"),
        r"surrogate|UTF-8|encod",
    ),
    HostileCall(
        "1: sample(seed=2**64)", lambda w: _verses(w).sample(seed=2**64, max_tokens=5), r"seed"
    ),
    HostileCall(
        "1: samples(n) past the command line's cap",
        lambda w: _verses(w).samples(100_001, max_tokens=1),
        r"100,?000|at most",
    ),
    HostileCall("1: train(hidden=10**9)", lambda w: _api_train(w, hidden=10**9), r"hidden|memory"),
    HostileCall("7: train(run='x\\n')", lambda w: _api_train(w, run="x\n"), r"invalid run name"),
    HostileCall("1: load(device='cuda:99')", lambda w: _verses(w, device="cuda:99"), r"device"),
    HostileCall("1: train(min_freq=0)", lambda w: _api_train(w, min_freq=0), r"min-freq|min_freq"),
    HostileCall("1: train(layers=10**6)", lambda w: _api_train(w, layers=10**6), r"layers"),
    HostileCall(
        "1: sample(seed='x'), a wrong type", lambda w: _verses(w).sample(seed="x"), r"seed"
    ),
    HostileCall(
        "1: next_tokens(a lone surrogate) (bpe)",
        lambda w: _bpe(w).next_tokens("ab\ud800"),
        r"surrogate",
    ),
]


@pytest.mark.parametrize("case", HOSTILE_API, ids=lambda c: c.id)
def test_hostile_api_call(case: HostileCall, tmp_path: Path, world: Path):
    folder = tmp_path / "w"
    shutil.copytree(world, folder, symlinks=True)
    before = tree(folder)
    with pytest.raises(CharRNNError) as caught:
        case.call(folder)
    message = str(caught.value)
    assert "\n" not in message and re.search(case.message, message, re.IGNORECASE), message
    assert tree(folder) == before


# -- cases that need more than one command: memory ceilings, FIFOs, a corpus that changes ----

# Each names the test that checks it; listed in docs/errors.md with the others.
HOSTILE_SPECIAL = {
    "1: a model too large for memory": "test_out_of_memory_is_one_line",
    "3: sample --output onto a FIFO reaches its reader": "test_output_onto_a_fifo_reaches_reader",
    "5: a corpus rewritten while tokenize encodes it": "test_corpus_rewritten_while_it_is_encoded",
    "6: score --file - on an endless stream": "test_score_reads_an_endless_stream_bounded",
    "6: score --file - on an endless stream of sentences": "test_score_stream_of_sentences_bounded",
    "6: run.json that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: tokenizer.model that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: tokenizer.json that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: stopfit.json that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: metrics.jsonl that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: dataset.json that never ends (/dev/zero)": "test_endless_file_in_bounded_memory",
    "6: score --file /dev/zero": "test_endless_file_in_bounded_memory",
    "2: random bytes and JSON values in a run folder's files": "test_damaged_run_loads_or_raises",
    "2: random bytes and JSON values in a run's records: runs and info": (
        "test_damaged_run_is_listed_or_refused"
    ),
    "2: random bytes and JSON values in a dataset folder's files": (
        "test_damaged_dataset_trains_or_raises"
    ),
}

_PEAK = """
import atexit, runpy, sys
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmPeak:"):
            sys.stderr.write("VMPEAK %d\\n" % (int(line.split()[1]) * 1024))
atexit.register(peak)
sys.argv = ["charrnn", *sys.argv[1:]]
runpy.run_module("charrnn", run_name="__main__", alter_sys=True)
"""


def charrnn_process(
    argv: Sequence[str], cwd: Path, ceiling: int | None = None, **kw: Any
) -> subprocess.Popen:
    """``python -m charrnn ARGV`` in a process of its own, its address space capped at
    ``ceiling`` bytes: whatever it does, it cannot eat the machine."""

    def limit() -> None:
        if ceiling is not None:
            resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))

    env = cli_env(CHARRNN_CACHE=str(cwd / "cache"))
    return subprocess.Popen(
        [sys.executable, "-m", "charrnn", *argv],
        cwd=cwd,
        env=env,
        preexec_fn=limit,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )


@pytest.fixture(scope="module")
def address_space(world: Path) -> int:
    """The peak address space of ``charrnn score`` on one sentence: torch and a loaded run.
    The memory ceilings below are this plus a margin, so they hold on any build of torch."""
    r = subprocess.run(
        [sys.executable, "-c", _PEAK, "score", "the cat sat", *VERSES_RUN],
        cwd=world,
        env=cli_env(CHARRNN_CACHE=str(world / "cache")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return int(re.search(r"VMPEAK (\d+)", r.stderr).group(1))


def _fresh(world: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "w"
    shutil.copytree(world, folder, symlinks=True)
    return folder


def test_out_of_memory_is_one_line(tmp_path: Path, world: Path, address_space: int):
    """Class 1: a model the machine cannot hold is refused in one line, and no run is left."""
    folder = _fresh(world, tmp_path)
    before = tree(folder)
    huge = ("--hidden", "16384", "--embed", "16384", "--layers", "16", "--level", "char")
    argv = ("train", "verses.txt", *huge, "--max-steps", "1", "--time-budget", "none", *CKS)
    proc = charrnn_process(argv, folder, ceiling=address_space + (1 << 30), text=True)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    one_error_line(err, r"memory")
    assert {k for k in tree(folder).keys() - before.keys() if not k.startswith("cache")} == set()


def test_output_onto_a_fifo_reaches_reader(tmp_path: Path, world: Path, hostile_server: ForkServer):
    """Class 3: --output onto a FIFO writes into the FIFO (its reader gets the samples); the
    FIFO stays."""
    folder = _fresh(world, tmp_path)
    os.mkfifo(folder / "out.fifo")
    reader = os.open(folder / "out.fifo", os.O_RDONLY | os.O_NONBLOCK)  # there is a reader
    try:
        r = hostile_server.run(
            [*SAMPLE, "--output", "out.fifo"], tmp_path / "log", folder, {}, timeout=30
        )
        got = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 1 << 16):
                got += chunk
    finally:
        os.close(reader)
    log = (tmp_path / "log").read_text()
    assert r["rc"] == 0, log
    assert stat.S_ISFIFO(os.lstat(folder / "out.fifo").st_mode), "the FIFO was replaced"
    assert got.strip(), "the FIFO's reader got nothing"


@pytest.mark.slow
def test_corpus_rewritten_while_it_is_encoded(
    tmp_path: Path, world: Path, hostile_server: ForkServer
):
    """Class 5: a corpus rewritten while tokenize encodes it, then put back: the cache must not
    serve the other text for the file as it is (it is keyed by what was encoded)."""
    folder = tmp_path / "w"
    folder.mkdir()
    rng = np.random.default_rng(1)
    words = np.array(VERSES.lower().replace(".", " ").split())
    lines = [" ".join(rng.choice(words, 12)) for _ in range(400_000)]
    first = "\n".join(lines) + "\n"
    other = "\n".join(ln.upper() for ln in lines[:200_000]) + "\n"
    corpus = folder / "corpus.txt"

    def replace_with(text: str) -> None:
        corpus.write_text(text)  # in place, as an editor saving over it or `cat b > a` does

    replace_with(first)
    env = {"CHARRNN_CACHE": str(folder / "cache")}
    argv = ["tokenize", "corpus.txt", "--level", "word"]
    done: list[dict] = []
    worker = threading.Thread(
        target=lambda: done.append(hostile_server.run(argv, tmp_path / "first", folder, env))
    )
    worker.start()
    deadline = time.monotonic() + 60
    while not list((folder / "cache").glob("datasets/.corpus-*")) and time.monotonic() < deadline:
        time.sleep(0.005)  # the encoding has begun: the file was read and hashed
    replace_with(other)
    worker.join()
    replace_with(first)
    assert done and done[0]["rc"] == 0, (tmp_path / "first").read_text()
    again = hostile_server.run(argv, tmp_path / "again", folder, env)
    fresh = hostile_server.run([*argv, "--out", "fresh"], tmp_path / "fresh", folder, env)
    assert again["rc"] == fresh["rc"] == 0

    def figures(log: str) -> list[str]:
        text = (tmp_path / log).read_text()
        return re.findall(r"(characters|tokens|vocabulary)\s*│\s*([\d,]+)", text)

    assert figures("again") == figures("fresh")


def _feed(proc: subprocess.Popen, lines: Iterator[bytes]) -> threading.Thread:
    """Write ``lines`` to the process's stdin from a thread, until it stops reading."""

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            for line in lines:
                proc.stdin.write(line)
            proc.stdin.close()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_score_reads_an_endless_stream_bounded(tmp_path: Path, world: Path, address_space: int):
    """Class 6: ``score --file -`` reads its input as a stream. Two GiB of input (long blank
    lines, with a sentence every 1024th line, cheap to read and skip) go through a process
    whose memory is capped at half a GiB above what scoring one sentence takes."""
    folder = _fresh(world, tmp_path)
    blank, sentence = b" " * (1 << 16) + b"\n", b"the cat sat on the mat.\n"
    n = 1 << 15  # lines: a cap, so that the test ends
    lines = (sentence if i % 1024 == 0 else blank for i in range(n))
    argv = ("score", "--file", "-", "--json", *VERSES_RUN)
    proc = charrnn_process(argv, folder, address_space + (1 << 29), stdin=subprocess.PIPE)
    feeder = _feed(proc, lines)
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=300)
    feeder.join(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    assert out.count(b'"log_prob"') == n // 1024


@pytest.mark.slow
def test_score_stream_of_sentences_bounded(tmp_path: Path, world: Path, address_space: int):
    """Class 6, as the issue found it: `yes "the cat sat" | charrnn score --file -`, capped at a
    million lines, under a quarter of a GiB more than one sentence takes."""
    folder = _fresh(world, tmp_path)
    n = 1_000_000
    argv = ("score", "--file", "-", "--json", *VERSES_RUN)
    proc = charrnn_process(argv, folder, address_space + (1 << 28), stdin=subprocess.PIPE)
    feeder = _feed(proc, (b"the cat sat\n" for _ in range(n)))
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(timeout=1800)
    feeder.join(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    assert out.count(b'"log_prob"') == n


ENDLESS = [
    ("run.json", RUN + "run.json", SAMPLE, 1, r"run\.json"),
    ("tokenizer.model", "ck/bpe/tokenizer.model", ("sample", *BPE), 1, r"tokenizer\.model"),
    ("tokenizer.json", RUN + "tokenizer.json", SAMPLE, 1, r"tokenizer\.json"),
    ("stopfit.json", RUN + "stopfit.json", INFO, 0, r"stopfit\.json"),
    ("metrics.jsonl", RUN + "metrics.jsonl", INFO, 0, r"metrics\.jsonl"),
    ("dataset.json", "ds/dataset.json", FROM_DS, 1, r"dataset\.json"),
    ("score --file", None, ("score", "--file", "/dev/zero", *VERSES_RUN), 1, r"/dev/zero"),
]


@pytest.mark.parametrize("name, rel, argv, code, pattern", ENDLESS, ids=[e[0] for e in ENDLESS])
def test_endless_file_in_bounded_memory(
    name: str,
    rel: str | None,
    argv: tuple,
    code: int,
    pattern: str,
    tmp_path: Path,
    world: Path,
    address_space: int,
):
    """Class 6: a file of a run or a dataset that never ends (/dev/zero, through a symlink) is
    refused, or shown as damaged, in bounded memory; so is a sentence file that never ends."""
    folder = _fresh(world, tmp_path)
    if rel:
        symlink(rel, "/dev/zero")(folder)
    before = tree(folder)
    proc = charrnn_process(argv, folder, address_space + (1 << 29), text=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    if code:
        one_error_line(err, pattern)
    else:
        assert "Traceback" not in err and re.search(pattern, out), (out[-2000:], err[-2000:])
    assert tree(folder) == before


# -- property: whatever a run's or a dataset's files hold, loading it gives a model or the
# library's own error. Values are drawn for the fields the files really have, so that most
# examples reach the code past the first checks.

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
DAMAGE = settings(
    max_examples=40,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # a failure is reported, not shrunk
    suppress_health_check=[HealthCheck.too_slow],
)


def _paths(obj: Any, prefix: str = "") -> list[str]:
    """Every dotted path into a JSON value (list indices as numbers), the root ('') first."""
    out = [prefix]
    items = (
        obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    )
    for k, v in items:
        out += _paths(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _damage(data: st.DataObject, path: Path, under: str = "") -> None:
    """Random bytes in place of the file, or a random JSON value in one of its fields (those
    under ``under``; in the charrnn metadata of a safetensors file). A metrics log gets a line
    of either appended."""
    if data.draw(st.booleans(), label="random bytes"):
        junk = data.draw(st.binary(max_size=400), label="bytes")
        path.write_bytes(path.read_bytes() + junk if path.suffix == ".jsonl" else junk)
        return
    value = data.draw(JSON_VALUES, label="value")
    if path.suffix == ".jsonl":
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(value) + "\n")
        return
    if path.suffix == ".safetensors":

        def change(meta: dict, tensors: dict) -> None:
            obj = json.loads(meta["charrnn"])
            at = data.draw(st.sampled_from(_paths(obj)), label="field")
            meta["charrnn"] = json.dumps(_set_key(obj, at, value))

        _rewrite_safetensors(path, change)
        return
    obj = json.loads(path.read_text())
    fields = [f for f in _paths(obj) if f.startswith(under)]
    at = data.draw(st.sampled_from(fields), label="field")
    path.write_text(json.dumps(_set_key(obj, at, value)))


@contextlib.contextmanager
def bounded(seconds: int = 30, memory: int = 2 << 30) -> Iterator[None]:
    """A hang becomes a TimeoutError and a runaway allocation a MemoryError (the test fails
    either way) instead of stalling the suite or eating the machine."""

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    status = Path("/proc/self/status").read_text().splitlines()
    vm = next(int(ln.split()[1]) * 1024 for ln in status if ln.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    previous = signal.signal(signal.SIGALRM, alarm)
    resource.setrlimit(resource.RLIMIT_AS, (vm + memory, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# What loading a run reads: run.json's model config and format version, the tokenizer, the
# weights and their metadata (the other fields of run.json are records, read by runs and info).
LOADED = {"run.json": "model", "tokenizer.json": "", "best.safetensors": "", "last.safetensors": ""}


@settings(DAMAGE, max_examples=300)  # a load takes milliseconds
@given(data=st.data())
def test_damaged_run_loads_or_raises(data: st.DataObject, world: Path):
    """charrnn.load(folder) of a run with one damaged file gives a model that scores and
    samples, or raises the library's own error."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "verses"
        shutil.copytree(world / "ck" / "verses", run)
        name = data.draw(st.sampled_from(sorted(LOADED)), label="file")
        _damage(data, run / name, LOADED[name])
        with bounded():
            try:
                model = charrnn.load(run)
                model.score("the cat sat")
                model.sample(max_tokens=5, seed=0)
            except CharRNNError:
                pass


RECORDS = ["run.json", "stopfit.json", "metrics.jsonl", "best.safetensors", "last.safetensors"]


@settings(DAMAGE, max_examples=40)
@given(data=st.data())
def test_damaged_run_is_listed_or_refused(
    data: st.DataObject, world: Path, hostile_server: ForkServer
):
    """A run with one damaged record: ``runs`` lists it among the others (exit 0), and ``info``
    shows it or refuses it in one line; neither hangs nor shows a traceback."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for run in ("verses", "bpe"):
            shutil.copytree(world / "ck" / run, folder / "ck" / run)
        _damage(data, folder / RUN / data.draw(st.sampled_from(RECORDS), label="file"))
        for argv in (RUNS, INFO):
            r = hostile_server.run(
                list(argv), folder / "out", folder, {}, timeout=10, err=folder / "err"
            )
            err = (folder / "err").read_text(errors="replace")
            assert r["rc"] != -9, f"{argv[0]} still running after 15 s (a hang)"
            assert "Traceback" not in err, "\n".join(err.strip().splitlines()[-3:])
            if argv is RUNS or r["rc"] != 0:
                assert r["rc"] == (0 if argv is RUNS else 1), err
            if r["rc"]:
                one_error_line(err, r"")


DATASET_FILES = ["dataset.json", "tokenizer.json", "units.npy", "tokens.bin"]


@settings(DAMAGE, max_examples=25)
@given(data=st.data())
def test_damaged_dataset_trains_or_raises(data: st.DataObject, world: Path):
    with tempfile.TemporaryDirectory() as tmp:
        ds = Path(tmp) / "ds"
        shutil.copytree(world / "ds", ds)
        name = data.draw(st.sampled_from(DATASET_FILES), label="file")
        if name.endswith((".npy", ".bin")):  # binary: random bytes, or a random array in it
            if data.draw(st.booleans(), label="random bytes"):
                (ds / name).write_bytes(data.draw(st.binary(max_size=400), label="bytes"))
            else:
                n = data.draw(st.integers(0, 300), label="length")
                ints = data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=6))
                array = np.resize(np.array(ints, dtype=np.int64), n)
                np.save(ds / name, array.reshape(-1, 3) if n % 3 == 0 else array)
                if name == "tokens.bin":
                    os.replace(ds / "tokens.bin.npy", ds / name)
        else:
            _damage(data, ds / name)
        tiny = dict(hidden=16, embed=8, batch_size=2, seq_len=8, max_steps=1, time_budget=None)
        tiny.update(stop_fit=0, sample_every=0, evals=1, eval_tokens=64, device="cpu")
        with bounded(), contextlib.suppress(CharRNNError):
            charrnn.train(ds, run="p", checkpoints=Path(tmp) / "ck", **tiny)
