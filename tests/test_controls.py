"""The sampling controls: each against a hand-computed distribution, bans, stop strings at
every level, a seeded run with every control on, and prompts read in one batched forward."""

import math
import re

import numpy as np
import pytest
import torch

from charrnn.checkpoint import load_run
from charrnn.config import Cell, Level, ModelConfig, Nonlinearity, SampleConfig, Stop
from charrnn.config import TokenizerConfig as TC
from charrnn.controls import Controls, History, filter_logits
from charrnn.errors import ConfigError
from charrnn.generate import Sampler
from charrnn.model import RNNLM
from charrnn.prime import read
from charrnn.stopping import rule_logits
from charrnn.stream import SampleStream
from charrnn.tokenizers import EOS, SOS, CharTokenizer, fit_tokenizer
from tests.conftest import VERSES
from tests.test_fast_paths import random_model


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_run(trained_run)


def test_min_p_keeps_the_tokens_within_its_share_of_the_top():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = [torch.isfinite(filter_logits(logits, None, None, p))[0].tolist() for p in (0.3, 0.6)]
    assert kept[0] == [True, True, True, False]  # p >= 0.15: 0.5, 0.3, 0.15
    assert kept[1] == [True, True, False, False]  # p >= 0.3
    assert torch.isfinite(filter_logits(logits, None, None, 0.0)).all()
    assert torch.isfinite(filter_logits(logits, None, None, 1.0))[0].tolist() == [1, 0, 0, 0]


def controls(config: SampleConfig, context: list[int], vocab: int = 8) -> Controls:
    tok = CharTokenizer(TC(level=Level.char), ["<pad>", "<sos>", "<eos>", "<unk>", *"abcd"])
    made = Controls.make(config, tok, vocab, 1, context)
    assert made is not None
    return made


def test_penalties_give_llama_cpp_and_openai_logits_exactly():
    logits = torch.tensor([[0.0, 0.0, 1.0, 0.5, 2.0, -1.0, 0.5, 3.0]])
    seen = [SOS, 4, 5, 5, EOS, 4, 4]  # a: 3 times, b: twice; <sos>, <eos> never count
    c = SampleConfig(repeat_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)
    got = controls(c, seen).apply(logits, torch.tensor([0]))
    a = 2.0 / 2 - 3 * 0.25 - 0.5  # positive logit: divided by R
    b = -1.0 * 2 - 2 * 0.25 - 0.5  # negative logit: times R
    want = [0.0, 0.0, 1.0, 0.5, a, b, 0.5, 3.0]
    assert got[0].tolist() == pytest.approx(want)
    window = controls(SampleConfig(repeat_penalty=2.0, repeat_window=2), seen)
    assert window.apply(logits, torch.tensor([0]))[0].tolist() == pytest.approx(
        [0.0, 0.0, 1.0, 0.5, 1.0, -1.0, 0.5, 3.0]  # the last 2 tokens: <eos> and a
    )


def test_bias_bans_and_ngrams_change_exactly_their_tokens():
    logits = torch.zeros(1, 8)
    c = SampleConfig(bias={"a": 1.5, "<eos>": -2}, ban=("d", "cb"))
    x = controls(c, [SOS, 6]).apply(logits, torch.tensor([0]))[0]  # just read "c"
    assert x.tolist() == [0, 0, -2, 0, 1.5, -math.inf, 0, -math.inf]  # b would complete "cb"
    x = controls(c, [SOS, 4]).apply(logits, torch.tensor([0]))[0]
    assert x[5] == 0  # after "a", "b" is fine
    ngram = controls(SampleConfig(no_repeat_ngram=2), [SOS, 4, 5, 4, 6, 4])
    x = ngram.apply(logits, torch.tensor([0]))[0]  # "ab", "ac" seen: after "a", no b or c
    assert torch.isinf(x).tolist() == [0, 0, 0, 0, 0, 1, 1, 0]


def test_controls_given_in_each_form_the_api_takes():
    forms = ({"e": -2}, "e=-2", ["e=-2"], [("e", -2)], (["e", "-2"],))
    assert {SampleConfig(bias=b).bias for b in forms} == {(("e", -2.0),)}
    assert SampleConfig(stop_at="ab", ban=["x", "yz"]).stop_at == ("ab",)
    for bad, said in (
        ({"bias": "e"}, "--bias 'e': write TOKEN=VALUE"),
        ({"bias": 5}, "--bias takes TOKEN=VALUE strings"),
        ({"bias": [("e",)]}, "write TOKEN=VALUE"),
        ({"bias": "e=x"}, "the value must be a number"),
        ({"bias": "e=nan"}, "a finite value"),
        ({"stop_at": 5}, "--stop-at takes strings"),
        ({"ban": ["a", 1]}, "--ban takes strings"),
    ):
        with pytest.raises(ConfigError, match=re.escape(said)):
            SampleConfig(**bad)


def test_histories_stay_bounded_and_keep_the_latest_tokens():
    h = History(3, [SOS, 5, 6], keep=8)
    rows = torch.arange(3)
    for t in range(10_000):
        h.push(rows, torch.full((3,), 4 + t % 7))
    assert h.tokens.shape[1] <= 64  # the capacity it started with: nothing grew
    want = [4 + t % 7 for t in range(10_000 - 8, 10_000)]
    assert h.last(rows, 8).tolist() == [want] * 3
    whole = History(1, [SOS], keep=None)
    for t in range(300):
        whole.push(torch.tensor([0]), torch.tensor([t]))
    assert whole.last(torch.tensor([0]), 301).tolist() == [[SOS, *range(300)]]


def test_a_row_the_bans_leave_nothing_draws_as_without_them():
    logits = torch.tensor([[-math.inf, -math.inf, 0.0, 0.0]])
    c = controls(SampleConfig(no_repeat_ngram=1), [SOS, 2, 3], vocab=4)
    assert c.apply(logits, torch.tensor([0])).tolist() == logits.tolist()


def draw_frequencies(model, config, prompt, n=40_000):
    info: dict[str, np.ndarray] = {}
    steps = Sampler(model, None).iter_tokens(n, config, prompt, info)  # type: ignore[arg-type]
    pairs, _ = next(steps)
    tokens = torch.tensor([t for _, t in pairs])
    return torch.bincount(tokens, minlength=model.config.vocab_size).double() / n


def test_a_penalized_draw_follows_the_hand_computed_distribution():
    model = random_model(Cell.gru, Nonlinearity.tanh, layers=1)
    prompt = [SOS, 5, 6, 5, 9]
    c = SampleConfig(temperature=0.7, stop=Stop.none, seed=0, repeat_penalty=1.8)
    c = SampleConfig(**{**c.__dict__, "frequency_penalty": 0.6, "presence_penalty": 0.4})
    with torch.no_grad():
        h, _ = model.features(torch.tensor([prompt]))
        logits = rule_logits(model.token_logits(h[0, -1]), Stop.none).double()  # (V,)
    counts = {5: 2, 6: 1, 9: 1}
    for t, k in counts.items():
        x = logits[t] / 1.8 if logits[t] > 0 else logits[t] * 1.8
        logits[t] = x - k * 0.6 - 0.4
    want = (logits / 0.7).softmax(-1)
    freq = draw_frequencies(model, c, prompt)
    assert torch.allclose(freq, want, atol=0.012), (freq, want)
    plain = (logits * 0 + rule_logits(model.token_logits(h[0, -1]), Stop.none).double()) / 0.7
    assert not torch.allclose(want, plain.softmax(-1), atol=0.02)  # the penalty mattered


def test_a_min_p_draw_keeps_exactly_the_hand_computed_set():
    model = random_model(Cell.lstm, Nonlinearity.tanh, layers=1)
    prompt = [SOS, 7]
    with torch.no_grad():
        h, _ = model.features(torch.tensor([prompt]))
        p = rule_logits(model.token_logits(h[0, -1]), Stop.none).double().softmax(-1)
    floor = float(p.sort(descending=True).values[3])  # keep the 4 likeliest exactly
    min_p = floor / float(p.max()) * 0.999
    c = SampleConfig(stop=Stop.none, seed=1, min_p=min_p)
    freq = draw_frequencies(model, c, prompt)
    kept = p >= min_p * p.max()
    assert int(kept.sum()) == 4
    assert (freq[~kept] == 0).all() and (freq[kept] > 0).all()
    assert torch.allclose(freq[kept], p[kept] / p[kept].sum(), atol=0.012)


@pytest.mark.parametrize("stop", [Stop.eos, Stop.none])
def test_every_control_on_is_reproducible_with_a_seed(loaded, stop):
    s = Sampler(loaded.model, loaded.tokenizer)
    c = SampleConfig(
        temperature=0.9,
        top_k=20,
        top_p=0.95,
        min_p=0.02,
        max_tokens=80,
        stop=stop,
        seed=5,
        repeat_penalty=1.3,
        repeat_window=16,
        presence_penalty=0.2,
        frequency_penalty=0.1,
        no_repeat_ngram=4,
        stop_at=("mat", "log"),
        ban=("q", "the "),
        bias=("e=-0.5",),
    )
    a, b = s.sample(4, c, "The "), s.sample(4, c, "The ")
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert [x.text for x in a] == [x.text for x in b]
    stream = SampleStream(s, 4, c, "The ", flush_every=0.0)
    pieces = list(stream)
    assert ["".join(p.text for p in pieces if p.index == i) for i in range(4)] == [
        x.text for x in a
    ]
    for x in a:
        assert not any(s in x.continuation for s in ("q", "the ", "mat", "log"))
    plain = s.sample(4, SampleConfig(temperature=0.9, max_tokens=80, stop=stop, seed=5), "The ")
    assert [x.tokens for x in plain] != [x.tokens for x in a]


# -- stop strings, at every level --------------------------------------------------------


def tokenizer_at(level: Level):
    size = 300 if level is Level.bpe else 0
    return fit_tokenizer(TC(level=level, vocab_size=size), [VERSES * 5])


@pytest.mark.parametrize("level", [Level.char, Level.word, Level.bpe])
@pytest.mark.parametrize("keep", [False, True])
def test_stop_strings_cut_the_text_at_every_level(level, keep):
    tok = tokenizer_at(level)
    torch.manual_seed(3)
    config = ModelConfig(vocab_size=tok.vocab_size, hidden=32, embed=16, max_len=60)
    model = RNNLM(config).eval()
    s = Sampler(model, tok)
    base = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=60, seed=2)
    (full,) = s.sample(1, base, "The")
    text = full.text
    # a stop string from the middle of the continuation, that may end inside a token
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    at = text.index(stop, len("The") - len(stop) + 1)
    (cut,) = s.sample(1, cut_config(base, stop, keep), "The")
    assert cut.stop_string == stop
    assert cut.text == text[: at + len(stop) if keep else at]
    assert cut.tokens == full.tokens[: len(cut.tokens)] and len(cut.tokens) < len(full.tokens)
    assert stop in tok.decode(cut.prompt_tokens + cut.tokens)  # it ended on the token that made it
    assert stop not in tok.decode(cut.prompt_tokens + cut.tokens[:-1])[len("The") - len(stop) + 1 :]
    stream = SampleStream(s, 1, cut_config(base, stop, keep), "The", flush_every=0.0)
    assert "".join(p.text for p in stream) == cut.text  # never shows what it cuts


def cut_config(base: SampleConfig, stop: str, keep: bool) -> SampleConfig:
    return SampleConfig(**{**base.__dict__, "stop_at": (stop,), "keep_stop": keep})


def test_a_prompt_never_ends_a_sample_by_itself(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    c = SampleConfig(stop=Stop.none, max_tokens=30, seed=1, stop_at=("The",))
    (x,) = s.sample(1, c, "The cat")
    assert x.text.startswith("The cat") and (x.stop_string is None or len(x.text) >= 7)


# -- reading a prompt --------------------------------------------------------------------


@pytest.mark.parametrize("stop_heads", [True, False])
def test_a_prompt_read_in_chunks_equals_one_read(stop_heads):
    model = random_model(Cell.lstm, Nonlinearity.tanh, stop_heads=stop_heads)
    g = torch.Generator().manual_seed(0)
    ids = [SOS, *torch.randint(4, 23, (60,), generator=g).tolist()]
    ids[30] = EOS
    ids.insert(31, SOS)  # a second unit inside the prompt: offsets start again
    whole = read(model, ids, rows=3)
    for chunk in (7, 16):
        parts = read(model, ids, rows=3, chunk=chunk)
        torch.testing.assert_close(parts.h, whole.h, atol=1e-5, rtol=1e-5)
        for a, b in zip(parts.state, whole.state):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert parts.offset == whole.offset == len(ids) - 31
    later = read(model, ids[40:], start=read(model, ids[:40]))  # continuing from a state
    torch.testing.assert_close(later.h, whole.h[:1], atol=1e-5, rtol=1e-5)


def test_bad_controls_are_refused_with_one_line(loaded):
    s = Sampler(loaded.model, loaded.tokenizer)
    for kwargs, needle in (
        ({"ban": ("日",)}, "does not know"),
        ({"bias": ("ab=1",)}, "2 tokens at char level"),
        (
            {"ban": tuple(loaded.tokenizer.piece(i) for i in range(3, 32)), "stop": Stop.halt},
            "leaves no token",
        ),
    ):
        with pytest.raises(ConfigError, match=needle):
            s.sample(1, SampleConfig(**kwargs))
