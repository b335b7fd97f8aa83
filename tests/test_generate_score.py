import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charrnn.checkpoint import load_run
from charrnn.config import SampleConfig, Stop
from charrnn.errors import ConfigError
from charrnn.generate import Sampler, draw, filter_logits
from charrnn.score import score
from charrnn.stopping import rule_logits
from charrnn.tokenizers import EOS, SOS


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_run(trained_run)


def test_greedy_is_deterministic(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    a = s.sample(1, SampleConfig(temperature=0, max_tokens=50))[0]
    b = s.sample(1, SampleConfig(temperature=0, max_tokens=50, seed=123))[0]
    assert a.tokens == b.tokens and a.tokens


def test_seeded_sampling_is_reproducible_and_seeds_differ(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    cfg = SampleConfig(temperature=1.0, max_tokens=60, seed=7, stop=Stop.none)
    assert s.sample(3, cfg)[2].tokens == s.sample(3, cfg)[2].tokens
    other = SampleConfig(temperature=1.0, max_tokens=60, seed=8, stop=Stop.none)
    assert s.sample(1, cfg)[0].tokens != s.sample(1, other)[0].tokens


def test_length_mode_gives_exactly_the_asked_length(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    for sample in s.sample(5, SampleConfig(stop=Stop.length, length=17, seed=1)):
        assert len(sample.tokens) == 17 and EOS not in sample.tokens and not sample.cut


def test_eos_mode_stops_at_eos_or_is_marked_cut(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    for sample in s.sample(8, SampleConfig(max_tokens=30, seed=3)):
        assert sample.cut or sample.tokens[-1] == EOS
        assert len(sample.tokens) <= 30
        assert EOS not in sample.tokens[:-1]


def test_none_mode_draws_max_tokens(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    sample = s.sample(1, SampleConfig(max_tokens=40, stop=Stop.none, seed=2))[0]
    assert len(sample.tokens) == 40 and sample.cut


@pytest.mark.parametrize("stop", [Stop.eos, Stop.halt, Stop.length])
def test_a_sample_log_prob_equals_its_score(loaded, stop):
    s = Sampler(loaded.model, loaded.tokenizer)
    checked = 0
    for sample in s.sample(6, SampleConfig(stop=stop, max_tokens=300, seed=11)):
        if sample.cut:
            continue
        body = [t for t in sample.tokens if t != EOS]
        text = loaded.tokenizer.decode(body)
        if not text.strip():
            continue  # a blank unit cannot be scored
        checked += 1
        assert loaded.tokenizer.encode(text) == body
        (result,) = score(loaded.model, loaded.tokenizer, [text], stop)
        assert result.log_prob == pytest.approx(sample.log_prob, abs=1e-4)
    assert checked >= 2


def test_score_is_the_sum_of_its_terms(loaded):
    for stop in (Stop.eos, Stop.halt, Stop.length):
        (r,) = score(loaded.model, loaded.tokenizer, ["The cat sat."], stop)
        assert r.log_prob == pytest.approx(math.fsum(t.log_prob for t in r.terms))
        assert r.log_prob < 0
        assert r.bits_per_char == pytest.approx(-r.log_prob / math.log(2) / len("The cat sat.\n"))


def _states(model, ids, remaining=None):
    """Top-layer features for <sos> x1..xn from the model's start state. (n+1, H)"""
    h, _ = model.features(torch.tensor([[SOS, *ids]]), model.start_state(1), remaining)
    return h[0]


def _token_log_probs(model, h, stop):
    return rule_logits(model.token_logits(h), stop).log_softmax(-1).double()  # (n+1, V)


def test_the_three_scores_differ_by_exactly_their_own_terms(loaded):
    model, tok = loaded.model, loaded.tokenizer
    text = "The dog sat."
    ids = tok.encode(text)
    n = len(ids)
    eos, halt, length = (
        score(model, tok, [text], s)[0] for s in (Stop.eos, Stop.halt, Stop.length)
    )
    assert [t.kind for t in eos.terms] == ["token"] * n + ["eos"]
    assert [t.kind for t in halt.terms] == ["token", "continue"] * (n - 1) + ["token", "halt"]
    assert [t.kind for t in length.terms] == ["length"] + ["token"] * n
    with torch.no_grad():
        h = _states(model, ids)  # the plain states, read by eos and halt alike
        lp = _token_log_probs(model, h, Stop.eos)  # (n+1, V)
        z = model.halt_logits(h).double()  # (n+1,)
        # length mode: x(t) is fed with n - t tokens still to come, <sos> with "unknown"
        buckets = model.length_buckets(np.arange(n, -1, -1))
        buckets[0] = model.unknown_length
        h_len = _states(model, ids, torch.as_tensor(buckets)[None])
        lp_len = _token_log_probs(model, h_len, Stop.eos)  # eos mode's, told the length
        log_tau = model.length_log_probs(h_len[0]).double()[n]
    targets = torch.tensor([*ids, EOS])
    token = lp[torch.arange(n), targets[:n]]  # log P(x(t)), eos mode
    token_len = lp_len[torch.arange(n), targets[:n]]
    log_eos = lp[n, EOS]
    renorm = -torch.log1p(-lp[:n, EOS].exp())  # log P' - log P: <eos> masked out
    renorm_len = -torch.log1p(-lp_len[:n, EOS].exp())
    halt_terms = F.logsigmoid(-z[1:n]).sum() + F.logsigmoid(z[n])  # continue..., halt

    def terms(r, kind):
        return torch.tensor([t.log_prob for t in r.terms if t.kind == kind], dtype=torch.float64)

    close = {"abs": 1e-4}
    # each rule's terms are exactly these quantities
    assert terms(eos, "token").tolist() == pytest.approx(token.tolist(), **close)
    assert terms(eos, "eos").item() == pytest.approx(float(log_eos), **close)
    assert terms(halt, "token").tolist() == pytest.approx((token + renorm).tolist(), **close)
    assert terms(halt, "continue").tolist() == pytest.approx(
        F.logsigmoid(-z[1:n]).tolist(), **close
    )
    assert terms(halt, "halt").item() == pytest.approx(float(F.logsigmoid(z[n])), **close)
    assert terms(length, "length").item() == pytest.approx(float(log_tau), **close)
    assert terms(length, "token").tolist() == pytest.approx(
        (token_len + renorm_len).tolist(), **close
    )
    # so the totals differ by exactly the terms each rule adds or removes
    assert halt.log_prob - eos.log_prob == pytest.approx(
        float(renorm.sum() + halt_terms - log_eos), **close
    )
    assert length.log_prob - eos.log_prob == pytest.approx(
        float(log_tau + (token_len + renorm_len - token).sum() - log_eos), **close
    )
    # <sos> is read without the length in length mode too: the first token is the same as halt's
    assert terms(length, "token")[0].item() == pytest.approx(
        terms(halt, "token")[0].item(), **close
    )
    # telling the length changes the later token terms (the input is not ignored)
    assert not torch.allclose(token_len[1:], token[1:], atol=1e-6)


def test_batched_scores_equal_one_at_a_time(loaded):
    sentences = ["The cat.", "A bird sang in the tree.", "Rain", "The moon set behind the sea."]
    for stop in (Stop.eos, Stop.halt, Stop.length):
        batched = score(loaded.model, loaded.tokenizer, sentences, stop)
        single = [score(loaded.model, loaded.tokenizer, [s], stop)[0] for s in sentences]
        for a, b in zip(batched, single):
            assert a.text == b.text
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)


def test_unknown_symbols_are_flagged(loaded):
    (r,) = score(loaded.model, loaded.tokenizer, ["The cat 日本"], Stop.eos)
    assert r.n_unk == 2


def test_bad_sampling_settings():
    for kwargs in (
        {"temperature": -1},
        {"temperature": float("nan")},
        {"top_k": 0},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"length": 0, "stop": Stop.length},
        {"length": 5},
    ):
        with pytest.raises(ConfigError):
            SampleConfig(**kwargs)


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    k2 = filter_logits(logits, 2, None)
    assert torch.isinf(k2[0, 2:]).all() and torch.isfinite(k2[0, :2]).all()
    p = filter_logits(logits, None, 0.7)  # 0.5 + 0.3 reach 0.7
    assert torch.isfinite(p[0, :2]).all() and torch.isinf(p[0, 2:]).all()
    p1 = filter_logits(logits, None, 0.5)
    assert torch.isfinite(p1[0, 0]) and torch.isinf(p1[0, 1:]).all()


def test_empty_sentence_is_an_error(loaded):
    with pytest.raises(ConfigError, match="empty"):
        score(loaded.model, loaded.tokenizer, ["  "], Stop.eos)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draws_follow_the_tempered_softmax(temperature):
    """The Gumbel-max draw picks each token with probability softmax(logits / T), and never a
    masked one."""
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0), -math.inf]]).expand(60_000, 4)
    gen = torch.Generator().manual_seed(0)
    tokens = draw(logits, SampleConfig(temperature=temperature), gen)
    freq = torch.bincount(tokens, minlength=4).double() / len(tokens)
    want = torch.softmax(logits[0].double() / temperature, -1)
    assert freq[3] == 0
    assert torch.allclose(freq, want, atol=0.01), (freq, want)
