"""Property-based tests: tokenizer round trips at every level, scores that are the sum of their
terms, and seeded sampling that is reproducible. (That a sample's log-probability is its
score is checked in test_generate_score.py.)"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from charrnn.checkpoint import load_run
from charrnn.config import Level, SampleConfig, Stop, TokenizerConfig
from charrnn.generate import Sampler
from charrnn.score import score
from charrnn.tokenizers import EOS, PAD, SOS, TOKENIZERS, fit_tokenizer
from tests.conftest import VERSES

FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # the per-test cache is fine
)
FEWER = settings(FEW, max_examples=8)  # each example runs the model

# Every level this charrnn has; a new level (bpe, unigram) joins the round-trip tests by being
# registered in tokenizers.TOKENIZERS. FIT holds the settings a level needs to be fitted on
# the small texts here (subword levels: a small vocabulary, yet room for the 256 byte pieces,
# the special symbols, VERSES' characters and every one of a text's 60: 348 at most).
LEVELS = [level for level in Level if level in TOKENIZERS]
FIT: dict[Level, dict] = {Level.bpe: {"vocab_size": 400}, Level.unigram: {"vocab_size": 400}}

# Any text: letters, digits, punctuation, spaces, line breaks, symbols, other scripts.
ANY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFFF), max_size=60
)
PROSE = st.text(alphabet=st.sampled_from([*sorted(set(VERSES)), "'", "-", "é"]), max_size=60)


def fitted(level: Level, text: str = ""):
    return fit_tokenizer(TokenizerConfig(level=level, **FIT.get(level, {})), [VERSES * 3, text])


@pytest.mark.parametrize("level", LEVELS, ids=lambda lv: lv.value)
@FEW
@given(text=st.one_of(ANY_TEXT, PROSE), fit_on_it=st.booleans())
@example(text="".join(map(chr, range(0x100, 0x13C))), fit_on_it=True)  # 60 new characters
def test_ids_survive_decoding_and_encoding_again(level, text, fit_on_it):
    """At every level, decoding then encoding gives back the same tokens, known or not."""
    tok = fitted(level, text if fit_on_it else "")
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size and i not in (PAD, SOS, EOS) for i in ids)
    assert tok.encode(tok.decode(ids)) == ids


@FEW
@given(text=ANY_TEXT)
def test_char_level_gives_back_the_very_text(text):
    tok = fitted(Level.char, text)  # every character of the text is in the vocabulary
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text.replace("<unk>", "?"))


@FEW
@given(text=ANY_TEXT)
def test_char_level_unknown_symbols_become_unk(text):
    tok = fitted(Level.char)
    known = set(VERSES)
    want = "".join(c if c in known else "<unk>" for c in text.replace("<unk>", "\0"))
    assert tok.decode(tok.encode(text)) == want


# -- score ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_tokenizer(trained_run):
    run = load_run(trained_run)
    return run.model, run.tokenizer


SENTENCE = st.text(alphabet=st.sampled_from([*sorted(set(VERSES)), "ü"]), min_size=1, max_size=25)


def stepwise_log_prob(model, ids: list[int], stop: Stop) -> float:
    """log P(<sos> ids <eos>) under ``stop``, feeding one token at a time: an independent
    implementation of the sum that score computes in one batched pass."""
    n, total, state = len(ids), 0.0, None
    rem = torch.as_tensor(model.unknown_at(0)).reshape(1, 1)  # <sos>: length unknown
    with torch.no_grad():
        h, state = model.features(torch.tensor([[SOS]]), state, rem)
        if stop is Stop.length:
            total += (
                float(model.length_log_probs(h[0, -1])[n])
                if n <= model.config.max_len
                else -math.inf
            )
        for k, target in enumerate([*ids, EOS] if stop is Stop.eos else ids, start=1):
            logits = model.token_logits(h[0, -1]).float().clone()
            logits[[PAD, SOS]] = -math.inf
            if stop is not Stop.eos:
                logits[EOS] = -math.inf
            total += float(F.log_softmax(logits, -1)[target])
            if k > n:
                break
            if stop is Stop.length:
                rem = torch.as_tensor(model.length_buckets(n - k)).reshape(1, 1)
            else:  # unknown, k tokens into the unit
                rem = torch.as_tensor(model.unknown_at(k)).reshape(1, 1)
            h, state = model.features(torch.tensor([[target]]), state, rem)
            if stop is Stop.halt:
                z = float(model.halt_logits(h[0, -1]))
                total += F.logsigmoid(torch.tensor(z if k == n else -z)).item()
    return total


@pytest.mark.parametrize("stop", [Stop.eos, Stop.halt, Stop.length], ids=lambda s: s.value)
@FEWER
@given(sentences=st.lists(SENTENCE, min_size=1, max_size=4))
def test_score_is_the_sum_of_its_terms(model_and_tokenizer, stop, sentences):
    model, tok = model_and_tokenizer
    assume(all(s.strip() for s in sentences))
    results = score(model, tok, sentences, stop)
    for s, r in zip(sentences, results):
        assert r.text == s
        assert r.log_prob == math.fsum(t.log_prob for t in r.terms)
        assert all(t.log_prob <= 1e-9 for t in r.terms)
        assert r.log_prob == pytest.approx(stepwise_log_prob(model, tok.encode(s), stop), abs=1e-3)
        assert r.log_prob == pytest.approx(score(model, tok, [s], stop)[0].log_prob, abs=1e-4)


# -- sampling ------------------------------------------------------------------------------

SAMPLING = st.builds(
    SampleConfig,
    temperature=st.sampled_from([0.0, 0.5, 1.0, 1.5]),
    top_k=st.one_of(st.none(), st.integers(1, 30)),
    top_p=st.one_of(st.none(), st.floats(0.05, 1.0)),
    max_tokens=st.integers(1, 40),
    stop=st.sampled_from([Stop.eos, Stop.halt, Stop.length, Stop.none]),
    seed=st.integers(0, 2**31),
)


@FEWER
@given(config=SAMPLING, n=st.integers(1, 3), prompt=st.sampled_from(["", "The ", "Rain"]))
def test_a_seeded_sample_is_reproducible(model_and_tokenizer, config, n, prompt):
    model, tok = model_and_tokenizer
    rng = torch.get_rng_state()
    a = Sampler(model, tok).sample(n, config, prompt)
    b = Sampler(model, tok).sample(n, config, prompt)
    assert [(s.tokens, s.text, s.log_prob, s.cut) for s in a] == [
        (s.tokens, s.text, s.log_prob, s.cut) for s in b
    ]
    assert torch.equal(rng, torch.get_rng_state())  # the global random state is left alone
    assert all(len(s.tokens) <= config.max_tokens for s in a)
