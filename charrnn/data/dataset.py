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

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.config import DataConfig, Holdout, SplitCut, Unit
from charrnn.corpus import Corpus, open_corpus
from charrnn.data.encode import TOKENS_BIN, UNITS_NPY, Progress, encode_corpus, encode_with
from charrnn.data.split import Split, Text, split
from charrnn.data.verify import FORMAT_VERSION, check_meta, open_tokens, open_units
from charrnn.defaults import resolve_level
from charrnn.errors import CharRNNError, CorpusError
from charrnn.io import file_hash
from charrnn.schema import read_json
from charrnn.text import resolve_unit
from charrnn.tokenizers import TOKENIZER_JSON, TOKENIZER_MODEL, Tokenizer, load_tokenizer

DATASET_JSON = "dataset.json"


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
    """An encoded corpus: tokenizer, token stream (memory-mapped) and unit index, each file
    checked against the others when the folder is opened (``verify``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        path = self.folder / DATASET_JSON
        try:
            self.meta = check_meta(read_json(path, CorpusError), path)
        except FileNotFoundError:
            missing = f"not a charrnn dataset folder (no {DATASET_JSON})"
            raise CorpusError(f"{missing}: {self.folder}") from None
        self.tokenizer = load_tokenizer(self.folder)
        vocab = self.tokenizer.vocab_size
        if self.meta["vocab_size"] != vocab:
            raise CorpusError(
                f"{path}: vocab_size is {self.meta['vocab_size']:,}, but the dataset's "
                f"tokenizer has {vocab:,} symbols"
            )
        made_with = self.meta.get("tokenizer_hash")  # None: a dataset made before the hash
        if made_with is not None and made_with != self.tokenizer.fingerprint():
            raise CorpusError(
                f"{self.folder / TOKENIZER_JSON} is not the tokenizer {TOKENS_BIN} was encoded "
                f"with ({DATASET_JSON}'s tokenizer_hash differs)"
            )
        self.tokens = open_tokens(self.folder / TOKENS_BIN, self.meta, vocab)
        self.units = open_units(self.folder / UNITS_NPY, self.meta, self.tokens)
        self.config = DataConfig.from_dict(self.meta["config"])

    @property
    def unit(self) -> Unit:
        return Unit(self.meta["unit"])

    def whole(self) -> Split:
        """Every unit, as one split (a held-out text read whole)."""
        m = self.meta
        return Split(self.tokens, self.units[:, 0], m["n_chars"], m["n_bytes"])

    def split(
        self, val_fraction: float, holdout: Holdout = Holdout.tail, cut: SplitCut = SplitCut.nearest
    ) -> tuple[Split, Split]:
        """Train and validation splits (see ``data.split``)."""
        text = Text(self.tokens, self.units, self.meta["n_chars"], self.meta["n_bytes"])
        return split(text, val_fraction, holdout, cut)

    def symbol_counts(self, train: Split) -> tuple[np.ndarray, np.ndarray]:
        """How often each symbol occurs in ``train`` and in the rest of the text (V,) each."""
        vocab = self.tokenizer.vocab_size
        trained = train.symbol_counts(vocab)
        return trained, self.whole().symbol_counts(vocab) - trained


# -- building -----------------------------------------------------------------------------


def build_dataset(
    source: Path | Corpus,
    config: DataConfig,
    out: Path | None = None,
    progress: Progress | None = None,
    base: Tokenizer | None = None,
) -> Dataset:
    """Encode a corpus into the dataset folder ``out`` (None: the cache, under the hash of the
    text that was encoded), written aside, then renamed in; with a tokenizer fitted to it, or
    ``base``'s grown by its new symbols (``encode.grow``)."""
    with _corpus(source, config) as text:
        target = None if out is None else Path(os.path.realpath(out))  # through a link
        if target is not None:
            _check_replaceable(target)
        parent = cache_root() / "datasets" if target is None else target.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{text.name.stem}-", dir=parent))
        try:
            meta = _encode(text, config, tmp, progress, base)
            key = cache_key(meta["source"]["hash"], config, base)
            target = target or parent / f"{text.name.stem}-{key}"
            _put_in_place(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return Dataset(target)


def _encode(
    text: Corpus,
    config: DataConfig,
    folder: Path,
    progress: Progress | None,
    base: Tokenizer | None = None,
) -> dict[str, Any]:
    """Encode ``text`` into ``folder``: its token and unit files, tokenizer and dataset.json
    (whose source hash is that of the text the encoding read)."""
    unit = resolve_unit(config.unit, text.head)
    tokenizer, stats = encode_corpus(
        text.path,
        config.tokenizer,
        unit,
        _errors(config),
        folder,
        progress,
        name=text.name,
        base=base,
    )
    if stats["n_tokens"] == 0:  # the whole text is blank
        raise CorpusError(f"corpus is empty: {text.name}")
    where = text.name if text.copied else text.name.resolve()
    source = {"path": str(where), "size": text.size, "hash": stats.pop("hash")}
    grown = {"grown_from": base.fingerprint()} if base is not None else {}
    return _write_meta(folder, tokenizer, config, unit, source, {**grown, **stats})


def _write_meta(
    folder: Path,
    tokenizer: Tokenizer,
    config: DataConfig,
    unit: Unit,
    source: dict[str, Any],
    figures: dict[str, Any],
) -> dict[str, Any]:
    """Save the tokenizer and dataset.json beside the token and unit files in ``folder``."""
    tokenizer.save(folder)
    meta = {
        "format_version": FORMAT_VERSION,
        "source": source,
        "config": config.to_dict(),
        "unit": unit.value,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer_hash": tokenizer.fingerprint(),  # the tokenizer tokens.bin needs
        **figures,
    }
    (folder / DATASET_JSON).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


# The files a dataset folder holds: a folder of these alone (or an empty one) may be replaced.
DATASET_FILES = {DATASET_JSON, TOKENIZER_JSON, TOKENIZER_MODEL, TOKENS_BIN, UNITS_NPY}


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace anything but an empty folder or a dataset: never a user's own files."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise CorpusError(f"{folder} exists and is not a folder; choose a new or empty folder")
    foreign = sorted(
        p.name + "/" * p.is_dir()
        for p in folder.iterdir()
        if p.name not in DATASET_FILES or not p.is_file()
    )
    if foreign:
        held = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise CorpusError(
            f"{folder} is not a charrnn dataset folder (it holds {held}); "
            "choose a new or empty folder"
        )


def _put_in_place(new: Path, out: Path) -> None:
    """Rename the folder ``new`` to ``out``; an old ``out`` is moved aside first and deleted
    once the new one is in place (restored if that fails)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def encoded_with(
    source: Corpus,
    tokenizer: Tokenizer,
    unit: Unit,
    errors: str = "strict",
    progress: Progress | None = None,
) -> Iterator[Dataset]:
    """A text encoded by a tokenizer already made (a run's), as a dataset in a scratch folder
    of the cache (on disk, so memory stays bounded), removed when done."""
    scratch = cache_root() / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{source.path.stem}.", dir=scratch))
    try:
        stats = encode_with(source.path, tokenizer, unit, errors, tmp, progress)
        if stats["n_tokens"] == 0:
            raise CorpusError(f"{source.name} has no text to read")
        config = DataConfig(tokenizer.config, unit, errors == "replace")
        where = {"path": str(source.name), "size": source.size, "hash": None}
        _write_meta(tmp, tokenizer, config, unit, where, stats)
        yield Dataset(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_dataset(path: Path) -> bool:
    """Whether ``path`` is a dataset folder (made by tokenize), rather than a text."""
    return Path(path).is_dir() and (Path(path) / DATASET_JSON).exists()


def resolve_data(
    source: Path | Corpus,
    config: DataConfig,
    time_budget: float | None = None,
    held_out: tuple[float, Holdout] | None = None,
) -> DataConfig:
    """``config`` with its tokenizer's level and vocabulary size decided for the corpus and a
    CPU run of ``time_budget`` seconds (``defaults.resolve_level``; without one, ``auto`` is
    char), and a subword level's pieces learned without the text a new run validates on
    (``held_out``: its share and split). A dataset folder's were decided when it was made."""
    if isinstance(source, Path) and is_dataset(source):
        return config
    tok = config.tokenizer
    if not tok.decided:
        with _corpus(source, config) as text:
            tok = resolve_level(tok, text.size, text.head, time_budget)
    if held_out and tok.subword:
        tok = replace(tok, held_out=held_out[0], held_split=held_out[1])
    return replace(config, tokenizer=tok)


def open_source(path: Path, config: DataConfig) -> Path | Corpus:
    """A dataset folder as its path, or a corpus checked and its head read, once (a stream
    copied into the cache folder: close the Corpus to delete the copy)."""
    if is_dataset(path):
        return path
    return open_corpus(path, _errors(config), spool=cache_root())


@contextlib.contextmanager
def _corpus(source: Path | Corpus, config: DataConfig) -> Iterator[Corpus]:
    """``source`` as a Corpus; one opened here is closed here."""
    if isinstance(source, Corpus):
        yield source
        return
    text = open_corpus(source, _errors(config), spool=cache_root())
    try:
        yield text
    finally:
        text.close()


def _errors(config: DataConfig) -> str:
    return "replace" if config.replace_errors else "strict"


def prepare(
    source: Path | Corpus,
    config: DataConfig,
    progress: Progress | None = None,
    out: Path | None = None,
    base: Tokenizer | None = None,
) -> tuple[Dataset, bool]:
    """A dataset for ``source``: a dataset folder as is, or a corpus through the cache (keyed
    by the content hash of the text and the settings, whatever the file is called). With
    ``base`` (fine-tuning), the text is encoded with that tokenizer grown by the text's new
    symbols (``encode.grow``).

    Returns the dataset and whether it came from the cache.
    """
    if not isinstance(source, Corpus) and is_dataset(Path(source)):
        return Dataset(Path(source)), True
    with _corpus(source, config) as text:
        config = resolve_data(text, config)
        digest = text.digest or file_hash(text.path)
        key = cache_key(digest, config, base)
        folders = [Path(out)] if out else sorted((cache_root() / "datasets").glob(f"*-{key}"))
        for folder in folders:
            ds = _reusable(folder, digest, config, base)
            if ds is not None:
                return ds, True
        return build_dataset(text, config, out, progress, base), False


def _reusable(
    folder: Path, digest: str, config: DataConfig, base: Tokenizer | None = None
) -> Dataset | None:
    """The dataset in ``folder`` if it is an intact encoding of that text with those
    settings; a stale or damaged one is None (and is encoded again)."""
    if not (folder / DATASET_JSON).exists():
        return None
    try:
        ds = Dataset(folder)
    except CharRNNError:
        return None
    same = ds.meta["source"]["hash"] == digest and ds.config.key() == config.key()
    grown = ds.meta.get("grown_from") == (base and base.fingerprint())
    return ds if same and grown else None


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
