"""Fine-tuning (train --from): the grown model and tokenizer, the new run, its lineage."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn import api
from charrnn.checkpoint import BEST, load_run, read_run_json, run_lock
from charrnn.cli import app
from charrnn.config import Cell, Level, ModelConfig, TokenizerConfig
from charrnn.defaults import FINETUNE_WARMUP, finetune_lr
from charrnn.errors import ConfigError, TrainingError
from charrnn.model import RNNLM
from charrnn.model.grow import NEW_SYMBOL_MARGIN, grow
from charrnn.model.lengths import bucket_edges, bucketize
from charrnn.tokenizers import N_SPECIALS, SPECIALS, UNK, CharTokenizer, WordTokenizer
from charrnn.training.run import train
from tests.conftest import tiny_job
from tests.test_train import Recorder

NEW_TEXT = """\
Zebras graze on the quiet plain.
The zebra ran past 42 jackals!
Quick foxes jump over lazy zebras.

The zebra sat on the mat.
"""


def snapshot(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def randomized(config: ModelConfig) -> RNNLM:
    """A model whose every weight is far from its initial value (as a trained one is)."""
    torch.manual_seed(0)
    model = RNNLM(config if config.max_len else replace(config, max_len=64))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=0.3)
    return model.eval()


# -- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tied, embed", [(False, 16), (True, 16), (True, 32)], ids=["untied", "tied", "tied+proj"]
)
def test_new_symbols_leave_the_old_logits_exactly_as_they_were(tied, embed):
    old = randomized(ModelConfig(vocab_size=20, hidden=32, embed=embed, tie_weights=tied))
    grown = grow(old, replace(old.config, vocab_size=27)).eval()
    tokens = torch.randint(1, 20, (3, 40))  # old symbols only
    with torch.no_grad():
        before, _ = old(tokens)
        after, _ = grown(tokens)
    assert after.shape[-1] == 27
    assert torch.equal(after[..., :20], before)
    new_mass = torch.softmax(after, -1)[..., 20:].sum(-1)
    assert new_mass.max() < 0.01  # negligible at first
    bias = grown.head_bias if tied else grown.head.bias
    assert torch.all(bias[20:] <= bias[N_SPECIALS:20].min() - NEW_SYMBOL_MARGIN + 1e-6)


def test_a_new_symbol_learns():
    old = randomized(ModelConfig(vocab_size=20, hidden=32, embed=16))
    model = grow(old, replace(old.config, vocab_size=21))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randint(4, 20, (4, 30)), torch.full((4, 30), 20)  # always the new symbol
    losses = []
    for _ in range(30):
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 4


def test_longer_units_grow_the_buckets_and_keep_per_length_probabilities():
    old = randomized(ModelConfig(vocab_size=20, hidden=32, embed=16, max_len=120))
    with torch.no_grad():  # a smooth per-length distribution, as a trained head gives
        old.length.weight.zero_()
        edges = torch.as_tensor(bucket_edges(120), dtype=torch.float32)
        widths = torch.diff(torch.cat([edges, torch.tensor([121.0])]))
        old.length.bias.copy_(widths.log() - edges / 30)
    grown = grow(old, replace(old.config, max_len=400)).eval()
    assert grown.n_buckets >= old.n_buckets and not np.array_equal(grown.edges, old.edges)
    h = torch.randn(5, 32)
    with torch.no_grad():
        before, after = old.length_log_probs(h), grown.length_log_probs(h)
    assert after.shape[-1] == 401
    # P'(r) = P(the lower edge of r's new bucket), up to one normalizing constant: lengths in
    # buckets no coarser than before keep their probability, coarser buckets take the value
    # at their start, and lengths past the old max_len that of the old last bucket
    lengths = np.arange(401)
    lower = grown.edges[bucketize(lengths, grown.edges)]
    shift = after - before[:, np.minimum(lower, 120)]  # (5, 401)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    assert (shift[:, 0].abs() < 0.3).all()  # the mass the longer units add is small
    # the exact buckets (one length each) keep their rows of the length input
    n, m = old.n_buckets, grown.n_buckets
    assert torch.equal(grown.len_embed.weight[:16], old.len_embed.weight[:16])
    assert torch.equal(grown.len_embed.weight[m : m + 16], old.len_embed.weight[n : n + 16])


def test_a_model_never_shrinks_nor_changes_shape():
    old = randomized(ModelConfig(vocab_size=20, hidden=32, embed=16, max_len=64))
    for change in ({"vocab_size": 19}, {"max_len": 63}, {"hidden": 64}, {"cell": Cell.gru}):
        with pytest.raises(ConfigError, match="grows by symbols and unit length only"):
            grow(old, replace(old.config, **change))


# -- the tokenizer ----------------------------------------------------------------------------


def test_a_grown_vocabulary_keeps_every_id_and_adds_in_rank_order():
    config = TokenizerConfig(level=Level.char)
    base = CharTokenizer.fit(config, ["aab"])
    grown = base.grown(["z", "a", "y", "x"])
    assert grown.pieces == [*base.pieces, "z", "y", "x"]
    assert grown.encode("abzyx") == [*base.encode("ab"), 6, 7, 8]
    capped = base.grown(["z", "y", "x"], max_vocab=base.vocab_size + 2)  # the base's count
    assert capped.pieces[N_SPECIALS:] == ["a", "b", "z", "y"]
    assert base.grown(["z"], max_vocab=3).pieces == base.pieces
    words = WordTokenizer.fit(config, ["the cat"]).grown(["zebra", "the"])
    assert words.pieces[-1] == "zebra" and words.pieces[:N_SPECIALS] == list(SPECIALS)


# -- a fine-tuned run -------------------------------------------------------------------------


@pytest.fixture
def new_text(tmp_path: Path) -> Path:
    path = tmp_path / "letters.txt"
    path.write_text(NEW_TEXT * 12, encoding="utf-8")
    return path


@pytest.fixture
def base_root(tmp_path: Path, trained_run: Path) -> Path:
    """A copy of the session's char-level run, as checkpoints/verses."""
    root = tmp_path / "checkpoints"
    (root / "verses").mkdir(parents=True)
    for f in trained_run.iterdir():
        if f.is_file():
            (root / "verses" / f.name).write_bytes(f.read_bytes())
    return root


def test_a_fine_tuned_run_starts_from_its_base_and_never_writes_it(base_root, new_text):
    before = snapshot(base_root / "verses")
    rec = Recorder()
    result = train(new_text, tiny_job(max_steps=8), root=base_root, base="verses", callbacks=rec)
    assert result.run == base_root / "letters"
    assert snapshot(base_root / "verses") == before  # byte for byte
    base, tuned = load_run(base_root / "verses"), load_run(result.run)
    old, new = base.tokenizer, tuned.tokenizer
    assert new.pieces[: old.vocab_size] == old.pieces
    added = set(new.pieces[old.vocab_size :])
    assert {"Z", "4", "2", "!", "j", "k"} <= added and len(added) == new.vocab_size - old.vocab_size
    lineage = read_run_json(result.run)["base"]
    assert lineage["name"] == "verses" and lineage["added_symbols"] == len(added)
    assert lineage["step"] == base.meta["step"] and lineage["weights"] == "best"
    assert lineage["tokenizer_hash"] == old.fingerprint() != new.fingerprint()
    assert lineage["format_version"] == base.meta["format_version"]
    c = tuned.model.config
    assert (c.hidden, c.embed, c.cell, c.vocab_size) == (32, 16, Cell.lstm, new.vocab_size)
    # no id of the text is <unk>: the grown tokenizer reads all of it
    assert UNK not in new.encode(NEW_TEXT)


def test_the_grown_model_predicts_the_old_symbols_as_its_base(base_root, new_text):
    from charrnn.training.finetune import grown_model, open_base

    base = open_base("verses", base_root, torch.device("cpu"))
    result = train(new_text, tiny_job(max_steps=1), root=base_root, base="verses")
    ds_tokenizer = load_run(result.run).tokenizer
    ids = torch.as_tensor([base.tokenizer.encode("The cat sat on the mat.")])

    class _Split:  # the units the fitted length comes from
        unit_starts = np.array([0])

        @staticmethod
        def unit_lengths():
            return np.array([10])

    class _Ds:
        tokenizer = ds_tokenizer

        @staticmethod
        def symbol_counts(train):  # every symbol trained
            v = ds_tokenizer.vocab_size
            return np.ones(v, dtype=np.int64), np.zeros(v, dtype=np.int64)

    model = grown_model(base, base.config, _Ds(), _Split()).eval()
    with torch.no_grad():
        before, _ = base.loaded.model(ids)
        after, _ = model(ids)
    seen = base.loaded.model.unseen == 0  # the others' share is the base's guess, not a logit
    assert seen.sum() > 5 and not model.any_unseen
    assert torch.equal(after[..., : base.tokenizer.vocab_size][..., seen], before[..., seen])


def test_fine_tuning_takes_its_own_defaults_and_the_users_training_options(base_root, new_text):
    job = tiny_job(max_steps=2, lr=0.0)
    result = train(new_text, job, root=base_root, base="verses")
    info = read_run_json(result.run)["train"]
    assert (
        info["lr"] == finetune_lr(TokenizerConfig(level=Level.char), 32)
        and info["warmup_steps"] == FINETUNE_WARMUP
    )
    mine = tiny_job(max_steps=2, lr=3e-3, warmup_steps=7)
    result = train(new_text, mine, root=base_root, base="verses", overrides={"lr"})
    info = read_run_json(result.run)["train"]
    assert info["lr"] == 3e-3 and info["warmup_steps"] == FINETUNE_WARMUP  # not given
    result = train(new_text, mine, root=base_root, base="verses")  # None: what differs
    assert read_run_json(result.run)["train"]["warmup_steps"] == 7


def test_options_that_contradict_the_base_are_refused_in_one_line(base_root, new_text):
    job = tiny_job(max_steps=2)
    with pytest.raises(ConfigError) as e:
        api.train(new_text, checkpoints=base_root, base="verses", hidden=64, cell="gru")
    assert "--cell gru (base: lstm)" in str(e.value) and "--hidden 64 (base: 32)" in str(e.value)
    with pytest.raises(ConfigError, match="--level word"):
        api.train(new_text, checkpoints=base_root, base="verses", level="word")
    with pytest.raises(ConfigError, match="--max-vocab 10"):
        api.train(new_text, checkpoints=base_root, base="verses", max_vocab=10)
    with pytest.raises(ConfigError, match="--resume"):
        train(new_text, job, root=base_root, base="verses", resume=True)
    assert sorted(p.name for p in base_root.iterdir()) == ["verses"]  # nothing written
    # the base's own values given again are no contradiction
    model = api.train(
        new_text,
        checkpoints=base_root,
        base="verses",
        hidden=32,
        cell="lstm",
        max_steps=2,
        seq_len=16,
        batch_size=4,
        sample_every=0,
        stop_fit=0,
        device="cpu",
    )
    assert model.config.hidden == 32 and model.folder.name == "letters"


def test_a_base_being_trained_is_refused(base_root, new_text):
    with run_lock(base_root / "verses"), pytest.raises(TrainingError, match="being trained"):
        train(new_text, tiny_job(), root=base_root, base="verses")


def test_a_fine_tuned_run_resumes_bit_for_bit(base_root, new_text):
    job = tiny_job(max_steps=20, evals=4)
    straight = Recorder()
    train(new_text, job, run="straight", root=base_root, base="verses", callbacks=straight)
    first = Recorder(stop_at=10)
    train(new_text, job, run="split", root=base_root, base="verses", callbacks=first)
    second = Recorder()
    train(new_text, job, run="split", root=base_root, resume=True, callbacks=second)
    want = {s.step: s.loss for s in straight.steps}
    got = {s.step: s.loss for s in first.steps + second.steps}
    assert want[20] == got[20] and want[10] == got[10]
    assert read_run_json(base_root / "split")["base"]["name"] == "verses"


def test_a_fine_tuned_word_model_scores_a_word_only_the_new_text_has(tmp_path, corpus, new_text):
    root = tmp_path / "checkpoints"
    train(corpus, tiny_job(Level.word, max_steps=4), run="words", root=root)
    base = load_run(root / "words")
    assert base.tokenizer.encode("zebra") == [UNK]
    model = api.train(
        new_text,
        checkpoints=root,
        base="words",
        max_steps=4,
        seq_len=16,
        batch_size=4,
        sample_every=0,
        stop_fit=0,
        device="cpu",
    )
    scored = model.score("The zebra sat on the mat.")
    assert scored.n_unk == 0 and np.isfinite(scored.log_prob)
    assert model.level == "word" and "zebra" in model.tokenizer.pieces


def test_a_subword_base_keeps_its_tokenizer(tmp_path, corpus, new_text):
    root = tmp_path / "checkpoints"
    train(corpus, tiny_job(Level.bpe, max_steps=2), run="pieces", root=root)
    result = train(new_text, tiny_job(Level.auto, max_steps=2), root=root, base="pieces")
    base, tuned = load_run(root / "pieces"), load_run(result.run)
    assert tuned.tokenizer.fingerprint() == base.tokenizer.fingerprint()
    assert read_run_json(result.run)["base"]["added_symbols"] == 0
    with pytest.raises(ConfigError, match="--vocab-size 500"):
        api.train(new_text, checkpoints=root, base="pieces", vocab_size=500)


def test_longer_units_than_the_base_knew_grow_its_length_buckets(base_root, tmp_path):
    long_lines = tmp_path / "long.txt"
    long_lines.write_text(("the zebra " * 30 + "\n") * 40, encoding="utf-8")  # 300 chars a unit
    base = load_run(base_root / "verses").model.config
    result = train(long_lines, tiny_job(max_steps=4), root=base_root, base="verses")
    tuned = load_run(result.run).model.config
    assert base.max_len < 300 < tuned.max_len
    assert read_run_json(result.run)["base"]["max_len"] == base.max_len


def test_the_command_line_fine_tunes_and_shows_the_lineage(base_root, new_text):
    runner = CliRunner()
    args = ["train", str(new_text), "--from", "verses", "--checkpoints", str(base_root)]
    args += ["--max-steps", "3", "--batch-size", "4", "--seq-len", "16", "--sample-every", "0"]
    result = runner.invoke(app, [*args, "--stop-fit", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    added = read_run_json(base_root / "letters")["base"]["added_symbols"]
    assert f"from: run verses (step 40): +{added} symbols" in result.output
    listed = runner.invoke(app, ["runs", "--checkpoints", str(base_root)])
    assert "from verses" in listed.output
    info = runner.invoke(app, ["info", "letters", "--checkpoints", str(base_root)])
    assert "fine-tuned from verses (step 40 of its best weights" in info.output
    assert (base_root / "verses" / BEST).exists()
