"""The fast paths compute what the straightforward ones do: the one-step sampler against
``model.features`` token by token, the fast sampler against the reference sampler, and the
training step's blocked loss and folded output bias against F.cross_entropy and the model's
own calibration."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn import tokenloss
from charrnn.config import Cell, ModelConfig, Nonlinearity, SampleConfig, Stop
from charrnn.generate import Sampler
from charrnn.model import RNNLM
from charrnn.model.stepper import Stepper
from charrnn.score import _target_log_probs
from charrnn.stopping import rule_logits
from charrnn.tokenizers import EOS, PAD, SOS

KINDS = [
    (Cell.rnn, Nonlinearity.tanh),
    (Cell.rnn, Nonlinearity.relu),
    (Cell.gru, Nonlinearity.tanh),
    (Cell.lstm, Nonlinearity.tanh),
]


def random_model(cell: Cell, nonlinearity: Nonlinearity, unseen: bool = False, **kw) -> RNNLM:
    torch.manual_seed(0)
    base = dict(vocab_size=23, cell=cell, nonlinearity=nonlinearity, layers=3, hidden=24)
    base.update(embed=10, max_len=40, dropout=0.1, **kw)
    model = RNNLM(ModelConfig(**base)).eval()
    with torch.no_grad():  # livelier than the default init, so differences would show
        for p in model.parameters():
            p.mul_(2.0)
        if model.config.stop_heads:
            model.end_bias.copy_(torch.tensor([1.5, -0.5]))  # a calibrated end, as after training
    if unseen:  # symbols 5, 9 and 17 only in held-out text, a third of the chance for them
        trained, held = np.full(23, 4), np.zeros(23, dtype=np.int64)
        trained[[5, 9, 17]], held[[5, 9, 17]] = 0, 1
        trained[[10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21, 22]] = 1
        model.set_unseen(trained, held)
        assert 0.2 < model.unseen_share.item() < 0.5
    return model


@pytest.mark.parametrize(("cell", "nonlinearity"), KINDS)
@pytest.mark.parametrize(("tie_weights", "unseen"), [(False, False), (True, False), (True, True)])
def test_one_step_equals_features_step_by_step(cell, nonlinearity, tie_weights, unseen):
    model = random_model(cell, nonlinearity, unseen, tie_weights=tie_weights)
    step = Stepper(model)
    g = torch.Generator().manual_seed(1)
    n, steps = 3, 12
    tokens = torch.randint(4, 23, (n, steps), generator=g)
    buckets = torch.randint(0, model.n_buckets + 1, (n, steps), generator=g)
    with torch.no_grad():
        _, ref_state = model.features(tokens[:, :2])
        state = ref_state
        for t in range(2, steps):
            remaining = None if t % 3 == 0 else buckets[:, t]
            r = None if remaining is None else remaining[:, None]
            h_ref, ref_state = model.features(tokens[:, t : t + 1], ref_state, r)
            h, state = step(tokens[:, t], state, remaining)
            assert h.shape == (n, 24)
            torch.testing.assert_close(h, h_ref[:, 0], atol=1e-5, rtol=1e-5)
            for s, s_ref in zip(state, ref_state):
                torch.testing.assert_close(s, s_ref, atol=1e-5, rtol=1e-5)
            diff = (step.token_logits(h) - model.token_logits(h_ref[:, 0])).abs().max()
            assert float(diff) < 1e-4


def test_each_sampling_call_reads_the_current_weights():
    model = random_model(Cell.lstm, Nonlinearity.tanh)
    tok, state = torch.tensor([5]), model.init_state(1)
    with torch.no_grad():
        before, _ = Stepper(model)(tok, state)
        model.rnn.weight_ih_l0.add_(0.5)  # as an optimizer step would, between two samples
        after, _ = Stepper(model)(tok, state)
        ref, _ = model.features(tok[:, None], state)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, ref[:, 0], atol=1e-5, rtol=1e-5)


def test_one_step_is_not_used_where_it_would_differ():
    model = random_model(Cell.gru, Nonlinearity.tanh)
    assert Stepper.usable(model)
    model.train()  # dropout between layers: only features knows how
    assert not Stepper.usable(model)


def run_sampler(sampler: Sampler, n: int, config: SampleConfig, prompt: list[int]):
    info: dict[str, np.ndarray] = {}
    steps = list(sampler.iter_tokens(n, config, prompt, info))
    return steps, info


@pytest.mark.parametrize(
    ("cell", "nonlinearity", "unseen"),
    [*[(*k, False) for k in KINDS], (Cell.lstm, Nonlinearity.tanh, True)],
)
@pytest.mark.parametrize("stop", list(Stop))
def test_fast_sampler_gives_the_reference_samples(cell, nonlinearity, unseen, stop):
    model = random_model(cell, nonlinearity, unseen)
    fast, ref = Sampler(model, None, fast=True), Sampler(model, None, fast=False)  # type: ignore[arg-type]
    length = 9 if stop is Stop.length else None
    for temperature, seed in ((0.0, None), (1.0, 5), (0.7, 9)):
        cfg = SampleConfig(temperature=temperature, seed=seed, stop=stop, max_tokens=25)
        if length is not None and temperature == 1.0:
            cfg = SampleConfig(temperature=1.0, seed=seed, stop=stop, max_tokens=25, length=length)
        got, got_info = run_sampler(fast, 4, cfg, [1, 7, 8])
        want, want_info = run_sampler(ref, 4, cfg, [1, 7, 8])
        assert got == want and got
        np.testing.assert_allclose(got_info["log_prob"], want_info["log_prob"], atol=1e-4)
        assert np.array_equal(got_info["cut"], want_info["cut"])
        assert np.array_equal(got_info["length"], want_info["length"])


@pytest.mark.parametrize("fast", [True, False])
def test_none_mode_restarts_units_inside_the_batch(fast):
    """A stream that draws <eos> reads <sos> at the next step, beside the others' tokens:
    each still draws exactly --max-tokens tokens, and its log-prob is the model's own over
    the whole stream, <sos> after every <eos>, read in one pass."""
    model = random_model(Cell.lstm, Nonlinearity.tanh)
    with torch.no_grad():
        model.end_bias[0] = 4.0  # ends often, so that streams restart at different steps
    prompt, n, max_tokens = [SOS, 7, 8], 5, 30
    cfg = SampleConfig(temperature=1.0, seed=4, stop=Stop.none, max_tokens=max_tokens)
    steps, info = run_sampler(Sampler(model, None, fast=fast), n, cfg, prompt)  # type: ignore[arg-type]
    drawn_by: list[list[int]] = [[] for _ in range(n)]
    for pairs, _ in steps:
        for i, t in pairs:
            drawn_by[i].append(t)
    ends = [tokens.count(EOS) for tokens in drawn_by]
    assert len(set(ends)) > 1 and min(ends) > 0  # restarts, at different steps per stream
    assert info["cut"].all()
    for tokens, log_prob in zip(drawn_by, info["log_prob"]):
        assert len(tokens) == max_tokens
        stream = list(prompt)
        for t in tokens:
            stream += [t, SOS] if t == EOS else [t]
        with torch.no_grad():
            h, _ = model.features(torch.tensor([stream]))
            lp = rule_logits(model.token_logits(h[0]), Stop.none).log_softmax(-1)  # (L, V)
        drawn = [i for i in range(len(prompt), len(stream)) if stream[i - 1] != EOS]
        want = sum(float(lp[i - 1, stream[i]]) for i in drawn)
        assert len(drawn) == max_tokens
        assert abs(log_prob - want) < 1e-3


def test_scoring_logits_in_slices_equals_all_at_once():
    model = random_model(Cell.gru, Nonlinearity.tanh)
    g = torch.Generator().manual_seed(2)
    h, targets = torch.randn(50, 24, generator=g), torch.randint(3, 23, (50,), generator=g)
    with torch.no_grad():
        want = rule_logits(model.token_logits(h), Stop.halt).log_softmax(-1)
        want = want.gather(-1, targets[:, None]).squeeze(-1).double()
        whole = _target_log_probs(model, h, targets, Stop.halt)
        sliced = _target_log_probs(model, h, targets, Stop.halt, max_logits=23 * 7)
    assert whole.shape == sliced.shape == (50,)
    torch.testing.assert_close(whole, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sliced, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("vocab", [7, 65, 700])
def test_blocked_cross_entropy_equals_f_cross_entropy(monkeypatch, dtype, vocab):
    monkeypatch.setattr(tokenloss, "BLOCK", 1000)  # several blocks, the last one short
    torch.manual_seed(vocab)
    logits = (4 * torch.randn(301, vocab)).to(dtype).requires_grad_()
    targets = torch.randint(0, vocab, (301,))
    targets[::13] = PAD
    before = logits.detach().clone()
    ours = tokenloss.cross_entropy_sum(logits, targets)
    (ours / 7).backward()
    grad, logits.grad = logits.grad, None
    assert torch.equal(logits.detach(), before)  # backward leaves the saved logits alone
    theirs = F.cross_entropy(logits.float(), targets, ignore_index=PAD, reduction="sum")
    (theirs / 7).backward()
    assert ours.dtype == torch.float32
    assert abs(float(ours.detach()) - float(theirs.detach())) <= 1e-5 * float(theirs.detach())
    assert grad.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 4e-3  # bf16: one rounding of the same value
    assert torch.allclose(grad.float(), logits.grad.float(), atol=tol, rtol=0)
    assert grad[targets == PAD].abs().max() == 0


@pytest.mark.parametrize("tie_weights", [False, True])
def test_training_logits_fold_the_end_shift_into_the_bias(tie_weights):
    model = random_model(Cell.lstm, Nonlinearity.tanh, tie_weights=tie_weights)
    h = torch.randn(3, 5, 24)
    with torch.no_grad():
        model.log_temperature.fill_(0.4)  # out of training only
        expected = model.calibrated(model.head_logits(h), torch.ones(()))
        model.train()
        folded = model.token_logits(h)
    assert expected[..., EOS].sub(model.head_logits(h)[..., EOS]).abs().min() > 1.0
    assert torch.allclose(folded, expected, atol=1e-5)
