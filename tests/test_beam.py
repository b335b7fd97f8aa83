"""Beam search: one beam is greedy sampling, a wide beam finds the known best sequence, and a
beam's log-probability is the score of its text."""

import itertools
import math

import pytest
import torch

import charrnn
from charrnn import beam
from charrnn.checkpoint import load_run
from charrnn.config import Cell, ModelConfig, SampleConfig, Stop
from charrnn.errors import ConfigError
from charrnn.generate import Sampler
from charrnn.model import RNNLM
from charrnn.score import _score_batch, score
from charrnn.stopping import rule, rule_logits
from charrnn.tokenizers import EOS, CharTokenizer
from tests.test_fast_paths import KINDS, random_model

ENDING = [Stop.eos, Stop.halt, Stop.length]


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_run(trained_run)


class _Letters(CharTokenizer):
    """A char tokenizer of any size, for random models."""

    def __init__(self, vocab: int):
        from charrnn.config import Level, TokenizerConfig

        pieces = ["<pad>", "<sos>", "<eos>", "<unk>", *(chr(97 + i) for i in range(vocab - 4))]
        super().__init__(TokenizerConfig(level=Level.char), pieces)


def sampler_for(model: RNNLM) -> Sampler:
    return Sampler(model, _Letters(model.config.vocab_size))


@pytest.mark.parametrize(("cell", "nonlinearity"), KINDS)
@pytest.mark.parametrize("stop", ENDING)
def test_one_beam_is_greedy_sampling(cell, nonlinearity, stop):
    model = random_model(cell, nonlinearity)
    s = sampler_for(model)
    for prompt in ("", "ab"):
        c = SampleConfig(temperature=0, stop=stop, max_tokens=40)
        (greedy,) = s.sample(1, c, prompt)
        (one,) = beam.search(
            s, 1, SampleConfig(temperature=0, stop=stop, max_tokens=40, beam=1), prompt
        )
        assert one.tokens == greedy.tokens and one.cut == greedy.cut
        assert one.log_prob == pytest.approx(greedy.log_prob, abs=1e-4)


def small_model(seed: int) -> RNNLM:
    """Four tokens it may draw (<unk>, a, b, c): every short sequence can be listed."""
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=7, cell=Cell.gru, hidden=8, embed=4, max_len=6)
    model = RNNLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def known_best(model: RNNLM, stop: Stop, longest: int) -> tuple[float, list[int]]:
    """The likeliest text of at most ``longest`` drawn tokens (<eos> counted), by listing them
    all and scoring each as ``score`` does; under length, of exactly 4 tokens."""
    sizes = {Stop.eos: range(1, longest), Stop.halt: range(1, longest + 1), Stop.length: [4]}
    seqs = [list(t) for n in sizes[stop] for t in itertools.product((3, 4, 5, 6), repeat=n)]
    with torch.no_grad():
        scored = _score_batch(model, None, seqs, rule(stop))  # type: ignore[arg-type]
    found = [(r.log_prob, q) for r, q in zip(scored, seqs)]
    if stop is Stop.eos:  # the empty text: <eos> first
        with torch.no_grad():
            h, _ = model.features(torch.tensor([[1]]))
            lp = rule_logits(model.token_logits(h[0, -1]), stop).log_softmax(-1)
        found.append((float(lp[EOS]), []))
    return max(found)


@pytest.mark.parametrize("stop", ENDING)
def test_a_wide_beam_finds_the_best_sequence_greedy_misses(stop):
    longest = 4
    length = 4 if stop is Stop.length else None
    c = SampleConfig(temperature=0, stop=stop, max_tokens=longest, length=length)
    for seed in range(40):  # a model whose greedy text is not its likeliest
        model = small_model(seed)
        s = sampler_for(model)
        best_lp, best = known_best(model, stop, longest)
        (greedy,) = s.sample(1, c)
        if greedy.cut or greedy.log_prob < best_lp - 1e-3:
            break
    else:
        pytest.fail("no model among 40 where greedy misses the likeliest text")
    (found,) = beam.search(s, 1, SampleConfig(**{**c.__dict__, "beam": 400}))
    assert [t for t in found.tokens if t != EOS] == best and not found.cut
    assert found.log_prob == pytest.approx(best_lp, abs=1e-4)
    assert greedy.cut or found.log_prob > greedy.log_prob


def plain_model(cell: Cell = Cell.rnn) -> RNNLM:
    """Default weights: a model that ends its units now and then (random_model's livelier
    weights loop with confidence)."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=12, cell=cell, layers=2, hidden=16, embed=8, max_len=40)
    return RNNLM(config).eval()


@pytest.mark.parametrize("stop", ENDING)
def test_a_beam_log_prob_is_the_score_of_its_tokens(stop):
    model = plain_model()
    beams = beam.search(sampler_for(model), 4, SampleConfig(stop=stop, max_tokens=60, beam=5))
    assert len(beams) == 4
    finished = [b for b in beams if not b.cut and [t for t in b.tokens if t != EOS]]
    assert len(finished) >= 2
    with torch.no_grad():
        bodies = [[t for t in b.tokens if t != EOS] for b in finished]
        scored = _score_batch(model, None, bodies, rule(stop))  # type: ignore[arg-type]
    for b, r in zip(finished, scored):
        assert r.log_prob == pytest.approx(b.log_prob, abs=1e-4)
    assert [b.log_prob for b in beams] == sorted((b.log_prob for b in beams), reverse=True)


def test_a_beam_log_prob_is_the_score_of_its_text(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    beams = beam.search(s, 4, SampleConfig(stop=Stop.length, beam=4))
    texts = [b for b in beams if b.text.strip()]
    assert texts
    for b in texts:
        assert len(b.tokens) == b.length and not b.cut
        (r,) = score(loaded.model, loaded.tokenizer, [b.text], Stop.length)
        assert r.log_prob == pytest.approx(b.log_prob, abs=1e-4)


def test_beam_search_beats_greedy_and_sampling_in_log_prob():
    s = sampler_for(plain_model())
    c = SampleConfig(temperature=0, max_tokens=100, stop=Stop.length, length=12)
    (greedy,) = s.sample(1, c, "ab")
    (best,) = beam.search(s, 1, SampleConfig(**{**c.__dict__, "beam": 8}), "ab")
    drawn = s.sample(20, SampleConfig(**{**c.__dict__, "temperature": 0.8, "seed": 1}), "ab")
    assert len(best.tokens) == len(greedy.tokens) == 12
    assert best.log_prob > greedy.log_prob
    assert best.log_prob > max(d.log_prob for d in drawn)


def test_length_penalty_favours_longer_beams(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    plain = beam.search(s, 1, SampleConfig(max_tokens=100, beam=6), "The")[0]
    long = beam.search(s, 1, SampleConfig(max_tokens=100, beam=6, length_penalty=2.0), "The")[0]
    assert len(long.tokens) >= len(plain.tokens)
    assert long.log_prob <= plain.log_prob + 1e-9  # the reported figure stays log P


def test_beams_obey_bans_and_stop_strings(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    c = SampleConfig(max_tokens=60, beam=4, ban=("t",), stop_at=("e ",), keep_stop=True)
    for b in beam.search(s, 4, c, "The "):
        assert "t" not in b.continuation
        assert b.stop_string is None or b.text.endswith("e ")


def test_bad_beam_settings_are_refused(loaded, trained_run):
    s = Sampler(loaded.model, loaded.tokenizer)
    with pytest.raises(ConfigError, match="-n 3 is more than --beam 2"):
        beam.search(s, 3, SampleConfig(beam=2))
    for kwargs, needle in (
        ({"beam": 0}, "--beam must be at least 1"),
        ({"beam": 2, "stop": Stop.none}, "--beam needs a rule that ends"),
        ({"beam": 2, "length_penalty": math.nan}, "--length-penalty"),
    ):
        with pytest.raises(ConfigError, match=needle):
            SampleConfig(**kwargs)
    model = charrnn.load(trained_run)
    assert len(model.samples(2, "The", beam=3, max_tokens=50)) == 2
    with pytest.raises(ConfigError, match="--beam must be at least 1"):
        model.sample(beam=0)
