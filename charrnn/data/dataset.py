"""Encoded corpora on disk, their cache, and train/validation splits.

A dataset folder holds everything training needs, and nothing that must be unpickled:

    dataset.json     settings, counts, the source file's content hash, format version
    tokenizer.json   (and tokenizer.model for sentencepiece levels)
    tokens.bin       the token stream, raw little-endian uint16 or uint32, read by memory map
    units.npy        int64 (n_units, 3): start of each unit's <sos>, its characters, its bytes

Encoding streams in chunks, so memory stays bounded whatever the corpus size. ``prepare``
reuses a cached folder when the corpus content and the settings are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import DataConfig, Holdout, SplitCut, Unit
from charrnn.data.encode import TOKENS_BIN, UNITS_NPY, Progress, encode_corpus
from charrnn.data.split import Split, Text, split
from charrnn.defaults import resolve_level
from charrnn.errors import CorpusError
from charrnn.io import file_hash
from charrnn.text import Corpus, open_corpus, resolve_unit
from charrnn.tokenizers import Tokenizer, load_tokenizer

DATASET_JSON = "dataset.json"
FORMAT_VERSION = 1


def cache_root() -> Path:
    """Where encoded corpora are cached: $CHARRNN_CACHE, else the XDG cache folder."""
    if env := os.environ.get("CHARRNN_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charrnn"


def cache_key(content_hash: str, config: DataConfig, base: Tokenizer | None = None) -> str:
    """The cache entry of a text encoded with ``config`` (and, when fine-tuning, ``base``'s
    tokenizer, grown by the text's new symbols: its fingerprint decides the grown one)."""
    grown_from = [base.fingerprint()] if base is not None else []
    settings = json.dumps([FORMAT_VERSION, content_hash, config.key(), *grown_from], sort_keys=True)
    return hashlib.blake2b(settings.encode(), digest_size=8).hexdigest()


# -- the dataset --------------------------------------------------------------------------


class Dataset:
    """An encoded corpus: tokenizer, token stream (memory-mapped) and unit index."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.meta = json.loads((self.folder / DATASET_JSON).read_text(encoding="utf-8"))
            version = self.meta["format_version"]
            dtype = np.dtype(self.meta["dtype"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorpusError(f"not a charrnn dataset folder ({e}): {self.folder}") from None
        if version != FORMAT_VERSION:
            raise CorpusError(f"dataset format {version} is not {FORMAT_VERSION}; re-run tokenize")
        self.tokenizer = load_tokenizer(self.folder)
        n = self.meta["n_tokens"]
        self.tokens = np.memmap(self.folder / TOKENS_BIN, dtype=dtype, mode="r", shape=(n,))
        self.units = np.load(self.folder / UNITS_NPY, mmap_mode="r", allow_pickle=False)
        self.config = DataConfig.from_dict(self.meta["config"])

    @property
    def unit(self) -> Unit:
        return Unit(self.meta["unit"])

    def split(
        self, val_fraction: float, holdout: Holdout = Holdout.tail, cut: SplitCut = SplitCut.nearest
    ) -> tuple[Split, Split]:
        """Train and validation splits (see ``data.split``)."""
        text = Text(self.tokens, self.units, self.meta["n_chars"], self.meta["n_bytes"])
        return split(text, val_fraction, holdout, cut)


# -- building -----------------------------------------------------------------------------


def build_dataset(
    source: Path | Corpus,
    config: DataConfig,
    out: Path,
    progress: Progress | None = None,
    content_hash: str | None = None,
    base: Tokenizer | None = None,
) -> Dataset:
    """Encode a corpus into the dataset folder ``out`` (written aside, then renamed in), with
    a tokenizer fitted to it or ``base``'s grown by its new symbols (``encode.grow``)."""
    text = _opened(source, config)
    corpus, errors, size = text.path, _errors(config), text.size
    unit = resolve_unit(config.unit, text.head)

    out = Path(out)
    if out.exists() and not _replaceable(out):
        raise CorpusError(
            f"{out} exists and is not a charrnn dataset folder; choose a new or empty folder"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tokenizer, stats = encode_corpus(
            corpus, config.tokenizer, unit, errors, tmp, progress, base=base
        )
        if stats["n_tokens"] == 0:
            raise CorpusError(f"corpus has no text to train on: {corpus}")
        tokenizer.save(tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "source": {"path": str(corpus.resolve()), "size": size, "hash": content_hash},
            "config": config.to_dict(),
            "unit": unit.value,
            "vocab_size": tokenizer.vocab_size,
            **({"grown_from": base.fingerprint()} if base is not None else {}),
            **stats,
        }
        (tmp / DATASET_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Dataset(out)


def _replaceable(folder: Path) -> bool:
    """Only an empty folder or an older dataset may be replaced: never a user's own files."""
    return folder.is_dir() and ((folder / DATASET_JSON).is_file() or not any(folder.iterdir()))


def is_dataset(path: Path) -> bool:
    """Whether ``path`` is a dataset folder (made by tokenize), rather than a text."""
    return Path(path).is_dir() and (Path(path) / DATASET_JSON).exists()


def resolve_data(
    source: Path | Corpus, config: DataConfig, time_budget: float | None = None
) -> DataConfig:
    """``config`` with its tokenizer's level and vocabulary size decided for the corpus and a
    CPU run of ``time_budget`` seconds (``defaults.resolve_level``; without one, ``auto`` is
    char). A dataset folder's were decided when it was made."""
    if isinstance(source, Path) and is_dataset(source):
        return config
    text = _opened(source, config)
    if config.tokenizer.decided:
        return config
    tok = resolve_level(config.tokenizer, text.size, text.head, time_budget)
    return replace(config, tokenizer=tok)


def open_source(path: Path, config: DataConfig) -> Path | Corpus:
    """A dataset folder as its path, or a corpus file checked and its head read, once."""
    return path if is_dataset(path) else open_corpus(path, _errors(config))


def _opened(source: Path | Corpus, config: DataConfig) -> Corpus:
    return source if isinstance(source, Corpus) else open_corpus(source, _errors(config))


def _errors(config: DataConfig) -> str:
    return "replace" if config.replace_errors else "strict"


def prepare(
    source: Path | Corpus,
    config: DataConfig,
    progress: Progress | None = None,
    out: Path | None = None,
    base: Tokenizer | None = None,
) -> tuple[Dataset, bool]:
    """A dataset for ``source``: a dataset folder as is, or a corpus file through the cache.
    With ``base`` (fine-tuning), the text is encoded with that tokenizer grown by the text's
    new symbols (``encode.grow``).

    Returns the dataset and whether it came from the cache.
    """
    source = source if isinstance(source, Corpus) else open_source(Path(source), config)
    if not isinstance(source, Corpus):
        return Dataset(source), True
    config = resolve_data(source, config)
    digest = file_hash(source.path)
    key = cache_key(digest, config, base)
    folder = Path(out) if out else cache_root() / "datasets" / f"{source.path.stem}-{key}"
    if (folder / DATASET_JSON).exists():
        try:
            ds = Dataset(folder)
            same = ds.meta["source"]["hash"] == digest and ds.config.key() == config.key()
            if same and ds.meta.get("grown_from") == (base and base.fingerprint()):
                return ds, True
        except CorpusError:
            pass  # a stale or damaged cache entry is rebuilt below
    return build_dataset(source, config, folder, progress, digest, base), False


# -- batches ------------------------------------------------------------------------------


def describe(ds: Dataset) -> dict[str, Any]:
    """The numbers ``tokenize`` prints."""
    m = ds.meta
    n_units = max(1, m["n_units"])
    return {
        "characters": m["n_chars"],
        "bytes": m["n_bytes"],
        "units": m["n_units"],
        "unit": m["unit"],
        "tokens": m["n_tokens"],
        "vocabulary": m["vocab_size"],
        "unk_rate": m["n_unk"] / max(1, m["n_tokens"] - 2 * m["n_units"]),
        "mean_unit_length": (m["n_tokens"] - 2 * m["n_units"]) / n_units,
        "max_unit_length": _longest_unit(ds),
        "level": m["config"]["tokenizer"]["level"],
        "sample_chars": m.get("tokenizer_sample_chars"),
    }


def _longest_unit(ds: Dataset, step: int = 1 << 20) -> int:
    """Tokens in the longest unit, <sos> and <eos> excluded (the index read in steps)."""
    starts, longest = ds.units[:, 0], 0
    for lo in range(0, len(starts), step):
        ends = starts[lo + 1 : lo + step + 1]
        if len(ends) < len(starts[lo : lo + step]):
            ends = np.append(ends, ds.meta["n_tokens"])
        longest = max(longest, int((ends - starts[lo : lo + step]).max()) - 2)
    return longest
