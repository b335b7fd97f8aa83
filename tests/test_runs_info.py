"""charrnn runs / info: run summaries, loss charts, the stopping-rule fit, images."""

import json
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.checkpoint import BEST, read_meta
from charrnn.cli import app
from charrnn.cli.charts import loss_chart, plain, save_loss_plot
from charrnn.errors import ConfigError
from charrnn.model import count_parameters
from charrnn.runs import STOPFIT, details, read_curves, summarize, summarize_all

runner = CliRunner()

STOPFIT_EXAMPLE = {
    "n": 500,
    "temperature": 1.0,
    "ks": {"eos": 0.05, "halt": 0.07, "length": 0.04},
    "val_mean_length": 152.4,
    "mean_length": {"eos": 149.0, "halt": 160.5, "length": 151.2},
}


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def runs_root(trained_run: Path, tmp_path: Path) -> Path:
    """A checkpoints folder holding a copy of the trained run and a damaged one."""
    root = tmp_path / "checkpoints"
    shutil.copytree(trained_run, root / "verses")
    (root / "broken").mkdir()
    (root / "broken" / "run.json").write_text("{not json")
    return root


# -- charts -------------------------------------------------------------------------------


def test_loss_chart_draws_a_falling_curve_and_validation_marks():
    steps = list(range(10, 1010, 10))
    loss = [4.0 - 2.5 * i / 100 for i in range(100)]
    rows = loss_chart(steps, loss, [500, 1000], [2.9, 1.6], width=40, height=8)
    text = plain(rows)
    lines = text.splitlines()
    assert len(lines) == 8 + 2  # the plot, the axis, the step labels
    # the first 5% of the steps (the steep start) do not set the scale: the top is clipped
    assert lines[0].startswith("3.88+ ┤█")
    assert lines[7].startswith(" 1.52 ┤")  # the lowest loss, 4.0 - 2.5 * 0.99
    assert "●" in text and "1,000 steps" in lines[-1]
    tags = {tag for row in rows for _, tag in row}
    assert {"train", "axis"} <= tags and tags & {"val", "val+train"}
    first_column = [ln[7] for ln in lines[:8]]
    assert first_column == ["█"] * 8  # a full column at the start...
    assert lines[0].rstrip()[-1] != "█"  # ...and not at the end, where the loss is low


def test_loss_chart_keeps_the_whole_range_without_a_steep_start():
    rows = loss_chart([1, 2, 3, 4], [2.0, 3.0, 2.5, 1.0], width=8, height=4)
    assert plain(rows).splitlines()[0].startswith("3.00 ┤")  # no "+": nothing clipped


def test_loss_chart_of_nothing_is_empty_and_of_one_point_is_drawn():
    assert loss_chart([], []) == []
    assert "█" in plain(loss_chart([5], [2.0], width=10, height=3))


def test_save_loss_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "loss.png"
    save_loss_plot(path, "t", [1, 2, 3], [3.0, 2.0, 1.5], [3], [1.7], best_step=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["loss.png"]  # no temporary left behind


def test_save_loss_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ConfigError, match=r"pip install 'charrnn\[plot\]'"):
        save_loss_plot(tmp_path / "loss.png", "t", [1], [1.0])
    with pytest.raises(ConfigError, match="png, svg, pdf"):
        save_loss_plot(tmp_path / "loss.gif", "t", [1], [1.0])
    assert not any(tmp_path.iterdir())


# -- runs ---------------------------------------------------------------------------------


def test_summaries_read_the_run_and_name_a_broken_one(runs_root):
    rows = {s.name: s for s in summarize_all(runs_root)}
    good, broken = rows["verses"], rows["broken"]
    best = read_meta(runs_root / "verses" / BEST)
    assert (good.level, good.cell, good.layers, good.hidden) == ("char", "lstm", 1, 32)
    assert good.steps == 40 and good.problem is None
    assert (good.best_step, good.val_loss, good.val_bpc) == (
        best["step"],
        best["val_loss"],
        best["val_bpc"],
    )
    assert (
        good.size_bytes
        > sum(p.stat().st_size for p in (runs_root / "verses").glob("*.safetensors")) - 1
    )
    assert broken.problem and "not valid JSON" in broken.problem


def test_runs_command_lists_every_run(runs_root):
    r = run("runs", "--checkpoints", runs_root)
    assert r.exit_code == 0, r.output
    assert "verses" in r.stdout and "lstm 1×32" in r.stdout and "broken" in r.stdout
    assert "40" in r.stdout and "just now" in r.stdout
    rows = json.loads(run("runs", "--checkpoints", runs_root, "--json").stdout)
    assert {x["name"] for x in rows} == {"verses", "broken"}


def test_runs_in_an_empty_folder_says_how_to_start_as_every_command_does(tmp_path):
    """One rule for every command that finds no run: one line on stderr, exit status 1."""
    empty = tmp_path / "none"
    lines = set()
    for args in (["runs"], ["info"], ["sample"], ["score", "a sentence"]):
        r = run(*args, "--checkpoints", empty)
        assert r.exit_code == 1 and not r.stdout.strip(), (args, r.output)
        assert len(r.stderr.strip().splitlines()) == 1 and "charrnn train" in r.stderr
        lines.add(r.stderr.strip())
    assert len(lines) == 1  # the same words
    r = run("runs", "--json", "--checkpoints", empty)
    assert r.exit_code == 1 and json.loads(r.stdout) == []


# -- info ---------------------------------------------------------------------------------


def test_info_shows_config_parameters_tokenizer_curves(runs_root):
    from charrnn.checkpoint import load_run

    params = count_parameters(load_run(runs_root / "verses").model)
    assert (runs_root / "verses" / STOPFIT).exists()  # training measured the stopping rules
    (runs_root / "verses" / STOPFIT).unlink()  # as for a run trained before it did
    r = run("info", "verses", "--checkpoints", runs_root)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert f"{params:,}" in out
    for needle in ("hidden", "seq_len", "tokenizer.level", "char level", "commonest", "┤", "█"):
        assert needle in out, needle
    assert "no fit for this run yet" in out and STOPFIT in out  # and how to get one
    temperature = read_meta(runs_root / "verses" / "best.safetensors")["temperature"]
    assert f"logits / {temperature} (fitted on validation text)" in " ".join(out.split())
    d = json.loads(run("info", "verses", "--checkpoints", runs_root, "--json").stdout)
    curves = read_curves(runs_root / "verses")
    assert d["parameters"] == params and d["steps"] == 40
    assert d["curves"]["val_loss"] == curves.val_loss and len(curves.train_loss) >= 4
    assert curves.final_loss is not None


def test_info_shows_how_hard_the_run_decided_to_regularize(corpus, tmp_path, runs_root):
    from charrnn.training.run import train
    from tests.conftest import StopAt, tiny_job

    many = tiny_job(max_steps=40_000, time_budget=None)  # enough passes to drop features too
    train(corpus, many, run="long", root=tmp_path, callbacks=StopAt(60))
    loop = read_meta(tmp_path / "long" / "last.safetensors")["loop"]
    out = " ".join(run("info", "long", "--checkpoints", tmp_path).stdout.split())
    assert "regularization weight decay 0.2, learning rate decayed to 0.0 x peak" in out
    assert f"for {loop['passes']} passes" in out and f"= {loop['pressure']})" in out
    decided = f"{loop['weight_drop']}, {loop['dropout']}, {loop['row_decay']} (row pressure "
    assert loop["weight_drop"] > 0 and loop["dropout"] > 0
    assert f"weight drop, dropout, row decay {decided}{loop['row_pressure']}" in out
    r = run("info", "verses", "--checkpoints", runs_root)  # 40 steps: nothing decided yet
    assert r.exit_code == 0 and "parameters" in r.stdout and "regularization" not in r.stdout


def test_info_shows_the_stopping_rule_fit(runs_root):
    (runs_root / "verses" / STOPFIT).write_text(json.dumps(STOPFIT_EXAMPLE))
    r = run("info", "--checkpoints", runs_root, "verses")
    assert r.exit_code == 0, r.output
    for needle in ("KS distance", "0.050", "0.070", "0.040", "152.4", "160.5", "500 samples"):
        assert needle in r.stdout, needle
    assert details(runs_root / "verses").stopfit.ks["halt"] == 0.07  # type: ignore[union-attr]


def test_info_with_a_damaged_fit_still_shows_the_run(runs_root):
    (runs_root / "verses" / STOPFIT).write_text('{"n": 5}')
    r = run("info", "verses", "--checkpoints", runs_root)
    assert r.exit_code == 0 and "stopfit.json: temperature is missing" in r.stdout


def test_info_plot_writes_an_image(runs_root, tmp_path):
    pytest.importorskip("matplotlib")
    r = run("info", "verses", "--checkpoints", runs_root, "--plot", tmp_path / "loss.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_info_plot_without_matplotlib_is_one_line(runs_root, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    r = run("info", "verses", "--checkpoints", runs_root, "--plot", tmp_path / "loss.png")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "charrnn[plot]" in lines[0]
    assert not (tmp_path / "loss.png").exists()


def test_info_of_a_broken_run_is_one_line(runs_root):
    r = run("info", "broken", "--checkpoints", runs_root)
    assert r.exit_code == 1 and r.stderr.startswith("error:") and "Traceback" not in r.output


def test_summarize_a_run_without_checkpoints(runs_root):
    folder = runs_root / "verses"
    for f in folder.glob("*.safetensors"):
        f.unlink()
    assert summarize(folder).problem == "no checkpoint yet"


@pytest.mark.parametrize(
    "overrides",
    [{}, {"cell": "gru", "layers": 2}, {"tie_weights": True}, {"tie_weights": True, "embed": 32}],
)
def test_parameter_count_from_the_header_matches_the_model(tmp_path, overrides):
    """Buffers (the start state) are in the checkpoint but are not parameters."""
    from charrnn.checkpoint import save_tensors
    from charrnn.config import ModelConfig
    from charrnn.model import RNNLM
    from charrnn.runs import checkpoint_parameters

    config = ModelConfig(vocab_size=20, hidden=32, embed=16, layers=1, max_len=50)
    config = ModelConfig.from_dict({**config.to_dict(), **overrides})
    model = RNNLM(config)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_tensors(tmp_path / "best.safetensors", tensors, {"kind": "best"})
    got = checkpoint_parameters(tmp_path / "best.safetensors", config.to_dict())
    assert got == count_parameters(model)
