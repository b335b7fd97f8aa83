"""Subword levels (bpe, unigram): sentencepiece models with byte fallback."""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import Level, TokenizerConfig
from charrnn.errors import TokenizerError
from charrnn.io import write_bytes_atomic
from charrnn.schema import Doc, Text, Whole, read_bytes
from charrnn.tokenizers.base import (
    EOS,
    N_SPECIALS,
    PAD,
    SOS,
    SPECIALS,
    TOKENIZER_JSON,
    TOKENIZER_MODEL,
    UNK,
    Tokenizer,
)

# Sentencepiece is asked to keep text exactly as it is (no normalisation, no dummy space at
# the start) so that decoding gives the text back, byte for byte. A line break is a symbol of
# its own, so a unit cut at a line start encodes as the whole unit does (bpe; unigram may
# differ by a piece inside very long units).
_SP_MAX_SENTENCE = 4096  # characters of one training sentence; longer lines are cut
MODEL_CAP = 64 << 20  # tokenizer.model: a million pieces take some tens of MB


def _sp_trainer_args(config: TokenizerConfig) -> dict[str, Any]:
    return {
        "model_type": config.level.value,
        "vocab_size": config.vocab_size,
        "pad_id": PAD,
        "bos_id": SOS,
        "eos_id": EOS,
        "unk_id": UNK,
        "pad_piece": SPECIALS[PAD],
        "bos_piece": SPECIALS[SOS],
        "eos_piece": SPECIALS[EOS],
        "unk_piece": SPECIALS[UNK],
        "user_defined_symbols": ["\n"],
        "byte_fallback": True,
        "normalization_rule_name": "identity",
        "remove_extra_whitespaces": False,
        "add_dummy_prefix": False,
        "allow_whitespace_only_pieces": True,
        "hard_vocab_limit": False,  # a small corpus gets the vocabulary it can fill
        "max_sentence_length": 4 * _SP_MAX_SENTENCE,  # bytes
        "num_threads": 2,
        "minloglevel": 2,
    }


def training_sentences(chunks: Iterable[str]) -> Iterator[str]:
    """Lines of text for sentencepiece: non-blank, cut at a literal "<unk>" (which is not text
    to learn pieces from), and at most _SP_MAX_SENTENCE characters."""
    for chunk in chunks:
        for line in chunk.split("\n"):
            for part in line.split("<unk>"):
                for i in range(0, len(part), _SP_MAX_SENTENCE):
                    piece = part[i : i + _SP_MAX_SENTENCE]
                    if piece and not piece.isspace():
                        yield piece


class SentencePieceTokenizer(Tokenizer):
    """bpe and unigram subwords through sentencepiece, with byte fallback.

    Ids 0-3 are sentencepiece's own pad/bos/eos/unk, so they mean what they mean at every
    level. The model is sentencepiece's model file (a protobuf: loading it runs nothing).
    """

    def __init__(self, config: TokenizerConfig, model: bytes, sample_chars: int = 0):
        super().__init__(config)
        import sentencepiece as spm

        self.model, self.sample_chars = model, sample_chars
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model)
        except (RuntimeError, OSError) as e:
            raise TokenizerError(f"sentencepiece model cannot be read ({e})") from None
        ids = (self.sp.pad_id(), self.sp.bos_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (PAD, SOS, EOS, UNK):
            raise TokenizerError(f"sentencepiece model has special ids {ids}, not 0-3")

    @property
    def level(self) -> Level:  # type: ignore[override]
        return self.config.level

    @property
    def vocab_size(self) -> int:
        return int(self.sp.get_piece_size())

    @classmethod
    def train(
        cls, config: TokenizerConfig, sentences: Iterable[str], sample_chars: int = 0
    ) -> SentencePieceTokenizer:
        import sentencepiece as spm

        out = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=out, **_sp_trainer_args(config)
            )
        except RuntimeError as e:
            raise TokenizerError(_training_error(config, str(e))) from None
        return cls(config, out.getvalue(), sample_chars)

    def piece(self, token_id: int) -> str:
        if token_id < N_SPECIALS:
            return SPECIALS[token_id]
        return str(self.sp.id_to_piece(token_id)).replace("\u2581", " ")

    def encode_units(self, units: Sequence[str]) -> np.ndarray:
        if "<unk>" not in "\n".join(units):  # one scan in C ("\n" is not in "<unk>")
            return self._ids(list(units), marks=True)
        # a literal "<unk>" is the <unk> id: encode the text around it, then put the ids in
        parts = [u.split("<unk>") for u in units]
        per_unit = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        ids, lengths = self._ids(list(itertools.chain.from_iterable(parts)), False, True)
        seg_start = np.cumsum(lengths) - lengths  # where each segment's ids begin
        last = np.cumsum(per_unit) - 1  # last segment of each unit
        seg_unit = np.repeat(np.arange(len(units)), per_unit)
        # marks in reading order: <sos>/<unk> before each segment, <eos> after each unit
        seg_slot = np.arange(len(seg_unit)) + seg_unit
        eos_slot = last + np.arange(len(units)) + 1
        at = np.empty(len(seg_unit) + len(units), dtype=np.int64)
        what = np.empty_like(at)
        at[seg_slot], at[eos_slot] = seg_start, seg_start[last] + lengths[last]
        first = np.ones(len(seg_unit), dtype=bool)
        first[1:] = seg_unit[1:] != seg_unit[:-1]
        what[seg_slot], what[eos_slot] = np.where(first, SOS, UNK), EOS
        return np.insert(ids, at, what)

    def _ids(self, texts: list[str], marks: bool, lengths: bool = False) -> Any:
        """Batched sentencepiece encode, as one flat int64 array (with <sos>/<eos> when
        ``marks``), and optionally the number of ids of each text."""
        if self._buffers_work:  # one int32 buffer per text, joined as bytes: no Python ints
            buffers = self._buffers(texts, marks)
            flat = np.frombuffer(b"".join(buffers), dtype=np.int32).astype(np.int64)
            n = np.fromiter((memoryview(b).nbytes // 4 for b in buffers), np.int64, len(texts))
        else:  # lists of ints, joined by one fromiter
            lists = self.sp.encode(texts, out_type=int, add_bos=marks, add_eos=marks)
            n = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
            flat = np.fromiter(itertools.chain.from_iterable(lists), np.int64, int(n.sum()))
        return (flat, n) if lengths else flat

    def _buffers(self, texts: list[str], marks: bool) -> list[Any]:
        """sentencepiece's batched encode to raw int32 buffers (0.2.2 and later), which its
        public ``out_type="numpy"`` wraps one array at a time: the wrapping costs a tenth."""
        batch = self.sp._processor._EncodeAsBufferBatch
        # (texts, threads, pool, sampling, nbest, alpha, add_bos, add_eos, reverse)
        return batch(texts, -1, None, False, -1, 0.0, marks, marks, False)

    @functools.cached_property
    def _buffers_work(self) -> bool:
        """Whether ``_buffers`` exists here and gives exactly the ids of the public encode."""
        probe = ["a b\nc", "\u00e9\u4e2d\U0001f600 <x>", " "]
        try:
            got = [np.frombuffer(b, dtype=np.int32).tolist() for b in self._buffers(probe, True)]
        except Exception:  # an older sentencepiece: no such method, or another signature
            return False
        return got == self.sp.encode(probe, out_type=int, add_bos=True, add_eos=True)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            i = int(i)
            if i > UNK:
                run.append(i)
                continue
            if run:
                out.append(self.sp.decode(run))
                run = []
            if i == EOS:
                out.append("\n")
            elif i == UNK:
                out.append(SPECIALS[UNK])
        if run:
            out.append(self.sp.decode(run))
        return "".join(out)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "sample_chars": self.sample_chars}

    def _state(self) -> dict[str, Any]:
        return {
            "model_file": TOKENIZER_MODEL,
            "model_hash": hashlib.blake2b(self.model, digest_size=16).hexdigest(),
            "sample_chars": self.sample_chars,
        }

    def save(self, folder: Path) -> None:
        write_bytes_atomic(Path(folder) / TOKENIZER_MODEL, self.model)
        super().save(folder)

    @classmethod
    def from_state(cls, config: TokenizerConfig, state: Doc, folder: Path) -> Tokenizer:
        model_hash = state.get("model_hash", Text())
        sample_chars = state.get("sample_chars", Whole(0), 0)
        path = Path(folder) / TOKENIZER_MODEL
        try:
            model = read_bytes(path, MODEL_CAP, TokenizerError)
        except FileNotFoundError:
            raise TokenizerError(f"sentencepiece model missing: {path}") from None
        if hashlib.blake2b(model, digest_size=16).hexdigest() != model_hash:
            raise TokenizerError(f"{path} is not the model {TOKENIZER_JSON} was saved with")
        return cls(config, model, sample_chars)


def _training_error(config: TokenizerConfig, message: str) -> str:
    need = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if need:
        return (
            f"--vocab-size {config.vocab_size} is too small for {config.level.value} on this "
            f"text: it needs at least {need.group(1)} (256 byte pieces, the special symbols "
            "and every common character)"
        )
    return f"sentencepiece could not train a {config.level.value} model ({message.strip()})"
