"""`charrnn eval` and dynamic evaluation: a whole held-out text read as the run was trained,
its figure equal to training's own; learning from a text while reading it, the run untouched."""

import hashlib
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn import api
from charrnn.checkpoint import BEST, read_meta, read_run_json
from charrnn.cli import app
from charrnn.config import AdaptConfig, AdaptRule
from charrnn.errors import ConfigError, CorpusError
from tests.conftest import VERSES

runner = CliRunner()
REPEATING = "Snow fell on the old bird. The moon sang over the quiet mat.\n" * 40


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model(trained_run: Path) -> api.Model:
    return api.load(trained_run)


def validation_text(run: Path) -> str:
    """The text of a run's validation split: the corpus's last paragraphs (see conftest)."""
    n = read_run_json(run)["data"]["val_units"]
    paragraphs = [p.strip("\n") for p in (VERSES * 20).split("\n\n") if p.strip()]
    return "\n\n".join(paragraphs[-n:]) + "\n"


def files_of(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_eval_of_the_validation_text_is_trainings_figure(model, trained_run, tmp_path):
    path = tmp_path / "val.txt"
    path.write_text(validation_text(trained_run), encoding="utf-8")
    meta = read_meta(trained_run / BEST)
    assert meta["full"] is True  # the whole split, not a sample of it
    e = model.evaluate(path)
    assert model.loaded.model.log_temperature.item() != 0.0  # fitted, and read as training read it
    assert e.loss == pytest.approx(meta["val_loss"], rel=1e-6)
    assert e.bits_per_char == pytest.approx(meta["val_bpc"], rel=1e-6)
    assert e.bits_per_byte == pytest.approx(meta["val_bpb"], rel=1e-6)
    assert e.units == read_run_json(trained_run)["data"]["val_units"]
    assert e.perplexity == pytest.approx(math.exp(e.loss))
    # the command line prints the same figure
    r = run("eval", path, "-c", trained_run, "--json")
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert shown["loss"] == pytest.approx(meta["val_loss"], rel=1e-6)
    assert shown["dynamic"] is None and shown["level"] == "char" and shown["unit"] == "paragraph"


def test_eval_counts_units_words_and_unknown_symbols(model, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("The cat sat.\n\nZ\u00e9bra \u65e5\u672c.\n", encoding="utf-8")
    e = model.evaluate(path)
    assert (e.units, e.words) == (2, 5)
    assert e.unknown >= 3  # Z, é and the two kanji are not in the verses
    assert e.chars == len("The cat sat.") + 1 + len("Z\u00e9bra \u65e5\u672c.") + 1
    assert e.bytes == e.chars + 1 + 4  # é is two bytes, each kanji three
    assert e.bits_per_byte < e.bits_per_char


def test_dynamic_evaluation_learns_a_repeating_text_and_changes_no_file(
    model, trained_run, tmp_path
):
    path = tmp_path / "repeats.txt"
    path.write_text(REPEATING, encoding="utf-8")
    before = files_of(trained_run)
    static = model.evaluate(path)
    dynamic = model.evaluate(path, dynamic=True)
    assert dynamic.loss < 0.9 * static.loss
    assert dynamic.tokens == static.targets  # one stream reads every token
    assert model.evaluate(path).loss == static.loss  # the model in memory is unchanged too
    r = run("eval", path, "-c", trained_run, "--dynamic", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dynamic"]["rule"] == "rms"
    assert files_of(trained_run) == before


@pytest.mark.parametrize("rule", [AdaptRule.sgd, AdaptRule.rms])
def test_each_rule_learns_and_no_decay_learns_more(model, tmp_path, rule):
    path = tmp_path / "repeats.txt"
    path.write_text(REPEATING, encoding="utf-8")
    lr = 0.3 if rule is AdaptRule.sgd else 3e-3
    free = model.evaluate(path, dynamic=AdaptConfig(lr=lr, decay=0.0, rule=rule))
    pulled = model.evaluate(path, dynamic=AdaptConfig(lr=lr, decay=0.02, rule=rule))
    assert free.loss < pulled.loss < model.evaluate(path).loss


def test_adapt_makes_a_text_likelier_on_a_copy(model, trained_run, tmp_path):
    path = tmp_path / "style.txt"
    path.write_text(REPEATING, encoding="utf-8")
    line = "Snow fell on the old bird."
    before = model.score(line).log_prob
    adapted = model.adapt(path)
    assert adapted.score(line).log_prob > before + 1.0
    assert model.score(line).log_prob == before
    before_files = files_of(trained_run)
    ck = ["-c", trained_run, "--adapt", path]
    r = run("score", line, *ck, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["log_prob"] == pytest.approx(adapted.score(line).log_prob)
    r = run("sample", *ck, "--seed", "3", "--max-tokens", "40", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)[0]["text"] == adapted.sample(seed=3, max_tokens=40)
    assert files_of(trained_run) == before_files


def test_the_api_refuses_what_the_cli_refuses(model, tmp_path):
    with pytest.raises(ConfigError, match="--decay"):
        AdaptConfig(decay=1.0)
    with pytest.raises(ConfigError, match="--lr"):
        AdaptConfig(lr=0)
    with pytest.raises(CorpusError, match="test file is empty"):
        empty = tmp_path / "e.txt"
        empty.write_text("")
        model.evaluate(empty)
    with pytest.raises(CorpusError, match="text not found"):
        model.adapt(tmp_path / "none.txt")
