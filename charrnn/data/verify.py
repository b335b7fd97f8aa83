"""A dataset folder's files held to what they must be, and to each other, before anything
reads them: a damaged one is refused naming the file and the field, never met deep inside
training as an IndexError or a petabyte allocation.

    dataset.json  settings and counts, each of its kind and range
    tokens.bin    n_tokens ids of the dtype the vocabulary needs, each a symbol of it
    units.npy     int64 (n_units, 3): starts rising from 0, each at a <sos> after an <eos>;
                  character and byte counts that add up to n_chars and n_bytes

The files are read in chunks, so memory stays bounded whatever their size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import DataConfig, Unit
from charrnn.errors import CorpusError, first_line
from charrnn.schema import Choice, Doc, Maybe, OneOf, Text, Whole, regular
from charrnn.tokenizers import EOS, N_SPECIALS, PAD, SOS, token_dtype

FORMAT_VERSION = 1
CHUNK = 1 << 22  # ids or rows checked at a time
COUNT = Whole(0)


def check_meta(meta: Any, path: Path) -> dict[str, Any]:
    """dataset.json with every field checked (a CorpusError names the first that is wrong)."""
    doc = Doc(meta, path, CorpusError)
    version = doc.get("format_version", Whole())
    if version != FORMAT_VERSION:
        raise CorpusError(
            f"{path}: format_version is {version}, not {FORMAT_VERSION}; run tokenize again"
        )
    source = doc.doc("source")
    source.get("path", Text())
    source.get("size", COUNT)
    source.get("hash", Maybe(Text()))
    doc.config("config", DataConfig)
    doc.get("unit", Choice(Unit, but=("auto",)))
    doc.get("vocab_size", Whole(N_SPECIALS + 1))
    doc.get("dtype", OneOf(("uint16", "uint32")))
    doc.get("n_tokens", Whole(2))  # <sos> and <eos> of one unit at least
    doc.get("n_units", Whole(1))
    for key in ("n_unk", "n_chars", "n_bytes"):
        doc.get(key, COUNT)
    doc.get("tokenizer_sample_chars", Maybe(COUNT), None)
    doc.get("tokenizer_hash", Text(), None)
    doc.get("grown_from", Text(), None)  # fine-tuning: the base tokenizer this one grew from
    doc.get("added_symbols", COUNT, None)
    return meta


def open_tokens(path: Path, meta: dict[str, Any], vocab_size: int) -> np.memmap:
    """tokens.bin as the memory map of its ids, once its size matches n_tokens and each id is
    a symbol of the vocabulary (never <pad>)."""
    n, dtype = meta["n_tokens"], np.dtype(meta["dtype"])
    if dtype != token_dtype(vocab_size):
        raise CorpusError(
            f"{path.parent / 'dataset.json'}: dtype {dtype.name} is not the width of a "
            f"vocabulary of {vocab_size:,} symbols ({token_dtype(vocab_size).name})"
        )
    size = _size(path)
    if size != n * dtype.itemsize:
        raise CorpusError(
            f"{path} holds {size:,} bytes, not the {n:,} tokens of dataset.json's n_tokens "
            f"({n * dtype.itemsize:,} bytes)"
        )
    tokens = np.memmap(path, dtype=dtype, mode="r", shape=(n,))
    for lo in range(0, n, CHUNK):
        part = tokens[lo : lo + CHUNK]
        bad = np.flatnonzero((part >= vocab_size) | (part == PAD))
        if len(bad):
            at = lo + int(bad[0])
            raise CorpusError(
                f"{path}: token {at:,} is id {int(tokens[at])}, not a symbol of the "
                f"vocabulary (ids 1 to {vocab_size - 1})"
            )
    return tokens


def open_units(path: Path, meta: dict[str, Any], tokens: np.ndarray) -> np.ndarray:
    """units.npy as a memory map, once its shape, its starts and its counts agree with the
    token stream and dataset.json."""
    _size(path)
    try:
        units = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise CorpusError(f"{path} is not a unit index ({first_line(e, 80)})") from None
    n_units = meta["n_units"]
    if units.dtype != np.int64 or units.shape != (n_units, 3):
        raise CorpusError(
            f"{path} must hold int64 of shape ({n_units:,}, 3) (dataset.json's n_units), "
            f"not {units.dtype} of shape {units.shape}"
        )
    sums = np.zeros(2, dtype=np.int64)
    for lo in range(0, n_units, CHUNK):
        rows = np.asarray(units[lo : lo + CHUNK + 1])  # one row more: the next unit's start
        problem = _rows_problem(rows, lo, n_units, tokens)
        if problem:
            raise CorpusError(f"{path}: {problem}")
        sums += rows[:CHUNK, 1:].sum(axis=0)
    if sums.tolist() != [meta["n_chars"], meta["n_bytes"]]:
        raise CorpusError(
            f"{path}: the units' characters and bytes add up to {sums[0]:,} and {sums[1]:,}, "
            f"not dataset.json's n_chars and n_bytes ({meta['n_chars']:,}, {meta['n_bytes']:,})"
        )
    return units


def _rows_problem(rows: np.ndarray, lo: int, n_units: int, tokens: np.ndarray) -> str | None:
    """What is wrong with the unit rows ``rows`` (units lo, lo + 1, ...), if anything."""
    starts, chars, nbytes = rows[:, 0], rows[:, 1], rows[:, 2]
    n = len(tokens)
    if lo == 0 and starts[0] != 0:
        return "the first unit does not start at token 0"
    ends = np.append(starts[1:], n) if lo + len(rows) >= n_units else starts[1:]
    if (np.diff(starts) <= 0).any() or not 0 <= starts[-1] < n or ends[-1] > n:
        return "unit starts must rise from 0 within the token stream"
    if (tokens[starts] != SOS).any() or (tokens[ends - 1] != EOS).any():
        return "a unit does not run from a <sos> to an <eos> of tokens.bin"
    if (chars < 1).any() or (nbytes < chars).any():
        return "a unit's character or byte count is impossible"
    return None


def _size(path: Path) -> int:
    try:
        return regular(path, CorpusError).st_size
    except FileNotFoundError:
        raise CorpusError(f"{path} is missing") from None
