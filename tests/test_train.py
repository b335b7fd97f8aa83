import math
from dataclasses import replace

import pytest

from charrnn.checkpoint import BEST, LAST, MetricsLog, load_run, read_meta, read_run_json
from charrnn.config import Level, SampleConfig, TokenizerConfig, TrainConfig
from charrnn.defaults import SUBWORD_LR, hidden_for_budget, lr_for, regularization
from charrnn.errors import ConfigError, CorpusError
from charrnn.generate import Sampler
from charrnn.model import count_parameters
from charrnn.training.callbacks import Callbacks
from charrnn.training.optim import lr_at
from charrnn.training.run import train
from charrnn.training.state import LoopState
from tests.conftest import tiny_job


class Recorder(Callbacks):
    def __init__(self, stop_at=None):
        self.steps, self.evals, self.samples, self.stop_at = [], [], [], stop_at

    def on_step(self, s):
        self.steps.append(s)

    def on_eval(self, e):
        self.evals.append(e)

    def on_sample(self, step, text):
        self.samples.append(text)

    def stop_requested(self):
        return self.stop_at is not None and self.steps and self.steps[-1].step >= self.stop_at


def test_training_lowers_the_loss_and_writes_a_run(corpus, tmp_path):
    rec = Recorder()
    result = train(corpus, tiny_job(max_steps=30, evals=3), root=tmp_path, callbacks=rec)
    assert result.run == tmp_path / "verses"
    assert result.stopped_by == "max-steps" and result.steps == 30
    assert rec.steps[-1].loss < rec.steps[0].loss
    assert result.val is not None and result.val.full and math.isfinite(result.val.loss)
    assert (result.run / BEST).exists() and (result.run / LAST).exists()
    info = read_run_json(result.run)
    assert info["model"]["vocab_size"] > 4 and info["data"]["unit"] == "paragraph"
    assert [e.full for e in rec.evals][-1] is True
    assert any("val_loss" in r for r in MetricsLog(result.run / "metrics.jsonl").read())


def test_runs_are_never_overwritten(corpus, tmp_path):
    first = train(corpus, tiny_job(max_steps=2), root=tmp_path)
    second = train(corpus, tiny_job(max_steps=2), root=tmp_path)
    assert first.run != second.run and second.run.name == "verses-2"
    with pytest.raises(ConfigError, match="already exists"):
        train(corpus, tiny_job(max_steps=2), run="verses", root=tmp_path)


def test_word_level_training(corpus, tmp_path):
    result = train(corpus, tiny_job(Level.word, max_steps=4), root=tmp_path)
    assert read_run_json(result.run)["data"]["level"] == "word"


def test_subword_training_keeps_sentencepieces_model_with_the_run(corpus, tmp_path):
    rec, level = Recorder(), Level.bpe
    result = train(corpus, tiny_job(level, max_steps=4), root=tmp_path, callbacks=rec)
    assert (result.run / "tokenizer.model").exists()
    # its pieces were learned without the text it validates on, and resume finds them again
    tokenizer = read_run_json(result.run)["data"]["config"]["tokenizer"]
    assert (tokenizer["held_out"], tokenizer["held_split"]) == (0.1, "tail")
    job = tiny_job(level, max_steps=6)
    assert train(corpus, job, run=result.run.name, root=tmp_path, resume=True).steps == 6
    (corpus.parent / "gone").mkdir()
    corpus.rename(corpus.parent / "gone" / corpus.name)  # the run stands on its own
    loaded = load_run(result.run)
    assert loaded.tokenizer.level is level
    text = Sampler(loaded.model, loaded.tokenizer).sample(1, SampleConfig(seed=0))[0].text
    assert isinstance(text, str)
    assert all(math.isfinite(e.bpc) and e.bpb == pytest.approx(e.bpc) for e in rec.evals)
    logged = [r for r in MetricsLog(result.run / "metrics.jsonl").read() if "val_bpb" in r]
    assert logged and logged[-1]["val_bpb"] == pytest.approx(logged[-1]["val_bpc"])  # ASCII


def test_a_stop_request_saves_a_resumable_checkpoint(corpus, tmp_path):
    result = train(corpus, tiny_job(max_steps=50), root=tmp_path, callbacks=Recorder(stop_at=10))
    assert result.stopped_by == "interrupted"
    assert read_meta(result.run / LAST)["loop"]["step"] == result.steps
    resumed = train(corpus, tiny_job(max_steps=50), run=result.run.name, root=tmp_path, resume=True)
    assert resumed.steps == 50 and resumed.stopped_by == "max-steps"


def test_resume_continues_exactly(corpus, tmp_path):
    straight = Recorder()
    train(
        corpus, tiny_job(max_steps=20, evals=4), run="straight", root=tmp_path, callbacks=straight
    )
    first = Recorder(stop_at=10)
    train(corpus, tiny_job(max_steps=20, evals=4), run="split", root=tmp_path, callbacks=first)
    second = Recorder()
    train(
        corpus,
        tiny_job(max_steps=20, evals=4),
        run="split",
        root=tmp_path,
        resume=True,
        callbacks=second,
    )
    want = {s.step: s.loss for s in straight.steps}
    got = {s.step: s.loss for s in first.steps + second.steps}
    assert want[20] == got[20] and want[10] == got[10]


def test_time_budget_ends_the_run(corpus, tmp_path):
    result = train(corpus, tiny_job(max_steps=None, time_budget=4.0), root=tmp_path)
    assert result.stopped_by == "time-budget"
    assert result.elapsed < 8.0


def test_too_short_corpus(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("just a few words\n")
    with pytest.raises(CorpusError, match="too short for one batch"):
        train(path, tiny_job(), root=tmp_path / "ck")
    assert not (tmp_path / "ck").exists() or not any((tmp_path / "ck").iterdir())


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0])
@pytest.mark.parametrize("name", ["lr", "weight_decay"])
def test_a_rate_that_is_not_a_number_is_refused(name, value):
    # the command line's range check lets nan through on older click releases: the
    # configuration itself must refuse it
    with pytest.raises(ConfigError, match="--" + name.replace("_", "-")):
        TrainConfig(**{name: value})


def test_learning_rate_schedule():
    c = TrainConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(c, 0, 0.0) == pytest.approx(0.1)
    assert lr_at(c, 9, 0.0) == pytest.approx(1.0)
    assert lr_at(c, 100, 0.5) == pytest.approx(0.55)
    assert lr_at(c, 100, 1.0) == pytest.approx(0.1)
    assert lr_at(c, 100, None) == pytest.approx(1.0)
    assert lr_at(c, 100, 1.0, floor=0.0) == 0.0  # a floor the run decided


def test_regularization_follows_how_much_a_run_can_memorize():
    assert regularization(None) == regularization(1.0) == regularization(3.0) == (0.1, 0.1)
    assert regularization(4.5) == (0.15, 0.05)  # halfway between light and heavy
    assert regularization(6.0) == regularization(80.0) == (0.2, 0.0)


def _last(folder):
    meta = read_meta(folder / LAST)
    return meta["loop"], meta["param_groups"][0]  # the loop state, what the optimizer used


def test_a_run_that_sees_its_text_many_times_is_regularized_harder(corpus, tmp_path):
    few = train(corpus, tiny_job(max_steps=6, time_budget=None), run="few", root=tmp_path)
    many = train(corpus, tiny_job(max_steps=400, time_budget=None), run="many", root=tmp_path)
    loop, group = _last(few.run)
    assert loop["passes"] < 1 and loop["pressure"] < 3
    assert (loop["weight_decay"], loop["min_lr_ratio"]) == (0.1, 0.1)
    assert group["weight_decay"] == 0.1
    loop, group = _last(many.run)
    assert loop["passes"] > 5 and loop["pressure"] > 6
    # the pressure counts the recurrent layers only, not the embedding and output rows
    per_token = (
        count_parameters(load_run(many.run).model.rnn)
        / read_run_json(many.run)["data"]["train_tokens"]
    )
    assert loop["pressure"] == pytest.approx(loop["passes"] * per_token, abs=0.01)
    assert (loop["weight_decay"], loop["min_lr_ratio"]) == (0.2, 0.0)
    assert group["weight_decay"] == 0.2
    assert group["lr"] < 1e-4 * 1e-2  # decayed to 0, not to 0.1 x the peak of 1e-2


def test_a_run_decides_once_its_pace_is_known_and_light_until_then(corpus, tmp_path):
    # with a time budget the steps to come are known from the pace, after 50 steps
    loop, group = _last(train(corpus, tiny_job(max_steps=20, time_budget=600.0), root=tmp_path).run)
    assert loop["passes"] is None and group["weight_decay"] == 0.1
    run = train(corpus, tiny_job(max_steps=60, time_budget=600.0), root=tmp_path).run
    loop, group = _last(run)
    seen = 60 * 4 * 16 / read_run_json(run)["data"]["train_tokens"]  # 60 steps of 4 x 16
    assert loop["passes"] == pytest.approx(seen, rel=0.05)  # the steps bind, not the time
    assert group["weight_decay"] == loop["weight_decay"] == regularization(loop["pressure"])[0]


def test_settings_the_config_gives_are_kept(corpus, tmp_path):
    job = tiny_job(
        max_steps=400, time_budget=None, weight_decay=0.0, min_lr_ratio=0.5, row_decay=0.0
    )
    job = replace(job, model=replace(job.model, weight_drop=0.0, dropout=0.0))
    loop, group = _last(train(corpus, job, root=tmp_path).run)
    assert loop["passes"] is None and group["weight_decay"] == 0.0  # nothing left to decide
    assert group["lr"] == pytest.approx(lr_at(job.train, 399, 399 / 400))  # 0.5 x peak
    job = tiny_job(max_steps=400, time_budget=None, weight_decay=0.05)
    loop, group = _last(train(corpus, job, root=tmp_path).run)
    assert loop["min_lr_ratio"] == 0.0 and group["weight_decay"] == 0.05


def test_a_resumed_run_goes_on_as_it_decided(corpus, tmp_path):
    job = tiny_job(max_steps=400, time_budget=None)
    first = train(corpus, job, run="r", root=tmp_path, callbacks=Recorder(stop_at=20))
    decided, _ = _last(first.run)
    assert decided["passes"] > 5 and first.steps < 400
    shorter = tiny_job(max_steps=30, time_budget=None)  # 30 steps alone would be light
    loop, group = _last(train(corpus, shorter, run="r", root=tmp_path, resume=True).run)
    assert loop["step"] == 30 and loop["passes"] == decided["passes"]
    assert group["weight_decay"] == 0.2


def test_a_run_resumed_at_the_step_it_decides_decides_alike(corpus, tmp_path):
    job = tiny_job(max_steps=120, time_budget=600.0)  # the steps end it: decided at step 50
    train(corpus, job, run="straight", root=tmp_path)
    first = train(corpus, job, run="split", root=tmp_path, callbacks=Recorder(stop_at=50))
    assert first.steps == 50 and _last(first.run)[0]["passes"] is None
    train(corpus, job, run="split", root=tmp_path, resume=True)
    (want, want_group), (got, got_group) = (_last(tmp_path / r) for r in ("straight", "split"))
    assert want["passes"] > 1 and want_group["weight_decay"] > 0.1
    for loop in (want, got):
        loop.pop("elapsed")
    assert got == want and got_group == want_group


def test_a_loop_state_without_the_decision_still_loads_and_a_bad_one_is_refused():
    old = LoopState(step=3).to_dict()
    for key in ("passes", "pressure", "weight_decay", "min_lr_ratio"):
        del old[key]
    assert LoopState.from_dict(old).passes is None  # a checkpoint from before the rule
    with pytest.raises(ValueError, match="wrong types"):
        LoopState.from_dict({**old, "passes": "many"})


def test_the_width_follows_the_time_budget_and_the_rate_follows_the_width():
    cpu, cuda = "cpu", "cuda"  # device types
    widths = [hidden_for_budget(b, cpu) for b in (30, 150, 600, 900, 3600, 10**6)]
    assert widths == [128, 256, 448, 512, 896, 1024]  # 256, doubled for each 6x the budget
    assert hidden_for_budget(None, cpu) == hidden_for_budget(150, cuda) == 512
    char, bpe = TokenizerConfig(level=Level.char), TokenizerConfig(level=Level.bpe)
    assert lr_for(char, 128) == lr_for(char, 256) == pytest.approx(1e-2)
    assert lr_for(char, 1024) == pytest.approx(5e-3)  # 1 / sqrt(width)
    assert lr_for(bpe, 1024) == pytest.approx(SUBWORD_LR * 5e-3)  # pieces: larger steps


@pytest.mark.parametrize("level", [Level.char, Level.bpe])
def test_an_unsized_run_records_the_width_and_rate_it_was_given(level, corpus, tmp_path):
    job = tiny_job(level, max_steps=2, time_budget=600.0, lr=0.0, precision="fp32")  # bf16: wider
    job = replace(job, model=replace(job.model, hidden=0))
    train(corpus, job, root=tmp_path, run="sized")
    info = read_run_json(tmp_path / "sized")
    assert info["model"]["hidden"] == 448
    assert info["train"]["lr"] == pytest.approx(lr_for(TokenizerConfig(level=level), 448))
    assert load_run(tmp_path / "sized").model.config.hidden == 448


def test_a_run_keeps_the_level_its_corpus_and_budget_decided(corpus, tmp_path, monkeypatch):
    from charrnn import defaults

    monkeypatch.setattr(defaults, "AUTO_BYTES_PER_SECOND", 10)  # the corpus: a few KB
    job = tiny_job(level=Level.auto, max_steps=3, time_budget=60.0)
    job = replace(job, model=replace(job.model, embed=0))  # the embedding's width: the level's
    train(corpus, job, run="r", root=tmp_path)
    recorded = read_run_json(tmp_path / "r")
    saved = recorded["data"]
    assert recorded["model"]["embed"] == defaults.EMBED_SUBWORD
    assert saved["level"] == "bpe"
    assert saved["config"]["tokenizer"]["level"] == "bpe"  # decided, not "auto"
    assert saved["config"]["tokenizer"]["vocab_size"] == 2048
    # once auto would choose char (encoding now too slow for the budget), a resume still
    # reads the pieces the run started with
    monkeypatch.setattr(defaults, "SUBWORD_ENCODE_RATE", 1.0)  # bytes/s
    short = replace(job.train, max_steps=5, time_budget=60.0)
    result = train(corpus, replace(job, train=short), run="r", root=tmp_path, resume=True)
    assert result.steps == 5
    assert read_run_json(tmp_path / "r")["data"]["level"] == "bpe"
    # a new run with that budget is char
    train(corpus, replace(job, train=replace(short, max_steps=2)), run="c", root=tmp_path)
    assert read_run_json(tmp_path / "c")["data"]["level"] == "char"
    assert read_run_json(tmp_path / "c")["model"]["embed"] == defaults.EMBED


def test_evaluations_spread_out_when_they_turn_out_cheaper_than_estimated():
    import torch

    from charrnn.training.budget import Budget
    from charrnn.training.distributed import Ranks
    from charrnn.training.evals import Evaluations

    class Due(Evaluations):  # the schedule alone, progress 0.01 a step
        def __init__(self):
            self.config = TrainConfig(time_budget=100.0, max_steps=None, evals=8)
            self.loop, self.budget = (
                LoopState(),
                Budget(self.config, 1000, Ranks(torch.device("cpu"))),
            )
            self.budget.per_eval = 4.0  # estimated: room for 2 evaluations in 10% of 100 s

        def progress(self):
            return self.loop.step / 100

    run, at = Due(), []
    for step in range(1, 100):
        run.loop.step = step
        if run._eval_due():
            at.append(step)
            run.loop.history.append(1.0)
            run.loop.last_eval_progress = run.progress()
            run.budget.per_eval = 1.0  # measured: room for all 8
    # 7 before the end (the 8th is the final one), the rest spread evenly over the second half
    assert at == [50, 58, 65, 72, 79, 86, 93]
    # a run saved before the progress was (none recorded) goes on where it would have
    old = Due()
    old.loop.history, old.budget.per_eval = [1.0, 1.0], 1.0
    old.loop.step = 37
    assert not old._eval_due()
    old.loop.step = 38
    assert old._eval_due()  # at 3/8 of the run, as before
