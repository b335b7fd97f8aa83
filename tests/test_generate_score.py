import math

import pytest
import torch

from charrnn.checkpoint import load_run
from charrnn.errors import ConfigError
from charrnn.generate import SampleConfig, Sampler, Stop, filter_logits, rule_logits
from charrnn.score import score
from charrnn.tokenizers import EOS


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


def test_the_three_rules_differ_by_their_own_terms(loaded):
    text = "The dog sat."
    n = len(text)
    eos, halt, length = (
        score(loaded.model, loaded.tokenizer, [text], s)[0]
        for s in (Stop.eos, Stop.halt, Stop.length)
    )
    assert [t.kind for t in eos.terms] == ["token"] * n + ["eos"]
    assert [t.kind for t in halt.terms].count("continue") == n - 1
    assert halt.terms[-1].kind == "halt"
    assert [t.kind for t in length.terms] == ["length"] + ["token"] * n
    # eos and halt read the same states: the token terms differ only by renormalising
    # without <eos>, i.e. by log(1 - P(<eos>)) at each step
    logits, _ = loaded.model(torch.tensor([[1, *loaded.tokenizer.encode(text)]]))
    p_eos = rule_logits(logits, Stop.eos).softmax(-1)[0, :-1, EOS].double()
    eos_tokens = [t.log_prob for t in eos.terms if t.kind == "token"]
    halt_tokens = [t.log_prob for t in halt.terms if t.kind == "token"]
    for a, b, p in zip(eos_tokens, halt_tokens, p_eos.tolist()):
        assert b == pytest.approx(a - math.log1p(-p), abs=1e-5)


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
