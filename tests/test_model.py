import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.config import Cell, ModelConfig, Nonlinearity
from charrnn.errors import ConfigError
from charrnn.model import RNNLM, detach_state
from charrnn.training.calibrate import fit_start_state


def config(cell=Cell.lstm, **kw) -> ModelConfig:
    base = dict(vocab_size=12, cell=cell, layers=2, hidden=16, embed=8, max_len=100)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("cell", list(Cell))
def test_shapes_and_state(cell):
    model = RNNLM(config(cell))
    tokens = torch.randint(4, 12, (3, 5))
    logits, state = model(tokens)
    assert logits.shape == (3, 5, 12)
    assert len(state) == (2 if cell is Cell.lstm else 1)
    assert all(s.shape == (2, 3, 16) for s in state)
    h, _ = model.features(tokens)
    assert model.halt_logits(h).shape == (3, 5)
    assert model.length_logits(h).shape == (3, 5, model.n_buckets)


def test_state_is_detached_between_windows():
    model = RNNLM(config())
    _, state = model(torch.randint(4, 12, (2, 4)))
    assert all(s.requires_grad for s in state)
    detached = detach_state(state)
    assert not any(s.requires_grad for s in detached)
    assert all(torch.equal(a, b) for a, b in zip(state, detached))


def test_carried_state_equals_one_long_pass():
    model = RNNLM(config(Cell.gru)).eval()
    tokens = torch.randint(4, 12, (2, 10))
    # the length input says how far into the unit each token is, as training windows do
    ids = torch.as_tensor(model.unknown_at(np.arange(10))).expand(2, -1)  # (2, 10)
    whole, _ = model(tokens, None, ids)
    first, state = model(tokens[:, :6], None, ids[:, :6])
    second, _ = model(tokens[:, 6:], detach_state(state), ids[:, 6:])
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)
    # without it, offsets count from each row's start: a window read on its own is a new unit
    alone, _ = model(tokens[:, 6:], detach_state(state))
    assert not torch.allclose(alone, second, atol=1e-6)


def test_init_state_follows_parameters():
    model = RNNLM(config()).to(torch.float64)
    assert all(s.dtype == torch.float64 for s in model.init_state(2))


def test_relu_elman_and_tied_weights():
    model = RNNLM(config(Cell.rnn, nonlinearity=Nonlinearity.relu, tie_weights=True))
    assert model.rnn.nonlinearity == "relu"
    assert model.head is None
    logits, _ = model(torch.randint(4, 12, (1, 3)))
    assert logits.shape == (1, 3, 12)


def test_length_log_probs_are_a_distribution_over_lengths():
    model = RNNLM(config())
    h, _ = model.features(torch.randint(4, 12, (2, 3)))
    lp = model.length_log_probs(h)
    assert lp.shape == (2, 3, 101)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 3), atol=1e-5)


def test_bad_configs():
    with pytest.raises(ConfigError):
        ModelConfig(layers=0)
    with pytest.raises(ConfigError):
        ModelConfig(dropout=1.0)
    with pytest.raises(ConfigError):
        RNNLM(ModelConfig())  # vocabulary not fitted to a corpus


def test_overfits_a_tiny_text():
    torch.manual_seed(0)
    text = "hello world, this is charrnn. "
    chars = sorted(set(text))
    ids = torch.tensor([[4 + chars.index(c) for c in text * 2]])
    model = RNNLM(config(vocab_size=4 + len(chars), layers=1, hidden=64, embed=16))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = ids[:, :-1], ids[:, 1:]
    for _ in range(150):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert math.isfinite(loss.item())


def test_units_start_from_the_fitted_start_state():
    torch.manual_seed(0)
    model = RNNLM(config(Cell.lstm)).eval()
    stream = torch.randint(4, 12, (200,))
    stream[[30, 90, 150]] = 2  # <eos>
    eos = np.array([30, 90, 150])
    fit_start_state(model, stream.numpy(), eos, units=3, context=16)
    windows = torch.stack([stream[e - 15 : e + 1] for e in eos])
    # read as in training: each token knows its offset in its unit (the units start at 0, 31, 91)
    offsets = np.stack([np.arange(e - 15, e + 1) - s for e, s in zip(eos, [0, 31, 91])])
    _, (h, c) = model(windows, model.init_state(3), torch.as_tensor(model.unknown_at(offsets)))
    assert torch.allclose(model.start_h[0], h.mean(1, keepdim=True), atol=1e-6)
    assert torch.allclose(model.start_h[1], c.mean(1, keepdim=True), atol=1e-6)
    # state=None starts a unit from it, not from zeros
    tokens = torch.randint(4, 12, (2, 4))
    from_none, _ = model(tokens)
    from_start, _ = model(tokens, model.start_state(2))
    from_zero, _ = model(tokens, model.init_state(2))
    assert torch.equal(from_none, from_start) and not torch.allclose(from_none, from_zero)


def _grads(model: RNNLM, head_weight: float) -> None:
    """Gradients of the token loss plus ``head_weight`` x the halt and length heads' losses,
    the heads reading the state detached (as training does)."""
    torch.manual_seed(0)
    tokens = torch.randint(4, 12, (3, 9))
    remaining = torch.randint(0, 2 * model.n_buckets, (3, 9))  # lengths shown and unknown
    model.zero_grad()
    h, _ = model.features(tokens, None, remaining)
    loss = F.cross_entropy(model.token_logits(h[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    h = h.detach()
    heads = model.halt_logits(h).sum() + model.length_logits(h).logsumexp(-1).sum()
    (loss + head_weight * heads).backward()


def test_the_stop_heads_never_shrink_the_language_models_step():
    """Clipping sees the language model's gradient alone, with the length input's rows at the
    scale they are read through; the heads are clipped by their own norm."""
    from charrnn.training.optim import clip_gradients

    model = RNNLM(config())
    heads = {id(p) for p in model.stop_head_parameters()}
    assert len(heads) == 4  # halt and length: a weight and a bias each
    _grads(model, head_weight=0.0)
    clip_gradients(model, 1e-3)
    alone = {n: p.grad.clone() for n, p in model.named_parameters() if id(p) not in heads}
    _grads(model, head_weight=1e3)  # loud heads: under one norm they would take the clip
    clip_gradients(model, 1e-3)
    for n, p in model.named_parameters():
        if id(p) in heads:
            continue
        assert torch.allclose(p.grad, alone[n], rtol=1e-5, atol=0), n
    effective = [
        p.grad / model.length_scales if p is model.len_embed.weight else p.grad
        for p in model.parameters()
        if id(p) not in heads
    ]
    assert torch.linalg.vector_norm(torch.stack([g.norm() for g in effective])) == pytest.approx(
        1e-3, rel=1e-4
    )
    head_norm = torch.stack([p.grad.norm() for p in model.stop_head_parameters()]).norm()
    assert head_norm == pytest.approx(1e-3, rel=1e-4)


def test_unknown_length_rows_are_read_as_they_are():
    """The remaining-length rows are read times LENGTH_INPUT_SCALE (they learn that much
    faster), the unknown rows as stored, or as a run of format 3 read them (unknown_scale)."""
    from charrnn.model import LENGTH_INPUT_SCALE

    for unknown_scale in (1.0, 10.0):
        model = RNNLM(config(unknown_scale=unknown_scale))
        n, w = model.n_buckets, model.len_embed.weight
        table = model.length_table()
        assert torch.equal(table[:n], LENGTH_INPUT_SCALE * w[:n])
        assert torch.equal(table[n:], unknown_scale * w[n:])
        assert table.std().item() == pytest.approx(0.02, rel=0.3)  # quiet at first, every row
        ids = torch.tensor([[0, n - 1, n, 2 * n - 1]])
        assert torch.equal(model.length_input(ids)[0], table[ids[0]])


@pytest.mark.parametrize("cell", list(Cell))
@pytest.mark.parametrize(
    ("tie", "embed", "heads", "layers"),
    [(False, 16, True, 1), (True, 16, False, 2), (True, 24, True, 3)],
)
def test_a_configs_shapes_are_those_of_the_model_it_makes(cell, tie, embed, heads, layers):
    """model_shapes(config) lists what RNNLM(config) holds, without making it."""
    from charrnn.model import model_shapes

    config = ModelConfig(
        vocab_size=11,
        cell=cell,
        layers=layers,
        hidden=24,
        embed=embed,
        tie_weights=tie,
        stop_heads=heads,
        max_len=80,
    )
    made = {k: tuple(v.shape) for k, v in RNNLM(config).state_dict().items()}
    assert model_shapes(config) == made
