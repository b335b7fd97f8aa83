"""The Python API: charrnn.load, Model.sample / score / next_tokens, charrnn.train."""

import contextlib
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import charrnn
from charrnn.config import Cell, Stop
from charrnn.errors import ConfigError
from charrnn.score import score
from charrnn.tokenizers import EOS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(trained_run):
    return charrnn.load(trained_run)


def readme_section(title: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end > 0 else None]


def readme_example() -> str:
    section = readme_section("Python")
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


def quickstart_run() -> str:
    """The run the README's quickstart makes: it is named after the corpus it trains on."""
    corpus = re.search(r"^\s+charrnn train (\S+)", readme_section("Quickstart"), re.M)
    return Path(corpus.group(1)).stem  # type: ignore[union-attr]


def test_the_readme_example_runs_as_written(trained_run, tmp_path, monkeypatch):
    code = readme_example()
    assert len([ln for ln in code.splitlines() if ln.strip()]) == 5
    # It must run as printed after the quickstart: it loads that run, by name or as the latest.
    loaded = re.search(r'charrnn\.load\((?:"([^"]+)")?\)', code)
    assert loaded and loaded.group(1) in (None, quickstart_run()), "load the quickstart's run"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / quickstart_run()).symlink_to(trained_run, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = printed.getvalue().strip().splitlines()
    log_probs = [float(x) for x in lines if re.fullmatch(r"-\d+\.\d+(e[-+]?\d+)?", x)]
    assert len(log_probs) == 1 and log_probs[0] < 0
    assert "NextToken(" in lines[-1]


def test_import_is_light_and_version_needs_no_torch():
    code = "import sys, charrnn; print(charrnn.__version__, 'torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stdout.split() == [charrnn.__version__, "False"]
    code = (
        "import sys; sys.argv = ['charrnn', '--version']; from charrnn.__main__ import main; "
        "main(); print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.stdout.split() == ["charrnn", charrnn.__version__, "False"]


def test_train_is_the_api_function():
    import charrnn.api

    assert charrnn.train is charrnn.api.train
    assert charrnn.load is charrnn.api.load and charrnn.Model is charrnn.api.Model


def test_sample_is_text_samples_carry_log_probs(model):
    text = model.sample(prompt="The", temperature=0.5, seed=3, max_tokens=40)
    assert isinstance(text, str) and text.startswith("The")
    assert text == model.sample(prompt="The", temperature=0.5, seed=3, max_tokens=40)
    samples = model.samples(3, stop="length", length=9, seed=1)
    assert [len(s.tokens) for s in samples] == [9, 9, 9]
    assert all(s.log_prob < 0 for s in samples)
    with pytest.raises(ConfigError, match="stop rule"):
        model.sample(stop="sometimes")
    with pytest.raises(ConfigError, match="--temp"):
        model.sample(temperature=-1)


def test_stream_yields_the_sample(model):
    stream = model.stream("The", n=2, seed=4, max_tokens=30)
    pieces = list(stream)
    assert "".join(p.text for p in pieces if p.index == 0) == stream.samples[0].text


def test_score_one_or_many(model, trained_run):
    one = model.score("The cat sat.")
    many = model.score(["The cat sat.", "The dog sat."], stop=Stop.eos)
    assert one.log_prob == many[0].log_prob < 0
    direct = score(model.module, model.tokenizer, ["The dog sat."])[0]
    assert math.isclose(direct.log_prob, many[1].log_prob)


def test_next_tokens_agree_with_the_score(model):
    candidates = model.next_tokens("The ca", k=5)
    assert len(candidates) == 5
    probs = [c.prob for c in candidates]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    best = candidates[0]
    term = model.score("The ca" + best.piece).terms[6]  # the 7th token of the sentence
    assert term.piece == best.piece
    assert math.isclose(math.exp(term.log_prob), best.prob, rel_tol=1e-4)
    # halt and length draw tokens only: the end marker is never a candidate there
    vocab = model.tokenizer.vocab_size
    assert all(c.id != EOS for c in model.next_tokens("The cat sat.", k=vocab, stop="halt"))
    with pytest.raises(ConfigError):
        model.next_tokens("The", k=0)


def test_train_takes_options_by_name(corpus, tmp_path):
    m = charrnn.train(
        corpus,
        run="tiny",
        checkpoints=tmp_path,
        level="word",
        cell="gru",
        layers=1,
        hidden=16,
        embed=8,
        seq_len=8,
        batch_size=2,
        max_steps=3,
        sample_every=0,
        device="cpu",
    )
    assert m.name == "tiny" and m.level == "word" and m.config.cell is Cell.gru
    assert m.result is not None and m.result.steps == 3
    assert (tmp_path / "tiny" / "best.safetensors").exists()
    assert "tiny" in repr(m)


def test_train_refuses_unknown_options(corpus, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(ConfigError, match="unknown option"):
        charrnn.train(corpus, checkpoints=ck, hiden=16)
    with pytest.raises(ConfigError, match="cell='transformer'"):
        charrnn.train(corpus, checkpoints=ck, cell="transformer")
    assert not ck.exists()  # nothing was started


def test_the_api_refuses_a_prompt_the_cli_refuses(model, trained_run):
    """Whatever the CLI refuses, the Python API refuses with the same error and message."""
    from typer.testing import CliRunner

    from charrnn.cli import app

    prompt = "\u4e2d\u6587\u5b57"  # not one of these is in the run's vocabulary
    r = CliRunner().invoke(app, ["sample", "-c", str(trained_run), "--prompt", prompt])
    assert r.exit_code == 1
    message = r.output.strip().removeprefix("error: ")
    assert message == "--prompt has only symbols this model does not know"
    for call in (
        lambda: model.sample(prompt=prompt),
        lambda: model.samples(2, prompt),
        lambda: list(model.stream(prompt)),
    ):
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value) == message
