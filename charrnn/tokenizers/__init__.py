"""Char, word and subword tokenizers behind one interface, and the registry of levels.

Every vocabulary starts with the same four symbols, so their ids mean the same thing at
every level:

    0 <pad>   never in a stream; the ignore index of the loss
    1 <sos>   starts a unit
    2 <eos>   ends a unit
    3 <unk>   a symbol outside the vocabulary (and a corpus's literal "<unk>")

``encode_units`` turns a list of units into one stream ``<sos> u1 <eos> <sos> u2 <eos> ...``
with numpy, so that encoding runs at memory speed rather than Python-loop speed;
``encode_block`` does the same for a block of a streamed corpus (see ``text.UnitBlock``).
Subword levels are sentencepiece models, trained with the four symbols at the same ids and
byte fallback on, so that no input is unrepresentable.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from charrnn.config import Level, TokenizerConfig
from charrnn.defaults import resolve_level
from charrnn.errors import TokenizerError
from charrnn.schema import Choice, Doc, read_json
from charrnn.tokenizers.base import (
    EOS,
    FORMAT_VERSION,
    N_SPECIALS,
    PAD,
    SOS,
    SPECIALS,
    TOKENIZER_JSON,
    TOKENIZER_MODEL,
    UNK,
    Tokenizer,
    VocabTokenizer,
    token_dtype,
)
from charrnn.tokenizers.char import CharTokenizer
from charrnn.tokenizers.subword import SentencePieceTokenizer, training_sentences
from charrnn.tokenizers.word import WordTokenizer, WordVocabulary, detokenize, split_words

__all__ = [
    "EOS",
    "N_SPECIALS",
    "PAD",
    "SOS",
    "SPECIALS",
    "TOKENIZERS",
    "TOKENIZER_JSON",
    "TOKENIZER_MODEL",
    "UNK",
    "CharTokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "VocabTokenizer",
    "WordTokenizer",
    "WordVocabulary",
    "detokenize",
    "fit_tokenizer",
    "load_tokenizer",
    "split_words",
    "token_dtype",
    "training_sentences",
]


TOKENIZERS: dict[Level, type[Tokenizer]] = {
    Level.char: CharTokenizer,
    Level.word: WordTokenizer,
    Level.bpe: SentencePieceTokenizer,
    Level.unigram: SentencePieceTokenizer,
}


def fit_tokenizer(config: TokenizerConfig, chunks: Iterable[str]) -> Tokenizer:
    """A tokenizer for the text of ``chunks`` (subword levels train on all of it)."""
    if not config.decided:
        chunks = list(chunks)
        n_bytes = sum(len(c.encode("utf-8", "surrogatepass")) for c in chunks)
        config = resolve_level(config, n_bytes, "".join(chunks)[: 1 << 20])
    if config.subword:
        return SentencePieceTokenizer.train(config, training_sentences(chunks))
    cls = TOKENIZERS[config.level]
    assert issubclass(cls, VocabTokenizer)
    return cls.fit(config, chunks)


TOKENIZER_CAP = 256 << 20  # tokenizer.json: a word vocabulary of several million words


def load_tokenizer(folder: Path) -> Tokenizer:
    """Rebuild a tokenizer saved by ``Tokenizer.save``, every field of tokenizer.json checked;
    never executes anything."""
    path = Path(folder) / TOKENIZER_JSON
    try:
        payload = read_json(path, TokenizerError, TOKENIZER_CAP)
    except FileNotFoundError:
        raise TokenizerError(f"tokenizer file missing: {path}") from None
    doc = Doc(payload, path, TokenizerError)
    version = payload.get("format_version")
    if type(version) is not int:
        raise TokenizerError(f"tokenizer file has no valid format version: {path}")
    if version > FORMAT_VERSION:
        raise TokenizerError(
            f"tokenizer format version {version} is newer than this charrnn reads "
            f"({FORMAT_VERSION}); upgrade charrnn: {path}"
        )
    doc.doc("config").get("level", Choice(Level, but=("auto",)))  # a saved one is decided
    config = doc.config("config", TokenizerConfig)
    return TOKENIZERS[config.level].from_state(config, doc, Path(folder))
