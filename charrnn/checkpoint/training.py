"""What a run saves to go on exactly where it stopped: the weights, the optimizer's moments, the
hidden state of every stream, the loss scale, the random generators and the loop's counters,
in one safetensors file (last.safetensors), so they always agree.

    model.<name>          the weights
    optim.<i>.<key>       AdamW's moments and step, per parameter (in model.parameters() order)
    loop.state.<i>        the hidden state of the B training streams, (layers, B, H) each
    scaler.<key>          fp16's loss scale
    average.<name>        the averaged weights (--average), where the run keeps them
    rng.torch, rng.cuda   the generators' states
    metadata "loop"       the loop's counters (see training.state.LoopState)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.checkpoint.load import load_weights
from charrnn.checkpoint.tensors import check_tensors, load_tensors, read_meta, save_tensors

State = tuple[torch.Tensor, ...]
AVERAGE = "average."  # the averaged weights' names in last.safetensors


def save_weights(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """A checkpoint of the weights alone (best.safetensors)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    save_tensors(path, tensors, meta)


def save_resumable(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    hidden: State,
    scaler: dict[str, torch.Tensor],
    loop: dict[str, Any],
    device: torch.device,
    tokenizer_hash: str,
    average: dict[str, torch.Tensor] | None = None,
) -> None:
    """Everything training needs to go on from here, in one file, naming the tokenizer."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, st in opt["state"].items():
        for k, v in st.items():
            tensors[f"optim.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    for i, s in enumerate(hidden):
        tensors[f"loop.state.{i}"] = s
    for k, v in scaler.items():
        tensors[f"scaler.{k}"] = v
    for k, v in (average or {}).items():
        tensors[f"{AVERAGE}{k}"] = v
    tensors["rng.torch"] = torch.get_rng_state()
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    meta = {"kind": "last", "loop": loop, "param_groups": _json_groups(opt["param_groups"])}
    meta["tokenizer_hash"] = tokenizer_hash
    save_tensors(path, tensors, meta)


@dataclass
class Resumed:
    hidden: State  # (layers, B, H) each, on the device
    scaler: dict[str, torch.Tensor]
    loop: dict[str, Any]  # the loop's counters, as saved
    average: dict[str, torch.Tensor]  # the averaged weights by name; none without --average


def load_resumable(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> Resumed:
    """Load the weights and the optimizer's moments into ``model`` and ``optimizer``, set the
    random generators, and return the rest. ValueError (and kin) where the file's state does
    not fit the model, so that a tampered file is refused before training starts."""
    meta = read_meta(path)
    load_weights(model, path)
    params = list(model.parameters())
    opt_state: dict[int, dict[str, Any]] = {}
    saved = load_tensors(path, "optim.")
    check_tensors(saved, path, "optim.")
    for name, t in saved.items():
        pid, key = name.split(".", 1)
        if not 0 <= int(pid) < len(params):
            raise ValueError(f"optimizer state for a parameter #{pid} the model lacks")
        if t.shape != (params[int(pid)].shape if key != "step" else ()):
            raise ValueError(f"optimizer state {name} has shape {tuple(t.shape)}")
        opt_state.setdefault(int(pid), {})[key] = t
    # The hyperparameters come from the run's config (the learning rate is set at every
    # step), not from the file: its param_groups are a record, never an input.
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    hidden_t = load_tensors(path, "loop.state.")
    check_tensors(hidden_t, path, "loop.state.")
    hidden = tuple(hidden_t[str(i)].to(device) for i in range(len(hidden_t)))
    scaler = load_tensors(path, "scaler.")
    average = load_tensors(path, AVERAGE)
    check_tensors(average, path, AVERAGE)
    rng = load_tensors(path, "rng.")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], device)
    return Resumed(hidden, scaler, meta["loop"], average)


def _json_groups(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in groups]
