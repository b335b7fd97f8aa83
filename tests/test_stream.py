"""Streaming: incremental decoding, and samples handed out in reading order."""

from collections.abc import Iterable

import pytest

from charrnn.checkpoint import load_run
from charrnn.config import SampleConfig, Stop, TokenizerConfig
from charrnn.generate import Sampler
from charrnn.stream import IncrementalDecoder, SampleStream
from charrnn.tokenizers import EOS, CharTokenizer, WordTokenizer


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_run(trained_run)


def test_a_trailing_joiner_waits_for_the_next_word():
    """A word-level joiner is written as its mark between words, as written otherwise: its
    text waits for the next token, so the pieces still join up to the decoded text."""
    tok = WordTokenizer.fit(TokenizerConfig(), ["well-known a.b x"])
    for text in ("well-known", "well @-@", "well @-@ @.@ x"):
        ids = tok.encode(text)
        dec = IncrementalDecoder(tok)
        pieces = [dec.push(i) for i in ids] + [dec.take(final=True)]
        assert "".join(pieces) == tok.decode(ids) == text
        assert tok.encode(tok.decode(ids)) == ids


def test_word_level_pieces_join_to_the_detokenized_text():
    text = 'He said "no" (twice), well-known; it\'s 3.5% done!\nNext line.'
    tok = WordTokenizer.fit(TokenizerConfig(), [text])
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    assert "".join(pieces) == tok.decode(ids)
    assert pieces[1] == " said"  # the space before a word comes with the word
    assert any(p == '"' for p in pieces)  # a closing quote attaches without a space


def test_char_level_with_a_prefix_hands_out_the_prefix_first():
    tok = CharTokenizer.fit(TokenizerConfig(), ["abc def"])
    dec = IncrementalDecoder(tok, tok.encode("ab"))
    assert dec.push(tok.encode("c")[0]) == "abc"
    assert dec.push(EOS) == "\n"
    assert dec.take() == ""  # nothing new


class _Bytes:
    """A decoder that shows an incomplete character as U+FFFD, like a byte-level subword."""

    def decode(self, ids: Iterable[int]) -> str:
        raw = bytes(ids)
        return raw.decode("utf-8", errors="replace")

    def unsettled(self, ids: list[int]) -> int:
        return 0


def test_an_incomplete_character_is_held_back_until_it_completes():
    dec = IncrementalDecoder(_Bytes())  # type: ignore[arg-type]
    e_acute = "é".encode()
    assert dec.push(ord("a")) == "a"
    assert dec.push(e_acute[0]) == ""  # half of é: nothing shown yet
    assert dec.push(e_acute[1]) == "é"
    assert dec.push(e_acute[0]) == ""
    assert dec.take(final=True) == "\ufffd"  # the end shows what is there


@pytest.mark.parametrize("stop", [Stop.eos, Stop.length, Stop.none])
def test_a_stream_shows_the_same_samples_in_order(loaded, stop):
    sampler = Sampler(loaded.model, loaded.tokenizer)
    config = SampleConfig(temperature=1.0, max_tokens=60, stop=stop, seed=5)
    stream = SampleStream(sampler, 4, config, prompt="The", flush_every=0.0)
    pieces = list(stream)
    assert [p.index for p in pieces] == sorted(p.index for p in pieces)  # one after another
    assert [p.index for p in pieces if p.end] == [0, 1, 2, 3]  # each ends once
    texts = ["".join(p.text for p in pieces if p.index == i) for i in range(4)]
    assert texts == [s.text for s in stream.samples]
    drawn = sampler.sample(4, config, prompt="The")  # the same seed without streaming
    assert [s.text for s in drawn] == texts
    assert [s.log_prob for s in drawn] == [s.log_prob for s in stream.samples]
    assert all(t.startswith("The") for t in texts)
