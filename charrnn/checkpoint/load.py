"""Loading a trained model: its config, weights and tokenizer, checked against each other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.checkpoint.formats import ADDED_IN, TOKENIZER_HASHED, read_run_json
from charrnn.checkpoint.layout import BEST, DEFAULT_ROOT, LAST, RUN_JSON, find_run
from charrnn.checkpoint.tensors import check_tensors, load_tensors, read_meta, tensor_shapes
from charrnn.device import resolve_device
from charrnn.errors import CheckpointError, ConfigError, one_line
from charrnn.schema import build


@dataclass
class LoadedRun:
    folder: Path
    info: dict[str, Any]  # run.json
    model: Any  # RNNLM, in eval mode
    tokenizer: Any  # Tokenizer
    meta: dict[str, Any]  # the checkpoint's own metadata (step, validation loss...)
    which: str  # "best" or "last"


def load_run(
    ref: str | Path | None = None,
    root: Path = DEFAULT_ROOT,
    which: str = "best",
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """Rebuild a trained model and its tokenizer from a run folder, checking that they agree."""
    from charrnn.errors import CharRNNError
    from charrnn.tokenizers import load_tokenizer

    if which not in ("best", "last"):
        raise ConfigError(f"which must be 'best' or 'last', not {which!r}")
    device = resolve_device(device)
    folder = find_run(ref, root)
    info = read_run_json(folder)
    config = model_config(info, folder)
    try:
        tokenizer = load_tokenizer(folder)
    except CharRNNError as e:
        raise CheckpointError(str(e)) from None
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"tokenizer has {tokenizer.vocab_size} symbols but the model expects "
            f"{config.vocab_size}: {folder}"
        )
    path = folder / (BEST if which == "best" else LAST)
    if which == "best" and not path.exists():
        path, which = folder / LAST, "last"
    if not path.exists():
        raise CheckpointError(f"run {folder.name!r} has no checkpoint yet ({BEST} or {LAST})")
    meta = read_meta(path)
    check_tokenizer(tokenizer, meta, path)
    model = build_model(config, path)
    model.to(device).eval()
    return LoadedRun(folder, info, model, tokenizer, meta, which)


def check_tokenizer(tokenizer: Any, meta: dict[str, Any], path: Path) -> None:
    """Refuse a tokenizer other than the one the weights of ``path`` were trained with (the
    content hash their metadata names: formats from TOKENIZER_HASHED on)."""
    want = meta.get("tokenizer_hash")
    if want is None:
        if meta.get("format_version", 1) >= TOKENIZER_HASHED:
            raise CheckpointError(f"{path} does not name the tokenizer it was trained with")
        return
    if want != tokenizer.fingerprint():
        raise CheckpointError(
            f"{path.parent / 'tokenizer.json'} is not the tokenizer {path.name} was trained "
            "with (their content hashes differ)"
        )


def model_config(info: dict[str, Any], folder: Path) -> Any:
    """The ModelConfig a run.json records."""
    from charrnn.config import ModelConfig

    return build(ModelConfig, info.get("model"), folder / RUN_JSON, CheckpointError, "model.")


def build_model(config: Any, path: Path) -> Any:
    """An RNNLM of ``config`` holding the weights of ``path``."""
    from charrnn.model import RNNLM

    check_shapes(config, path)
    model = RNNLM(config)
    load_weights(model, path)
    return model


def check_shapes(config: Any, path: Path) -> None:
    """Refuse weights whose names or shapes disagree with ``config``, from the shapes the
    config asks for and those in the file's header: an absurd size is refused before any
    memory is allocated."""
    from charrnn.errors import CharRNNError
    from charrnn.model import RNNLM, model_shapes

    try:
        RNNLM.check(config)
        want = model_shapes(config)
    except CharRNNError as e:
        raise CheckpointError(f"invalid model config ({e}): {path.parent / RUN_JSON}") from None
    have = tensor_shapes(path, prefix="model.")
    for name in _implied(path, want.keys() - have.keys()):
        have[name] = want[name]
    old, new = have.get("len_embed.weight"), want.get("len_embed.weight")
    if old and new and old == (new[0] // 2 + 1, new[1]):  # format 2's, see _upgrade_weights
        have["len_embed.weight"] = new
    if want != have:
        diff = sorted(k for k in want.keys() | have.keys() if want.get(k) != have.get(k))
        detail = ", ".join(f"{k} {have.get(k)} vs {want.get(k)}" for k in diff[:3])
        raise CheckpointError(f"weights do not match the model config ({detail}): {path}")


def _upgrade_weights(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, Any]:
    """Tensors of an older format in today's shape, computing what they computed then.

    Format 2's length input had one "unknown" row (the last) and was read as it is; format 3
    has an "unknown" row per offset bucket and reads the input times LENGTH_INPUT_SCALE. The
    old unknown row is repeated for every offset and everything is divided by the scale, so
    an old model's inputs are unchanged (up to float rounding)."""
    from charrnn.model import LENGTH_INPUT_SCALE

    old = weights.get("len_embed.weight")
    n = getattr(model, "n_buckets", None)
    if old is not None and n is not None and old.shape[0] == n + 1:
        rows = torch.cat([old[:n], old[n:].expand(n, -1)])  # (2n, E)
        weights["len_embed.weight"] = rows / LENGTH_INPUT_SCALE
    return weights


def _implied(path: Path, missing: Any) -> set[str]:
    """Of the ``missing`` tensor names, those the file's format predates (see ADDED_IN)."""
    version = read_meta(path).get("format_version", 1)
    return {n for n in missing if version < ADDED_IN.get(n, 0)}


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load ``model.*`` tensors strictly: every name and shape must match the config."""
    weights = load_tensors(path, prefix="model.")
    check_tensors(weights, path, "model.")
    weights = _upgrade_weights(weights, model)
    expected = model.state_dict()
    for name in _implied(path, expected.keys() - weights.keys()):
        weights[name] = torch.zeros_like(expected[name])
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        detail = one_line(e, 300)
        raise CheckpointError(f"weights do not match the model config ({detail}): {path}") from None
