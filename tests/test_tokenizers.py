import numpy as np
import pytest

from charrnn.errors import TokenizerError
from charrnn.tokenizers import (
    EOS,
    SOS,
    UNK,
    CharTokenizer,
    Level,
    TokenizerConfig,
    WordTokenizer,
    detokenize,
    fit_tokenizer,
    load_tokenizer,
)

MULTILINGUAL = "Hello, world! Ça va? Привет, мир. 日本語のテキスト。 مرحبا بالعالم 🙂👍"


def test_char_round_trip_beyond_latin():
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), [MULTILINGUAL])
    assert tok.decode(tok.encode(MULTILINGUAL)) == MULTILINGUAL
    assert UNK not in tok.encode(MULTILINGUAL)


def test_char_unknown_symbols_map_to_unk():
    tok = fit_tokenizer(TokenizerConfig(level=Level.char), ["abc"])
    assert tok.encode("abz") == [tok.index["a"], tok.index["b"], UNK]


def test_literal_unk_maps_to_the_unk_id_at_every_level():
    for level in (Level.char, Level.word):
        tok = fit_tokenizer(TokenizerConfig(level=level), ["a <unk> b"])
        ids = tok.encode("a <unk> b")
        assert ids.count(UNK) == 1
        assert "<unk>" not in tok.pieces[4:]


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
    with pytest.raises(TokenizerError, match="invalid"):
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
