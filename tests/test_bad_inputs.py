"""A catalogue of bad inputs, every subcommand: each gets its exit code and one line on stderr
that names the problem; no traceback, and no file changed. docs/errors.md lists them all."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import typer.testing
from typer.testing import CliRunner

from charrnn.checkpoint import BEST, RUN_JSON
from charrnn.cli import app
from tests.conftest import VERSES

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
    Case("sample: -n 0", "sample -n 0 " + CK, ("-n",), USAGE),
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
    args = [a.format(p=tmp_path) for a in case.args.split(" ")]
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
    assert {c.id.split(":")[0] for c in CASES} >= {"tokenize", "train", "sample", "score"}
    docs = DOCS.read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| {c.id.split(': ', 1)[1]} |" not in docs]
    assert not missing, f"add to docs/errors.md: {missing}"
