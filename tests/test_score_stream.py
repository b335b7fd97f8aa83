"""`charrnn score` as a filter: --jsonl as the lines are read, perplexity ranges, bad lines, and
a stream that never ends scored in bounded memory."""

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.cli.output import json_text
from charrnn.lines import Line, iter_line_chunks

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
LINES = [
    "The cat sat on the mat.",
    "",
    "Rain fell on the quiet town.",
    "Zq xv kk jj.",
    "   ",
    "The sun rose over the hill.",
    "Snow lay on the old roof, \u65e5\u672c.",
    "A bird sang in the tree.",
]


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def ck(trained_run: Path) -> list[str]:
    return ["-c", trained_run.name, "--checkpoints", str(trained_run.parent)]


@pytest.fixture
def sentences(tmp_path: Path) -> Path:
    path = tmp_path / "s.txt"
    path.write_text("\n".join(LINES) + "\n", encoding="utf-8")
    return path


def jsonl(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_jsonl_is_the_json_list_line_for_line(ck, sentences):
    listed = run("score", "-f", sentences, *ck, "--json", "--per-token")
    streamed = run("score", "-f", sentences, *ck, "--jsonl", "--per-token")
    assert listed.exit_code == 0 and streamed.exit_code == 0, streamed.output
    assert jsonl(streamed.stdout) == json.loads(listed.stdout)
    numbers = [d["line"] for d in jsonl(streamed.stdout)]
    assert numbers == [i + 1 for i, s in enumerate(LINES) if s.strip()]  # blank lines skipped
    first = jsonl(streamed.stdout)[0]
    assert first["text"] == LINES[0] and first["tokens"] == len(LINES[0])
    assert {"log_prob", "unknown", "perplexity", "bits_per_char", "terms"} <= set(first)
    # stdin, read as it comes, gives the same lines
    piped = run("score", "-f", "-", *ck, "--jsonl", "--per-token", input=sentences.read_bytes())
    assert piped.stdout == streamed.stdout


def test_a_filter_keeps_exactly_the_lines_in_range(ck, sentences):
    scored = jsonl(run("score", "-f", sentences, *ck, "--jsonl").stdout)
    ppl = sorted(d["perplexity"] for d in scored)
    lo, hi = (ppl[1] + ppl[2]) / 2, (ppl[-3] + ppl[-2]) / 2  # two lines out at each end
    kept = run("score", "-f", sentences, *ck, "--min-ppl", lo, "--max-ppl", hi)
    assert kept.exit_code == 0, kept.output
    want = [d["text"] for d in scored if lo <= d["perplexity"] <= hi]
    assert len(want) == len(scored) - 4
    assert kept.stdout.splitlines() == want  # the lines themselves, in input order
    above = run("score", "-f", sentences, *ck, "--min-ppl", ppl[-1], "--jsonl")
    assert [d["text"] for d in jsonl(above.stdout)] == [
        d["text"] for d in scored if d["perplexity"] == ppl[-1]
    ]


def test_a_bad_line_stops_the_stream_after_the_lines_before_it(ck, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"The cat sat.\nThe \xff dog.\nThe sun rose.\n")
    stopped = run("score", "-f", path, *ck, "--jsonl")
    assert stopped.exit_code == 1
    assert [d["line"] for d in jsonl(stopped.stdout)] == [1]
    assert "not valid UTF-8 at line 2 (byte offset 17)" in stopped.stderr
    skipped = run("score", "-f", path, *ck, "--jsonl", "--bad-lines", "skip")
    assert skipped.exit_code == 0
    assert [d["line"] for d in jsonl(skipped.stdout)] == [1, 3]
    assert "skipped:" in skipped.stderr and "line 2" in skipped.stderr
    listed = run("score", "-f", path, *ck, "--json", "--bad-lines", "skip")
    assert [d["line"] for d in json.loads(listed.stdout)] == [1, 3]


def test_json_never_writes_nan_or_infinity():
    text = json_text({"log_prob": float("-inf"), "x": [float("nan"), 1.5]}, indent=None)
    assert json.loads(text) == {"log_prob": None, "x": [None, 1.5]}
    assert "Infinity" not in text and "NaN" not in text


def test_line_reader_across_reads(tmp_path):
    path = tmp_path / "s.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntw\xc3\xa9\n\n\xffbad\nlast")
    want = [Line(1, "one"), Line(2, "tw\u00e9"), Line(3, ""), Line(4, None, 14), Line(5, "last")]
    for size in (1, 2, 3, 5, 64):
        chunks = list(iter_line_chunks(path, read_bytes=size))
        assert [line for chunk in chunks for line in chunk] == want, size


def _memory_ceiling() -> None:
    """Address space for the import of torch and a tiny model, and little more."""
    resource.setrlimit(resource.RLIMIT_AS, (1200 << 20, 1200 << 20))


def test_an_endless_stream_is_scored_as_it_comes_in_bounded_memory(trained_run):
    """The scorer answers while its input is still being written (by a feeder that would
    write 400 MB, far past the ceiling, were it all read first)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "charrnn", "score", "-f", "-", "--jsonl", "-c", str(trained_run)]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_memory_ceiling,
    )
    watchdog = threading.Timer(300, proc.kill)  # a hung child fails the test, never hangs it
    watchdog.start()
    block = b"".join(b"The cat sat on the mat number %d.\n" % i for i in range(1000))

    def feed() -> None:
        try:
            for _ in range(400_000_000 // len(block)):
                proc.stdin.write(block)
            proc.stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the child was stopped: the test has what it wanted

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        answers = [proc.stdout.readline() for _ in range(3000)]
        still_feeding = feeder.is_alive()
    finally:
        proc.kill()
        proc.wait()
        watchdog.cancel()
    assert all(answers), proc.stderr.read().decode()[-500:]
    assert still_feeding  # the answers came before the input ended
    assert [json.loads(a)["line"] for a in answers] == list(range(1, 3001))
