"""Weight drop (which keeps the fused kernel), the averaged weights a run keeps, and the
harder decay of the embedding and output rows."""

import json
import shutil
from dataclasses import replace
from functools import partial

import pytest
import torch

from charrnn.checkpoint import (
    BEST,
    LAST,
    RUN_JSON,
    load_run,
    load_tensors,
    read_meta,
    read_run_json,
)
from charrnn.checkpoint.formats import BEFORE_6, BEFORE_7, BEFORE_8, BEFORE_10
from charrnn.config import Level, ModelConfig, TokenizerConfig, TrainConfig
from charrnn.defaults import (
    DROP_FROM,
    DROPOUT,
    DROPOUT_CAP,
    DROPOUT_FROM,
    DROPOUT_FULL,
    HEAVY_FROM,
    MEMORIZING_FROM,
    ROW_DECAY,
    ROWS_FROM,
    ROWS_FULL,
    WEIGHT_DROP,
    WORD_DROPOUT,
    WORD_DROPOUT_RISE,
    dropout_for,
    level_rise,
    raised_dropout,
    row_decay_for,
    tie_for,
    weight_drop_for,
)
from charrnn.errors import ConfigError
from charrnn.model import RNNLM
from charrnn.model.dropout import dropout
from charrnn.runs import details
from charrnn.tokenizers import PAD
from charrnn.training.average import Averager
from charrnn.training.evals import Evaluations
from charrnn.training.loop import Trainer
from charrnn.training.optim import lr_at
from charrnn.training.run import train
from tests.conftest import tiny_job
from tests.test_train import Recorder


def _model(**settings) -> RNNLM:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, hidden=32, embed=16, max_len=64, **settings)
    return RNNLM(config).train()


def _recurrent_ops(model: RNNLM) -> set[str]:
    """The recurrent operators one training step runs, forward and backward."""
    tokens = torch.randint(5, 20, (4, 12))
    with torch.autograd.profiler.profile() as prof:
        model(tokens)[0].sum().backward()
    names = {e.name for e in prof.function_events}
    return {n for n in names if "rnn" in n or "lstm" in n or "gru" in n}


def test_weight_drop_runs_the_same_fused_kernel_on_dropped_weights():
    plain, dropped = _model(), _model(weight_drop=0.5)
    ops = _recurrent_ops(plain)
    assert "aten::lstm" in ops and not any("cell" in n for n in ops)  # the fused layer
    assert _recurrent_ops(dropped) == ops  # no step-by-step loop in its place
    tokens = torch.randint(5, 20, (4, 12))
    assert not torch.equal(plain(tokens)[0], dropped(tokens)[0])  # the weights were dropped
    plain.eval(), dropped.eval()
    assert torch.equal(plain(tokens)[0], dropped(tokens)[0])  # and are whole in evaluation


def test_cpu_dropout_keeps_the_share_and_the_mean_and_is_seeded():
    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(3)
    y = dropout(x, 0.3)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - 77 / 256)) < 0.005  # 0.3 as 77/256
    assert torch.allclose(y[kept], torch.tensor(256 / 179)) and abs(y.mean().item() - 1) < 0.01
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)  # the gradient flows where the element was kept
    torch.manual_seed(3)
    assert torch.equal(dropout(x, 0.3), y)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x


def test_weight_drop_leaves_the_parameters_as_they_are():
    model = _model(weight_drop=0.5)
    before = model.rnn.weight_hh_l0.detach().clone()
    model(torch.randint(5, 20, (4, 12)))[0].sum().backward()
    assert torch.equal(model.rnn.weight_hh_l0, before)
    assert model.rnn.weight_hh_l0.grad is not None and model.rnn.weight_hh_l0.grad.any()


def test_the_average_of_equal_weights_is_uniform_at_gamma_0():
    p = torch.nn.Parameter(torch.zeros(3))
    module = torch.nn.Module()
    module.p = p
    average = Averager(module, gamma=0.0)
    for step, value in enumerate([1.0, 2.0, 6.0], start=1):
        p.data.fill_(value)
        average.update(step)
    assert torch.allclose(average.avg[0], torch.full((3,), 3.0))  # (1 + 2 + 6) / 3
    with average.swapped_in():
        assert torch.allclose(p, torch.full((3,), 3.0))
    assert torch.equal(p, torch.full((3,), 6.0))  # the trained weights are back


def test_a_run_evaluates_and_keeps_its_averaged_weights(corpus, tmp_path):
    result = train(corpus, tiny_job(max_steps=12, evals=1, average=7.0), root=tmp_path)
    assert result.best_step == 12
    best = load_tensors(result.run / BEST, "model.")
    average = load_tensors(result.run / LAST, "average.")
    trained = load_tensors(result.run / LAST, "model.")
    assert average.keys() == {n for n, _ in load_run(result.run).model.named_parameters()}
    for name, weights in average.items():
        assert torch.equal(best[name], weights)
    assert any(not torch.equal(trained[n], average[n]) for n in average)
    assert read_run_json(result.run)["train"]["average"] == 7.0


def test_a_run_without_averaging_keeps_its_trained_weights(corpus, tmp_path):
    result = train(corpus, tiny_job(max_steps=12, evals=1, average=0.0), root=tmp_path)
    assert not load_tensors(result.run / LAST, "average.")
    best, trained = (load_tensors(result.run / f, "model.") for f in (BEST, LAST))
    assert all(torch.equal(best[n], trained[n]) for n in best if not n.startswith("end_bias"))


def test_a_resumed_run_averages_as_an_unbroken_one(corpus, tmp_path):
    job = tiny_job(max_steps=20, evals=4, average=7.0)
    train(corpus, job, run="straight", root=tmp_path)
    train(corpus, job, run="split", root=tmp_path, callbacks=Recorder(stop_at=10))
    train(corpus, job, run="split", root=tmp_path, resume=True)
    want, got = (load_tensors(tmp_path / r / LAST, "average.") for r in ("straight", "split"))
    assert want.keys() == got.keys() and want
    for name in want:
        assert torch.equal(want[name], got[name]), name


@pytest.mark.parametrize(
    "settings, option",
    [
        ({"average": -1.0}, "--average"),
        ({"average": float("nan")}, "--average"),
        ({"row_decay": -0.1}, "--row-decay"),
        ({"row_decay": float("inf")}, "--row-decay"),
        ({"dropout_rise": 1.5}, "--dropout-rise"),
    ],
)
def test_bad_settings_are_refused_naming_the_option(settings, option):
    with pytest.raises(ConfigError, match=option):
        TrainConfig(**settings)
    with pytest.raises(ConfigError, match="--weight-drop"):
        ModelConfig(weight_drop=1.0)


@pytest.mark.parametrize(
    "rule, start, full, top",
    [
        (weight_drop_for, DROP_FROM, MEMORIZING_FROM, WEIGHT_DROP),
        (dropout_for, DROPOUT_FROM, DROPOUT_FULL, DROPOUT),
        (partial(dropout_for, tied=True), DROP_FROM, DROPOUT_FULL, DROPOUT),
    ],
)
def test_dropping_follows_how_much_a_run_can_memorize(rule, start, full, top):
    assert rule(None) == rule(HEAVY_FROM) == rule(start) == 0
    assert rule(full) == rule(1e6) == top
    drops = [rule(start * 1.1**k) for k in range(40)]
    assert drops == sorted(drops) and 0 < drops[5] < top  # rising, in between
    assert weight_drop_for(DROPOUT_FROM) == WEIGHT_DROP  # features are dropped after weights
    # tied rows are learned by heart sooner: their runs drop features from a lower pressure
    assert dropout_for(MEMORIZING_FROM, tied=True) > 0 == dropout_for(MEMORIZING_FROM)


def spy_drops(monkeypatch) -> list[tuple[float, float]]:
    """(weight drop, dropout) of each training step from now on."""
    seen: list[tuple[float, float]] = []
    recurrent = RNNLM.recurrent

    def spy(self, x, state):
        if self.training:
            seen.append((self.weight_drop, self.dropout))
        return recurrent(self, x, state)

    monkeypatch.setattr(RNNLM, "recurrent", spy)
    return seen


def test_a_run_that_can_memorize_its_text_drops_unless_told(corpus, tmp_path, monkeypatch):
    seen = spy_drops(monkeypatch)
    job = tiny_job(max_steps=20_000, time_budget=None)  # many passes over a tiny text
    result = train(corpus, job, root=tmp_path, callbacks=Recorder(stop_at=20))
    loop = read_meta(result.run / LAST)["loop"]
    assert loop["pressure"] > DROPOUT_FULL
    assert (loop["weight_drop"], loop["dropout"]) == seen[-1] == (WEIGHT_DROP, DROPOUT)
    seen.clear()
    few = train(corpus, tiny_job(max_steps=6, time_budget=None), root=tmp_path)
    assert read_meta(few.run / LAST)["loop"]["weight_drop"] == 0.0 and set(seen) == {(0.0, 0.0)}
    seen.clear()
    told = replace(job, model=replace(job.model, weight_drop=0.1, dropout=0.05))
    train(corpus, told, root=tmp_path, callbacks=Recorder(stop_at=20))
    assert set(seen) == {(0.1, 0.05)}  # the rates given, from the first step to the last


def test_a_tied_run_drops_its_features_sooner(corpus, tmp_path):
    job = tiny_job(max_steps=1000, time_budget=None)  # decided at step 50, then stopped
    for tied in (False, True):
        told = replace(job, model=replace(job.model, tie_weights=tied))
        result = train(corpus, told, run=f"tied-{tied}", root=tmp_path, callbacks=Recorder(60))
        loop = read_meta(result.run / LAST)["loop"]
        assert DROP_FROM < loop["pressure"] < DROPOUT_FROM
        assert loop["weight_drop"] > 0 and (loop["dropout"] > 0) == tied


@pytest.mark.parametrize(
    "level, tied",
    [(Level.char, False), (Level.word, True), (Level.bpe, True), (Level.unigram, True)],
)
def test_words_and_pieces_are_tied(level, tied):
    assert tie_for(TokenizerConfig(level=level)) is tied


def test_words_are_tied_and_dropped_from_the_first_step_unless_told(corpus, tmp_path, monkeypatch):
    seen = spy_drops(monkeypatch)
    words = train(corpus, tiny_job(Level.word, max_steps=4), root=tmp_path)
    model = read_run_json(words.run)["model"]
    assert (model["tie_weights"], model["dropout"]) == (True, WORD_DROPOUT)
    assert {dropout for _, dropout in seen} == {WORD_DROPOUT}
    chars = read_run_json(train(corpus, tiny_job(max_steps=4), root=tmp_path).run)["model"]
    assert (chars["tie_weights"], chars["dropout"]) == (False, None)  # dropout: as it goes
    told = tiny_job(Level.word, max_steps=4)
    told = replace(told, model=replace(told.model, tie_weights=False, dropout=0.1))
    model = read_run_json(train(corpus, told, root=tmp_path).run)["model"]
    assert (model["tie_weights"], model["dropout"]) == (False, 0.1)


def test_row_decay_follows_how_often_the_rows_are_read():
    assert row_decay_for(None) == row_decay_for(ROWS_FROM) == 0.0
    assert row_decay_for(ROWS_FULL) == row_decay_for(1e6) == ROW_DECAY
    decays = [row_decay_for(ROWS_FROM * 1.2**k) for k in range(20)]
    assert decays == sorted(decays) and 0 < decays[5] < ROW_DECAY


def test_row_decay_shrinks_the_rows_and_nothing_else(corpus, tmp_path):
    job = tiny_job(max_steps=1, time_budget=None, weight_decay=0.1, min_lr_ratio=0.1, average=0)
    job = replace(job, model=replace(job.model, weight_drop=0.0))
    runs = {}
    for decay in (0.0, 5.0):
        told = replace(job, train=replace(job.train, row_decay=decay))
        runs[decay] = train(corpus, told, run=f"d{decay}", root=tmp_path).run
    config = ModelConfig.from_dict(read_run_json(runs[0.0])["model"])
    torch.manual_seed(job.train.seed)
    first = RNNLM(config).embed.weight.detach()[PAD]  # <pad> is never read: no gradient
    lr = lr_at(job.train, 0, 0.0)
    plain, decayed = (load_tensors(runs[d] / LAST, "model.") for d in (0.0, 5.0))
    assert torch.allclose(plain["embed.weight"][PAD], first * (1 - lr * 0.1))
    assert torch.allclose(decayed["embed.weight"][PAD], first * (1 - lr * 0.1) * (1 - lr * 5.0))
    assert torch.equal(plain["rnn.weight_hh_l0"], decayed["rnn.weight_hh_l0"])
    assert not torch.equal(plain["head.weight"], decayed["head.weight"])


@pytest.mark.parametrize("tied", [False, True])
def test_a_run_of_many_symbols_decays_its_rows(corpus, tmp_path, tied):
    job = tiny_job(max_steps=200_000, time_budget=None)  # its rows read many times over
    job = replace(job, model=replace(job.model, tie_weights=tied))
    result = train(corpus, job, root=tmp_path, callbacks=Recorder(stop_at=20))
    loop = read_meta(result.run / LAST)["loop"]
    model = load_run(result.run).model
    # a tied row is read as the input and as the output
    rows = model.embed.weight.numel() + (model.head or model.embed).weight.numel()
    tokens = read_run_json(result.run)["data"]["train_tokens"]
    assert loop["row_pressure"] == pytest.approx(loop["passes"] * rows / tokens, abs=0.01)
    assert loop["row_pressure"] > ROWS_FULL and loop["row_decay"] == ROW_DECAY
    few = train(corpus, tiny_job(max_steps=2, time_budget=None), root=tmp_path)
    assert read_meta(few.run / LAST)["loop"]["row_decay"] == 0.0


def test_a_format_5_run_resumes_as_it_trained(trained_run, corpus, tmp_path):
    """Runs before format 6 kept no average, dropped no weights and decayed no rows harder;
    such a run still loads and resumes that way, whatever today's defaults are."""
    run = tmp_path / "ck" / "r"
    shutil.copytree(trained_run, run)
    info = json.loads((run / RUN_JSON).read_text())
    for part, settings in BEFORE_6.items():
        for key in settings:
            info[part].pop(key)
    (run / RUN_JSON).write_text(json.dumps({**info, "format_version": 5}))
    loaded = load_run(run)
    assert loaded.model.config.weight_drop == 0.0
    assert loaded.info["train"]["average"] == 0.0 and loaded.info["train"]["row_decay"] == 0.0
    resumed = train(corpus, tiny_job(max_steps=44), run="r", root=tmp_path / "ck", resume=True)
    assert resumed.steps == 44 and not load_tensors(run / LAST, "average.")


def _expected_after_a_pause(per_eval: float) -> float | None:
    """The passes a 100 s run at 0.1 s a step (10 steps a pass) expects, where an
    evaluation of 5 s fell at step 60: the first estimate, 50 training steps after it."""
    from charrnn.training.budget import Budget
    from charrnn.training.distributed import Ranks

    budget = Budget(TrainConfig(time_budget=100.0), 10, Ranks(torch.device("cpu")))
    budget.per_eval = per_eval
    for step in range(1, 200):
        budget.now += 0.1
        if step == 60:
            budget.now += 5.0
            budget.paused()
        passes = budget.expected_passes(step, evals_done=1)
        if passes is not None:
            return passes
    return None


def test_the_dropout_rises_after_each_evaluation_no_better_than_the_best(
    corpus, tmp_path, monkeypatch
):
    losses = {10: 3.0, 20: 3.2, 30: 2.9, 40: 3.1, 50: 3.3, 60: 3.4}  # then the whole split's
    monkeypatch.setattr(
        Evaluations, "_evaluate", lambda t, *_, **__: (losses.get(t.loop.step, 3), 256)
    )
    seen, saved = spy_drops(monkeypatch), []
    save_last = Trainer.save_last
    monkeypatch.setattr(
        Trainer,
        "save_last",
        lambda t: (saved.append((t.loop.step, t.loop.dropout_raised)), save_last(t)),
    )
    job = tiny_job(max_steps=60, evals=6, time_budget=None, dropout_rise=0.2)
    job = replace(job, model=replace(job.model, dropout=0.1))
    result = train(corpus, job, root=tmp_path)
    # up 0.2 after the evaluations at 20, 40 and 50, the last only to DROPOUT_CAP
    assert [d for _, d in seen[9::10]] == [0.1, 0.1, 0.3, 0.3, 0.5, DROPOUT_CAP]
    at_20 = [raised for step, raised in saved if step == 20]
    assert at_20[0] == 0.2  # the checkpoint the evaluation writes holds its rise: resumable
    assert read_meta(result.run / LAST)["loop"]["dropout_raised"] == DROPOUT_CAP - 0.1
    assert details(result.run).regularization().dropout == DROPOUT_CAP
    assert raised_dropout(0.8, 0.0, 0.2) == 0.0  # a dropout given above the cap stays
    seen.clear()
    steady = replace(job, train=replace(job.train, dropout_rise=None))  # characters: none
    train(corpus, steady, root=tmp_path)
    assert {d for _, d in seen} == {0.1}
    assert level_rise(TokenizerConfig(level=Level.word)) == WORD_DROPOUT_RISE > 0


def test_the_passes_a_run_expects_come_from_the_pace_of_training_alone():
    # 16 s spent at step 110, 84 s left: 840 more steps at 0.1 s (not at the 0.145 s a step
    # the evaluation would make of it); evaluations still to come (4 of 2 s) take their time
    assert _expected_after_a_pause(0.0) == pytest.approx((110 + 840) / 10)
    assert _expected_after_a_pause(2.0) == pytest.approx((110 + 760) / 10)


def test_the_options_reach_the_run_and_a_bad_one_is_one_line(corpus, tmp_path):
    from tests.test_cli import TINY, run

    ck = tmp_path / "ck"
    given = ("--weight-drop", "0.2", "--row-decay", "0.5", "--average", "0", "--dropout-rise", "0")
    r = run("train", corpus, *TINY, "--max-steps", "3", *given, "--name", "r", "--checkpoints", ck)
    assert r.exit_code == 0, r.output
    info = read_run_json(ck / "r")
    assert info["model"]["weight_drop"] == 0.2
    assert info["train"]["row_decay"] == 0.5 and info["train"]["average"] == 0.0
    assert info["train"]["dropout_rise"] == 0.0
    bad = run("train", corpus, *TINY, "--weight-drop", "0.99", "--checkpoints", ck)
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "--weight-drop" in bad.output


@pytest.mark.parametrize("version", [5, 6, 7, 9])
def test_an_older_run_goes_on_bit_for_bit_as_it_started(corpus, tmp_path, version):
    """A run of format 5, 6, 7 or 9 cut short and resumed under today's defaults ends with the
    weights of an unbroken run without what came after it (format 6's three levers, format
    7's shifted streams, format 8's temperature, format 10's rising dropout; those runs saved
    their dropout, 0): it goes on as it started."""
    gone = {5: [BEFORE_6, BEFORE_7, BEFORE_8], 6: [BEFORE_7, BEFORE_8], 7: [BEFORE_8]}
    gone = [*gone.get(version, []), BEFORE_10]
    off = tiny_job(
        max_steps=30, evals=3, shift_windows=version >= 7, calibrate=version >= 8, dropout_rise=0
    )
    off = replace(off, model=replace(off.model, dropout=0.0))
    if version < 6:
        off = replace(off, train=replace(off.train, average=0.0, row_decay=0.0))
        off = replace(off, model=replace(off.model, weight_drop=0.0))
    train(corpus, off, run="unbroken", root=tmp_path)
    train(corpus, off, run="old", root=tmp_path, callbacks=Recorder(stop_at=10))
    info = json.loads((tmp_path / "old" / RUN_JSON).read_text())
    for settings in gone:
        for part, keys in settings.items():
            for key in keys:
                info[part].pop(key)
    (tmp_path / "old" / RUN_JSON).write_text(json.dumps({**info, "format_version": version}))
    train(corpus, tiny_job(max_steps=30, evals=3), run="old", root=tmp_path, resume=True)
    want, got = (load_tensors(tmp_path / r / LAST, "model.") for r in ("unbroken", "old"))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[n], got[n]) for n in want)


def test_a_run_told_not_to_calibrate_keeps_its_logits_as_trained(corpus, tmp_path):
    for calibrate in (True, False):
        job = tiny_job(max_steps=20, evals=2, calibrate=calibrate)
        train(corpus, job, run=f"calibrate-{calibrate}", root=tmp_path)
    kept = {c: load_tensors(tmp_path / f"calibrate-{c}" / BEST, "model.") for c in (True, False)}
    assert float(kept[False]["log_temperature"]) == 0.0
    assert float(kept[True]["log_temperature"]) != 0.0
