"""Symbols the training text never holds but its held-out part does (a word met only after
the split): left out of training's softmax, and out of training given an even share of the
Good-Turing estimate of a new symbol's chance (RNNLM.set_unseen, RNNLM.with_unseen)."""

import json

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from charrnn.checkpoint import load_run, read_meta
from charrnn.checkpoint.tensors import META_KEY, load_tensors
from charrnn.config import ModelConfig
from charrnn.data import prepare
from charrnn.evaluate import evaluate
from charrnn.model import RNNLM
from charrnn.model.grow import grow
from charrnn.training.run import train
from tests.conftest import tiny_job

# each symbol's count in the training and the held-out text: <pad> <sos> <eos> <unk>, 4..11
TRAINED = np.array([0, 5, 9, 0, 3, 1, 1, 0, 2, 0, 0, 4])
HELD = np.array([0, 1, 1, 2, 1, 0, 0, 3, 0, 0, 1, 1])


def small_model(vocab_size: int = 12, **kw) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(vocab_size=vocab_size, hidden=8, embed=4, max_len=10, **kw))


def test_the_symbols_only_the_held_out_text_holds_are_marked_with_the_good_turing_share():
    model = small_model()
    model.set_unseen(TRAINED, HELD)
    assert torch.nonzero(model.unseen).flatten().tolist() == [3, 7, 10]  # 9: in neither text
    # symbols 5 and 6 occur once in training, of its 20 targets (<sos> is never one)
    assert model.unseen_share.item() == torch.tensor(2 / 20).item() and model.any_unseen
    model.set_unseen(TRAINED, np.zeros_like(HELD))
    assert not model.any_unseen and model.unseen_share.item() == 0.0


def test_a_grown_model_keeps_its_marks_unless_the_new_training_text_holds_the_symbol():
    model = small_model()
    model.set_unseen(TRAINED, HELD)
    grown = grow(model, ModelConfig(vocab_size=14, hidden=8, embed=4, max_len=10))
    trained = np.array([0, 3, 3, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1])  # 7 learned now, 13 new
    held = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0])  # 4 seen by the base, 12 new
    grown.set_unseen(trained, held, kept=12)
    assert torch.nonzero(grown.unseen).flatten().tolist() == [3, 10, 12]


def test_out_of_training_the_unseen_symbols_share_a_fixed_chance_and_the_rest_keep_theirs():
    model = small_model().eval()
    model.set_unseen(TRAINED, HELD)
    h = torch.randn(5, 8)
    with torch.no_grad():
        p = torch.softmax(model.token_logits(h).double(), dim=-1)
        raw = model.head.weight @ h.T + model.head.bias[:, None]  # (V, 5)
    unseen = model.unseen > 0
    torch.testing.assert_close(p.sum(-1), torch.ones(5, dtype=torch.double))
    assert torch.allclose(p[:, unseen], torch.full((5, 3), 0.1 / 3, dtype=torch.double))
    rest = torch.softmax(raw[~unseen].T.double(), dim=-1) * 0.9
    torch.testing.assert_close(p[:, ~unseen], rest, rtol=1e-5, atol=1e-7)


def test_training_leaves_the_unseen_symbols_out_and_their_rows_unmoved():
    model = small_model().train()
    model.set_unseen(TRAINED, HELD)
    x, y = torch.randint(4, 12, (2, 6)), torch.tensor([[4, 5, 6, 8, 11, 4]] * 2)
    logits, _ = model(x)
    unseen = model.unseen > 0
    assert torch.isinf(logits[..., unseen]).all() and torch.isfinite(logits[..., ~unseen]).all()
    F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    assert not model.head.weight.grad[unseen].any() and not model.head.bias.grad[unseen].any()
    assert model.head.weight.grad[~unseen].abs().sum() > 0


def test_a_run_gives_its_held_out_only_symbols_their_share_and_old_runs_load_without(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("CHARRNN_CACHE", str(tmp_path / "cache"))
    corpus = tmp_path / "text.txt"
    lines = ["the cat sat on the mat and the dog ran far away."] * 60 + ["a quiz: jumps!"] * 8
    corpus.write_text("\n".join(lines) + "\n")
    result = train(corpus, tiny_job(max_steps=8), root=tmp_path / "ck")
    run = load_run(result.run)
    marked = {run.tokenizer.piece(i) for i in torch.nonzero(run.model.unseen).flatten().tolist()}
    assert marked == set("quiz:jp!")  # "a", "m", "s": training has them
    share = run.model.unseen_share.item()
    assert 0 < share <= 1 / 48  # at least one pseudo-hapax over training's targets
    _, val = prepare(corpus, tiny_job().data)[0].split(0.1)
    loss, _ = evaluate(run.model, val, 16)
    assert np.isfinite(loss) and abs(loss - result.val.loss) < 1e-4

    # a run of format 8 loads with nothing marked
    for name in ("best.safetensors", "last.safetensors"):
        path = result.run / name
        tensors = load_tensors(path)
        del tensors["model.unseen"], tensors["model.unseen_share"]
        meta = {**read_meta(path), "format_version": 8}
        save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    old = load_run(result.run)
    assert not old.model.any_unseen and not old.model.unseen.any()


def test_symbol_counts_read_every_piece_of_a_split_a_chunk_at_a_time():
    from charrnn.data.split import Pieces, Split

    tokens = np.array([1, 4, 5, 5, 2, 1, 6, 7, 2, 1, 4, 2], dtype=np.uint16)
    pieces = Pieces(tokens, [(0, 5), (9, 12)])  # the first and the last unit
    split = Split(pieces, np.array([0, 5]), 0, 0)
    want = np.bincount(np.r_[tokens[0:5], tokens[9:12]], minlength=9)
    for chunk in (2, 3, 1 << 24):
        assert np.array_equal(split.symbol_counts(9, chunk=chunk), want)
    whole = Split(tokens, np.array([0, 5, 9]), 0, 0)
    assert np.array_equal(whole.symbol_counts(9, chunk=5), np.bincount(tokens, minlength=9))
