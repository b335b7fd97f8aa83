import numpy as np
import pytest
import sentencepiece as spm

from charrnn.config import Level, TokenizerConfig
from charrnn.errors import TokenizerError
from charrnn.tokenizers import (
    EOS,
    SOS,
    UNK,
    CharTokenizer,
    SentencePieceTokenizer,
    WordTokenizer,
    WordVocabulary,
    detokenize,
    fit_tokenizer,
    load_tokenizer,
    split_words,
    training_sentences,
)
from charrnn.tokenizers.base import frame_spans

MULTILINGUAL = "Hello, world! Ça va? Привет, мир. 日本語のテキスト。 مرحبا بالعالم 🙂👍"


def test_char_round_trip_beyond_latin():
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), [MULTILINGUAL])
    assert tok.decode(tok.encode(MULTILINGUAL)) == MULTILINGUAL
    assert UNK not in tok.encode(MULTILINGUAL)


def test_char_unknown_symbols_map_to_unk():
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), ["abc"])
    assert tok.encode("abz") == [tok.index["a"], tok.index["b"], UNK]


def test_literal_unk_maps_to_the_unk_id_at_every_level():
    for level in Level:
        tok = fit_tokenizer(TokenizerConfig(level=level, vocab_size=300), ["a <unk> b" * 20])
        ids = tok.encode("a <unk> b")
        assert ids.count(UNK) == 1
        assert "<unk>" not in [tok.piece(i) for i in range(4, tok.vocab_size)]


def test_encode_units_frames_each_unit():
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), ["abc"])
    stream = tok.encode_units(["ab", "c"]).tolist()
    a, b, c = (tok.index[x] for x in "abc")
    assert stream == [SOS, a, b, EOS, SOS, c, EOS]


def test_word_round_trip_of_tokenized_text():
    text = "the cat , the dog and the bird . it 's 3 @-@ 4 <unk> ( really ) !"
    tok = fit_tokenizer(TokenizerConfig(level=Level.word), [text])
    ids = tok.encode(text)
    assert [tok.piece(i) for i in ids] == text.split()
    assert tok.decode(ids) == "the cat, the dog and the bird. it's 3-4 <unk> (really)!"
    assert tok.encode(tok.decode(ids)) == ids


def test_plain_text_and_wikitext_style_share_tokens():
    tok = fit_tokenizer(TokenizerConfig(level=Level.word), ["a well @-@ known man do n't"])
    assert tok.encode("a well-known man don't") == tok.encode("a well @-@ known man do n't")
    assert UNK not in tok.encode("a well-known man don't")


def test_word_decode_of_plain_text_is_exact():
    text = "He said \"yes\", then (left). It's 3-4; don't worry!"
    tok = fit_tokenizer(TokenizerConfig(level=Level.word), [text])
    assert tok.decode(tok.encode(text)) == text


def test_word_round_trip_beyond_latin():
    tok = fit_tokenizer(TokenizerConfig(level=Level.word), [MULTILINGUAL])
    ids = tok.encode(MULTILINGUAL)
    assert UNK not in ids
    assert tok.encode(tok.decode(ids)) == ids


def test_detokenize_attaches_punctuation_and_quotes():
    words = [
        "He",
        "said",
        '"',
        "yes",
        '"',
        ",",
        "then",
        "(",
        "left",
        ")",
        ".",
        "It",
        "'s",
        "3",
        "@-@",
        "4",
    ]
    assert detokenize(words) == 'He said "yes", then (left). It\'s 3-4'


def test_min_freq_and_max_vocab():
    text = "a a a b b c"
    tok = fit_tokenizer(TokenizerConfig(level=Level.word, min_freq=2), [text])
    assert tok.pieces[4:] == ["a", "b"]
    tok = fit_tokenizer(TokenizerConfig(level=Level.word, max_vocab=5), [text])
    assert tok.pieces[4:] == ["a"]
    assert tok.encode("c b")[0] == UNK


def test_save_and_load(tmp_path):
    for level in (Level.char, Level.word):
        tok = fit_tokenizer(TokenizerConfig(level=level), [MULTILINGUAL])
        tok.save(tmp_path)
        again = load_tokenizer(tmp_path)
        assert type(again) is type(tok)
        assert again.pieces == tok.pieces
        assert again.encode(MULTILINGUAL) == tok.encode(MULTILINGUAL)


def test_load_rejects_bad_files(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"format_version": 99, "config": {"level": "char"}}')
    with pytest.raises(TokenizerError, match="newer"):
        load_tokenizer(tmp_path)


def test_vocabulary_must_start_with_specials():
    with pytest.raises(TokenizerError):
        CharTokenizer(TokenizerConfig(), ["a", "b"])
    with pytest.raises(TokenizerError):
        WordTokenizer(
            TokenizerConfig(level=Level.word), ["<pad>", "<sos>", "<eos>", "<unk>", "x", "x"]
        )


def test_char_encoding_is_vectorised_and_exact():
    text = "".join(chr(c) for c in range(32, 3000))
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), [text])
    ids = np.asarray(tok.encode(text))
    assert [tok.pieces[i] for i in ids] == list(text)


# -- subword levels -------------------------------------------------------------------------

SUBWORD = (Level.bpe, Level.unigram)
TEXT = ("The cat sat on the mat. The dog sat on the log.\n" * 30) + MULTILINGUAL


def subword(level: Level, vocab_size: int = 400) -> SentencePieceTokenizer:
    tok = fit_tokenizer(TokenizerConfig(level=level, vocab_size=vocab_size), [TEXT])
    assert isinstance(tok, SentencePieceTokenizer)
    return tok


@pytest.mark.parametrize("level", SUBWORD)
def test_subword_round_trip_beyond_latin_is_exact(level):
    tok = subword(level)
    assert [tok.piece(i) for i in range(4)] == ["<pad>", "<sos>", "<eos>", "<unk>"]
    assert tok.level is level
    # byte fallback: characters never seen in training still round-trip, without <unk>
    for text in (MULTILINGUAL, "Ünïcödé ✓ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ‽", "  two  spaces\ttab  "):
        ids = tok.encode(text)
        assert UNK not in ids
        assert tok.decode(ids) == text


@pytest.mark.parametrize("level", SUBWORD)
def test_subword_units_and_literal_unk(level):
    tok = subword(level)
    stream = tok.encode_units(["a <unk> b", "<unk>", "plain"]).tolist()
    assert stream.count(SOS) == stream.count(EOS) == 3 and stream.count(UNK) == 2
    assert stream[0] == SOS and stream[-1] == EOS
    assert tok.decode(stream) == "a <unk> b\n<unk>\nplain\n"


@pytest.mark.parametrize("level", SUBWORD)
def test_subword_raw_buffers_give_the_ids_of_the_public_encode(level):
    tok = subword(level)
    units = [MULTILINGUAL, "a <unk> b", "  two  spaces\ttab  ", "<unk>", "x\ny", "the end."]
    expected = [SOS, *tok.sp.encode(MULTILINGUAL), EOS, SOS, *tok.sp.encode("a ")]
    fast = tok.encode_units(units)
    # sentencepiece 0.2.2 and later have the raw buffers; older ones get the fallback
    version = tuple(int(x) for x in spm.__version__.split(".")[:3])
    assert tok._buffers_work == (version >= (0, 2, 2))
    tok._buffers_work = False  # the fallback: sentencepiece's lists of ints
    slow = tok.encode_units(units)
    assert fast.dtype == slow.dtype == np.int64
    assert fast.tolist() == slow.tolist()
    assert fast[: len(expected)].tolist() == expected
    assert tok.encode_units([]).tolist() == []


@pytest.mark.parametrize("level", list(Level))
def test_encode_each_equals_one_encode_per_text(level):
    tok = fit_tokenizer(TokenizerConfig(level=level, vocab_size=400), [TEXT])
    texts = ["a <unk> b", MULTILINGUAL, "  two  spaces\ttab  ", "<unk>", "x", "the end."]
    assert tok.encode_each(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_each([]) == []
    # a lone surrogate is no text (the tokenizers' own marks are such code points): refused,
    # naming the text and where it is
    with pytest.raises(TokenizerError, match="sentence 2 holds a lone surrogate"):
        tok.encode_each(["three", "one\ud800two"])
    with pytest.raises(TokenizerError, match=r"not valid UTF-8 \(byte 0xff at offset 3\)"):
        tok.encode("one\udcfftwo")


@pytest.mark.parametrize("level", SUBWORD)
def test_subword_save_and_load_checks_the_model_file(tmp_path, level):
    tok = subword(level)
    tok.save(tmp_path)
    assert (tmp_path / "tokenizer.model").exists()
    again = load_tokenizer(tmp_path)
    assert again.encode(TEXT) == tok.encode(TEXT) and again.vocab_size == tok.vocab_size
    other = Level.bpe if level is Level.unigram else Level.unigram
    (tmp_path / "tokenizer.model").write_bytes(subword(other).model)
    with pytest.raises(TokenizerError, match="not the model"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(TokenizerError, match="missing"):
        load_tokenizer(tmp_path)


def test_subword_vocabulary_too_small_is_a_clear_error():
    with pytest.raises(TokenizerError, match="--vocab-size 100 is too small"):
        subword(Level.bpe, vocab_size=100)


def test_training_sentences_skip_blank_lines_and_literal_unk():
    chunks = ["first line\n\n  \nsecond <unk> line\n", "x" * 5000]
    sentences = list(training_sentences(chunks))
    assert sentences[:3] == ["first line", "second ", " line"]
    assert [len(s) for s in sentences[3:]] == [4096, 904]


# -- word level: streaming and readable text -------------------------------------------------


def test_word_encoding_by_whitespace_chunks_equals_split_words():
    from charrnn.tokenizers.base import UNIT_MARK
    from charrnn.tokenizers.word import _ChunkIds, _FirstSight

    units = ["He said \"yes\"; it's well-known.\n  <unk> don't\u3000x@-@y 3.14", "\n\nAnd 'tis"]
    units += ["o' the cats'", "a-", "-b", "c.\x1c,d"]
    lookup = _FirstSight({"<unk>": UNK, UNIT_MARK: -1})
    expected = [lookup[w] for w in split_words(UNIT_MARK.join(units))]
    ids = _ChunkIds(_FirstSight({"<unk>": UNK, UNIT_MARK: -1})).encode(units)
    assert ids.tolist() == expected  # the same words, in the same order of first sight


def test_word_vocabulary_ranks_like_fit():
    text = "b a c a b a\nc d"
    vocab = WordVocabulary(TokenizerConfig(level=Level.word, min_freq=2))
    from charrnn.config import Unit
    from charrnn.text import iter_unit_blocks

    stream = np.concatenate([vocab.encode_block(b) for b in iter_unit_blocks([text], Unit.line)])
    tok, remap = vocab.finish()
    assert tok.pieces[4:] == ["a", "b", "c"]  # by count, then alphabetically; d is too rare
    assert remap[stream].tolist() == tok.encode_units(text.split("\n")).tolist()


@pytest.mark.parametrize(
    "text",
    [
        'She said, "Hello there." Then (quietly) she left; 50% of $5 went.',
        "“Curly quotes,” she said, ‘single ones’ too… The cats' toys.",
        "He said 'no' and left. 'Hello,' she said. 'Tis true, 'tis pity.",
        "KING RICHARD III:\nWhat say'st thou? I'll go -- now, o' the hill, i' the rain.",
    ],
)
def test_word_level_text_detokenizes_cleanly(text):
    tok = fit_tokenizer(TokenizerConfig(level=Level.word), [text])
    assert tok.decode(tok.encode(text)) == text


def test_a_word_level_sample_reads_like_text():
    # WikiText writes every token apart: a sample in its style comes out as prose
    sample = (
        'The game \'s " new " features , such as role @-@ playing , were praised ( though '
        "not by all ) . Critics ' lists gave it 8 @.@ 5 / 10 ; sales were 1 @,@ 000 @,@ 000 ."
    )
    assert detokenize(sample.split(" ")) == (
        'The game\'s "new" features, such as role-playing, were praised (though not by all). '
        "Critics' lists gave it 8.5 / 10; sales were 1,000,000."
    )


def test_frame_spans_turns_gaps_into_eos_sos():
    ids = np.arange(10, 30, dtype=np.uint16)
    starts, ends = np.array([1, 4, 6, 12]), np.array([3, 5, 8, 13])  # gaps of 1, 1 and 4
    out = frame_spans(ids, starts, ends).tolist()
    assert out == [SOS, 11, 12, EOS, SOS, 14, EOS, SOS, 16, 17, EOS, SOS, 22, EOS]
    assert frame_spans(ids, starts, ends, head=False, tail=False).tolist() == out[1:-1]
    assert frame_spans(ids, starts[:0], ends[:0]).tolist() == []
