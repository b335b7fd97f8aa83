"""Checkpoints never execute code; bad ones are refused in one line; a full or unwritable disk
and a non-finite loss stop training cleanly, the last good checkpoint kept."""

from __future__ import annotations

import ast
import errno
import json
import math
import os
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charrnn
import charrnn.checkpoint.formats as ckpt
from charrnn.checkpoint import BEST, LAST, META_KEY, RUN_JSON, load_run, load_tensors, read_meta
from charrnn.cli import app
from charrnn.errors import CheckpointError
from charrnn.tokenizers import TOKENIZER_JSON
from charrnn.training import loop
from charrnn.training.run import train
from tests.conftest import tiny_job

runner = CliRunner()
PACKAGE = Path(charrnn.__file__).parent


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


class _Touch:
    """Unpickling this creates a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        data = json.loads((run / name).read_text())
        change(data)  # in place
        (run / name).write_text(json.dumps(data))

    return tamper


def write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        (run / name).unlink()
        if isinstance(content, bytes):
            (run / name).write_bytes(content)
        else:
            (run / name).write_text(content)

    return tamper


def rewrite_meta(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Edit the JSON metadata inside a safetensors header, keeping the tensors."""

    def tamper(run: Path) -> None:
        data = (run / name).read_bytes()
        n = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + n])
        meta = json.loads(header["__metadata__"][META_KEY])
        new = change(meta)
        header["__metadata__"][META_KEY] = new if isinstance(new, str) else json.dumps(meta)
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        (run / name).write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])

    return tamper


def _set(key: str, value: object) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        d[key] = value

    return change


def _set_model(key: str, value: object) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        d["model"][key] = value

    return change


def _extra_tensor(run: Path) -> None:
    from safetensors.torch import save_file

    tensors = load_tensors(run / BEST)
    tensors["model.extra"] = torch.zeros(3)
    save_file(tensors, str(run / BEST), metadata={META_KEY: json.dumps(read_meta(run / BEST))})


def _retensor(name: str, key: str, value: torch.Tensor) -> Callable[[Path], None]:
    """Put ``value`` under ``key`` in a checkpoint, keeping its metadata."""

    def tamper(run: Path) -> None:
        from safetensors.torch import save_file

        tensors = load_tensors(run / name)
        tensors[key] = value
        meta = json.dumps(read_meta(run / name))
        save_file(tensors, str(run / name), metadata={META_KEY: meta})

    return tamper


def _weights_folder(run: Path) -> None:
    (run / BEST).unlink()
    (run / BEST).mkdir()
    (run / BEST / "weights.bin").write_bytes(b"\0" * 64)


def _truncate(run: Path) -> None:
    data = (run / BEST).read_bytes()
    (run / BEST).write_bytes(data[: len(data) * 2 // 3])


NESTED = "[" * 100_000 + "]" * 100_000

# (what is wrong, how to make it so, a words of the one-line refusal)
TAMPERED = [
    ("pickle in place of the weights", "pickle", "not a valid safetensors"),
    ("truncated weights", _truncate, "not a valid safetensors"),
    ("weights file is a folder", _weights_folder, "is a folder, not a file"),
    ("an extra tensor in the weights", _extra_tensor, "do not match"),
    ("run.json not JSON", write(RUN_JSON, "{'model': None"), "not valid JSON"),
    ("run.json a JSON list", write(RUN_JSON, "[1, 2]"), "not a JSON object"),
    ("run.json nested 100000 deep", write(RUN_JSON, NESTED), "not valid JSON"),
    (
        "run.json without format version",
        edit_json(RUN_JSON, _set("format_version", None)),
        "no format version",
    ),
    (
        "run.json version true",
        edit_json(RUN_JSON, _set("format_version", True)),
        "no format version",
    ),
    ("run.json from the future", edit_json(RUN_JSON, _set("format_version", 99)), "newer"),
    ("run.json older than any", edit_json(RUN_JSON, _set("format_version", 0)), "older than any"),
    (
        "model config of wrong type",
        edit_json(RUN_JSON, _set_model("hidden", "32")),
        r"run\.json: model\.hidden must be a whole number",
    ),
    (
        "model config with a foreign key",
        edit_json(RUN_JSON, _set_model("__class__", "os.system")),
        r"run\.json: model\.__class__ is not a setting",
    ),
    (
        "model config a list",
        edit_json(RUN_JSON, _set("model", [1])),
        r"run\.json: model must be a JSON object",
    ),
    ("shapes disagree with config", edit_json(RUN_JSON, _set_model("hidden", 48)), "do not match"),
    (
        "absurd model size",  # refused by its range, before anything is built
        edit_json(RUN_JSON, _set_model("hidden", 10**8)),
        r"model\.hidden must be at most",
    ),
    (
        "unknown cell",
        edit_json(RUN_JSON, _set_model("cell", "transformer")),
        r"run\.json: model\.cell must be rnn, gru or lstm",
    ),
    ("tokenizer not JSON", write(TOKENIZER_JSON, "pieces = ['a']"), r"tokenizer.json is not valid"),
    ("tokenizer nested 100000 deep", write(TOKENIZER_JSON, NESTED), r"tokenizer.json is not valid"),
    ("tokenizer missing", lambda run: (run / TOKENIZER_JSON).unlink(), "tokenizer file missing"),
    (
        "tokenizer is a folder",
        lambda run: ((run / TOKENIZER_JSON).unlink(), (run / TOKENIZER_JSON).mkdir()),
        r"tokenizer\.json is a folder",
    ),
    ("tokenizer size disagrees", edit_json(TOKENIZER_JSON, lambda d: d["pieces"].pop()), "symbols"),
    (
        "tokenizer pieces not strings",
        edit_json(TOKENIZER_JSON, lambda d: d["pieces"].append(7)),
        r"tokenizer\.json: pieces item \d+ must be text",
    ),
    (
        "tokenizer without specials",
        edit_json(TOKENIZER_JSON, lambda d: d["pieces"].reverse()),
        "special symbols",
    ),
    (
        "tokenizer of an unknown level",
        edit_json(TOKENIZER_JSON, lambda d: d["config"].update(level="klingon")),
        r"tokenizer\.json: config\.level must be",
    ),
    (
        "tokenizer from the future",
        edit_json(TOKENIZER_JSON, _set("format_version", 99)),
        "format version 99",
    ),
    (
        "weights metadata not JSON",
        rewrite_meta(BEST, lambda m: "{not json"),
        "metadata is not valid JSON",
    ),
    ("weights metadata a list", rewrite_meta(BEST, lambda m: "[]"), "not a JSON object"),
    (
        "weights from the future",
        rewrite_meta(BEST, _set("format_version", 99)),
        "format version 99",
    ),
]


@pytest.mark.parametrize(
    ("tamper", "needle"), [c[1:] for c in TAMPERED], ids=[c[0] for c in TAMPERED]
)
def test_a_tampered_run_is_refused_in_one_line_and_runs_no_code(
    trained_run, tmp_path, tamper, needle
):
    run = copy_run(trained_run, tmp_path / "run")
    marker = tmp_path / "code-ran"
    if tamper == "pickle":
        tamper = write(BEST, pickle.dumps(_Touch(marker)))
    tamper(run)
    with pytest.raises(CheckpointError, match=needle) as e:
        load_run(run)
    assert len(str(e.value).splitlines()) == 1
    assert not marker.exists()


RESUME_TAMPERED = [
    ("pickle in place of last", "pickle", "not a valid safetensors"),
    (
        "truncated last",
        lambda run: (run / LAST).write_bytes((run / LAST).read_bytes()[:5000]),
        "not a valid safetensors",
    ),
    ("loop state missing", rewrite_meta(LAST, lambda m: m.pop("loop")), "invalid saved state"),
    (
        "loop state of wrong type",
        rewrite_meta(LAST, lambda m: m.update(loop=[1])),
        "invalid saved state",
    ),
    (
        "loop state with a foreign key",
        rewrite_meta(LAST, lambda m: m["loop"].update(evil=1)),
        "invalid saved state",
    ),
    ("loop step a string", rewrite_meta(LAST, lambda m: m["loop"].update(step="9")), "invalid"),
    ("optimizer moment reshaped", _retensor(LAST, "optim.0.exp_avg", torch.zeros(3)), "invalid"),
    (
        "optimizer state for no parameter",
        _retensor(LAST, "optim.99.exp_avg", torch.zeros(3)),
        "invalid",
    ),
    ("hidden state reshaped", _retensor(LAST, "loop.state.0", torch.zeros(1, 4, 7)), "invalid"),
    ("last from the future", rewrite_meta(LAST, _set("format_version", 99)), "format version 99"),
    ("last shapes disagree", edit_json(RUN_JSON, _set_model("hidden", 48)), "do not match"),
]


@pytest.mark.parametrize(
    ("tamper", "needle"), [c[1:] for c in RESUME_TAMPERED], ids=[c[0] for c in RESUME_TAMPERED]
)
def test_a_tampered_last_checkpoint_is_not_resumed(trained_run, corpus, tmp_path, tamper, needle):
    root = tmp_path / "ck"
    copy_run(trained_run, root / "r")  # trained on the same text as ``corpus``
    marker = tmp_path / "code-ran"
    if tamper == "pickle":
        tamper = write(LAST, pickle.dumps(_Touch(marker)))
    tamper(root / "r")
    with pytest.raises(CheckpointError, match=needle) as e:
        train(corpus, tiny_job(max_steps=8), run="r", root=root, resume=True)
    assert len(str(e.value).splitlines()) == 1
    assert not marker.exists()


def test_loading_and_resuming_never_unpickle(corpus, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    root = tmp_path / "ck"
    train(corpus, tiny_job(max_steps=4), run="r", root=root)
    for module, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    result = train(corpus, tiny_job(max_steps=8), run="r", root=root, resume=True)
    assert result.steps == 8
    assert load_run(root / "r").model is not None


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else None
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
                name = f"{f.value.id}.{f.attr}"
            if name:
                out.append((name, node))
    return out


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_the_package_has_no_way_to_unpickle(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    unsafe = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & unsafe, path
        if isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in unsafe, path
    for name, call in _calls(tree):
        assert name not in ("torch.load", "torch.save", "eval", "exec", "pickle.loads"), path
        if name == "np.load":
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("allow_pickle"), ast.Constant), path
            assert flags["allow_pickle"].value is False, path


# -- format versions ----------------------------------------------------------------------


def test_an_older_format_is_migrated_or_refused_saying_why(trained_run, tmp_path, monkeypatch):
    """Pretend this charrnn writes the next format and reads this one through a migration."""
    run = copy_run(trained_run, tmp_path / "run")
    now = ckpt.FORMAT_VERSION
    monkeypatch.setattr(ckpt, "FORMAT_VERSION", now + 1)
    with pytest.raises(CheckpointError, match=f"version {now} cannot be upgraded to {now + 1}"):
        load_run(run)

    def upgrade(info: dict) -> dict:
        info["migrated_from"] = info["format_version"]
        return info

    monkeypatch.setattr(ckpt, "MIGRATIONS", {**ckpt.MIGRATIONS, now: upgrade})
    loaded = load_run(run)
    assert loaded.info["format_version"] == now + 1 and loaded.info["migrated_from"] == now
    assert json.loads((run / RUN_JSON).read_text())["format_version"] == now  # file untouched


def _as_format(run: Path, version: int, drop: tuple[str, ...] = ()) -> None:
    """Make a run what an older format wrote of the same model: the length input's unknown
    rows stored for reading times ckpt.OLD_UNKNOWN_SCALE (format 3 and before), without the
    tensors in ``drop``."""
    from safetensors.torch import save_file

    n = load_run(run).model.n_buckets
    for name in (BEST, LAST):
        tensors = load_tensors(run / name)
        for key in drop:
            del tensors[key]
        rows = tensors["model.len_embed.weight"].clone()
        rows[n:] /= ckpt.OLD_UNKNOWN_SCALE
        tensors["model.len_embed.weight"] = rows
        meta = {**read_meta(run / name), "format_version": version}
        save_file(tensors, str(run / name), metadata={META_KEY: json.dumps(meta)})
    info = json.loads((run / RUN_JSON).read_text())
    del info["model"]["unknown_scale"]
    del info["train"]["split_cut"]  # format 5 wrote it
    (run / RUN_JSON).write_text(json.dumps({**info, "format_version": version}))


def _as_format_1(run: Path) -> None:
    """Make a run what format 1 wrote: no start state in the weights."""
    _as_format(run, 1, drop=("model.start_h",))


def test_a_format_3_run_reads_its_unknown_length_rows_as_it_did(trained_run, corpus, tmp_path):
    """Format 3 read every row of the length input times LENGTH_INPUT_SCALE; format 4 reads
    the unknown rows as they are. A format-3 run keeps its reading, computes what it computed
    then, and resumes."""
    run = copy_run(trained_run, tmp_path / "ck" / "r")
    _as_format(run, 3)
    old, new = load_run(run), load_run(trained_run)
    assert old.model.config.unknown_scale == ckpt.OLD_UNKNOWN_SCALE
    assert new.model.config.unknown_scale == 1.0
    assert torch.allclose(old.model.length_table(), new.model.length_table(), atol=1e-6)
    with torch.no_grad():
        tokens = torch.tensor([[1, 5, 6, 7, 8]])
        assert torch.allclose(old.model(tokens)[0], new.model(tokens)[0], atol=1e-5)
    resumed = train(corpus, tiny_job(max_steps=44), run="r", root=tmp_path / "ck", resume=True)
    assert resumed.steps == 44
    assert json.loads((run / RUN_JSON).read_text())["model"].get("unknown_scale") is None


def test_a_format_1_run_loads_and_resumes_as_it_was(trained_run, corpus, tmp_path):
    """Format 1 had no start state: units started from zeros. Such a run still loads, and
    computes exactly what it computed then."""
    run = copy_run(trained_run, tmp_path / "ck" / "r")
    _as_format_1(run)
    old = load_run(run)
    assert old.info["format_version"] == ckpt.FORMAT_VERSION
    assert not old.model.start_h.any()
    new = load_run(trained_run)
    with torch.no_grad():
        new.model.start_h.zero_()
        # the unknown rows, as the old reading makes them (stored / 10, read x 10: rounding)
        n = new.model.n_buckets
        new.model.len_embed.weight[n:] = old.model.length_table()[n:]
        tokens = torch.tensor([[1, 5, 6, 7, 8]])
        assert torch.equal(old.model(tokens)[0], new.model(tokens)[0])
    resumed = train(corpus, tiny_job(max_steps=44), run="r", root=tmp_path / "ck", resume=True)
    assert resumed.steps == 44 and read_meta(run / LAST)["format_version"] == ckpt.FORMAT_VERSION


def test_a_current_run_without_its_start_state_is_refused(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path / "run")
    _as_format_1(run)
    edit_json(RUN_JSON, _set("format_version", ckpt.FORMAT_VERSION))(run)
    rewrite_meta(BEST, _set("format_version", ckpt.FORMAT_VERSION))(run)
    with pytest.raises(CheckpointError, match="start_h"):
        load_run(run)


def test_checkpoints_carry_their_format_version(trained_run):
    version = json.loads((trained_run / RUN_JSON).read_text())["format_version"]
    assert version == ckpt.FORMAT_VERSION
    for name in (BEST, LAST):
        assert read_meta(trained_run / name)["format_version"] == version


# -- a full or unwritable disk ------------------------------------------------------------

TINY = [
    *("--layers", "1", "--hidden", "32", "--embed", "16", "--batch-size", "4"),
    *("--seq-len", "16", "--sample-every", "0", "--device", "cpu"),
]


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert lines[0].startswith("error:")
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def _failing_after(n: int, exc: OSError, real: Callable) -> Callable:
    """A stand-in for a write step that works n times on regular files, then fails."""
    count = {"n": 0}

    def fake(*args, **kwargs):
        count["n"] += 1
        if count["n"] > n:
            raise exc
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize(
    ("target", "error", "words"),
    [
        ("fsync", OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        ("mkstemp", PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        ("mkstemp", OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
    ],
)
def test_a_failing_disk_stops_training_and_keeps_the_last_checkpoint(
    corpus, tmp_path, monkeypatch, target, error, words
):
    ck = tmp_path / "ck"
    args = ["train", str(corpus), *TINY, "--max-steps", "16", "--run", "r", "--checkpoints", ck]
    assert runner.invoke(app, ["tokenize", str(corpus)]).exit_code == 0  # the cache is ready
    real_fsync, real_mkstemp = os.fsync, tempfile.mkstemp
    # Writes at the start: tokenizer, run.json, last@0; then best@2, last@2 (16 steps, 8
    # evaluations); the next fails.
    if target == "fsync":
        fake = _failing_after(5, error, real_fsync)
        monkeypatch.setattr(os, "fsync", lambda fd: fake(fd) if _regular(fd) else None)
    else:
        monkeypatch.setattr(tempfile, "mkstemp", _failing_after(5, error, real_mkstemp))
    result = runner.invoke(app, [str(a) for a in args])
    line = one_line_error(result, words, "the previous one is intact")
    assert "could not write checkpoint" in line
    assert read_meta(ck / "r" / LAST)["loop"]["step"] == 2
    assert load_run(ck / "r").meta["step"] == 2
    assert not [p for p in (ck / "r").iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(os, "fsync", real_fsync)
    monkeypatch.setattr(tempfile, "mkstemp", real_mkstemp)
    resumed = runner.invoke(app, [str(a) for a in [*args, "--resume", "--max-steps", "5"]])
    assert resumed.exit_code == 0, resumed.output
    assert read_meta(ck / "r" / LAST)["loop"]["step"] == 5


def _regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def test_a_disk_full_at_the_first_write_leaves_nothing(corpus, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    assert runner.invoke(app, ["tokenize", str(corpus)]).exit_code == 0  # the cache is ready
    monkeypatch.setattr(
        os, "fsync", _failing_after(0, OSError(errno.ENOSPC, "No space left on device"), os.fsync)
    )
    result = runner.invoke(app, ["train", str(corpus), *TINY, "--checkpoints", str(ck)])
    one_line_error(result, "No space left on device")
    assert not any(ck.iterdir())


def test_a_disk_full_while_tokenizing_is_one_line_and_leaves_no_dataset(
    corpus, tmp_path, monkeypatch
):
    import charrnn.data.encode as encode

    class Full:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_init = encode._Writer.__init__
    monkeypatch.setattr(encode._Writer, "__init__", lambda self, file: real_init(self, Full()))
    out = tmp_path / "ds"
    one_line_error(runner.invoke(app, ["tokenize", str(corpus), "-o", str(out)]), "No space")
    assert [p.name for p in tmp_path.iterdir()] == [corpus.name]  # no dataset, no leftovers


def test_a_checkpoints_folder_that_cannot_be_made_is_one_line(corpus, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    args = ["train", str(corpus), *TINY, "--checkpoints", str(blocker / "ck")]
    one_line_error(runner.invoke(app, args), "cannot create the run folder")
    assert blocker.read_text() == "not a folder"


# -- non-finite losses --------------------------------------------------------------------


def _nan_on_training_steps(monkeypatch, steps: set[int]) -> None:
    """Make the training loss NaN at the given (1-based) training calls."""
    real = loop.cross_entropy_sum
    count = {"n": 0}

    def fake(logits, targets):
        count["n"] += 1
        loss = real(logits, targets)
        return loss * math.nan if count["n"] in steps else loss

    monkeypatch.setattr(loop, "cross_entropy_sum", fake)


def test_a_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    corpus, tmp_path, monkeypatch
):
    ck = tmp_path / "ck"
    _nan_on_training_steps(monkeypatch, {5})
    args = ["train", str(corpus), *TINY, "--max-steps", "16", "--run", "r", "--checkpoints", ck]
    result = runner.invoke(app, [str(a) for a in args])
    one_line_error(result, "loss became nan at step 5", "checkpoint (step 4) is kept")
    kept = load_run(ck / "r", which="last")
    assert kept.meta["loop"]["step"] == 4
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())


def test_skip_nonfinite_skips_the_bad_steps(corpus, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    _nan_on_training_steps(monkeypatch, {3, 4, 9})
    args = [
        *("train", str(corpus), *TINY, "--max-steps", "10", "--run", "r"),
        *("--checkpoints", str(ck), "--skip-nonfinite"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    kept = load_run(ck / "r", which="last")
    assert kept.meta["loop"]["step"] == 10
    assert all(torch.isfinite(p).all() for p in kept.model.parameters())


def test_a_format_4_run_keeps_the_validation_split_it_was_made_with(trained_run, tmp_path):
    """Format 5 cuts the validation split at the unit boundary nearest its share; a run of
    format 4 or before keeps the cut it trained and was validated with."""
    from charrnn.checkpoint import read_run_json
    from charrnn.stopfit import run_splits

    run = copy_run(trained_run, tmp_path / "run")
    info = json.loads((run / RUN_JSON).read_text())
    assert info["train"]["split_cut"] == "nearest"
    del info["train"]["split_cut"]
    (run / RUN_JSON).write_text(json.dumps({**info, "format_version": 4}))
    old = read_run_json(run)
    assert old["train"]["split_cut"] == "unit-after"
    _, val_old = run_splits(old)
    _, val_new = run_splits(read_run_json(trained_run))
    assert len(val_old) != len(val_new)  # this corpus is one the rules cut differently
    assert load_run(run).info["train"]["split_cut"] == "unit-after"


def test_a_format_5_run_loads_without_a_tokenizer_hash_and_computes_what_it_did(
    trained_run, corpus, tmp_path
):
    """Format 6 ties the weights to their tokenizer by a content hash; a run of format 5
    has none, loads unchecked and gives the same logits, and resumes."""
    run = copy_run(trained_run, tmp_path / "ck" / "r")
    for name in (BEST, LAST):
        meta = rewrite_meta(name, lambda m: (m.pop("tokenizer_hash"), m.update(format_version=5)))
        meta(run)
    edit_json(RUN_JSON, _set("format_version", 5))(run)
    assert "tokenizer_hash" not in read_meta(run / BEST)
    old, new = load_run(run), load_run(trained_run)
    with torch.no_grad():
        tokens = torch.tensor([[1, 5, 6, 7, 8]])
        assert torch.equal(old.model(tokens)[0], new.model(tokens)[0])
    resumed = train(corpus, tiny_job(max_steps=44), run="r", root=tmp_path / "ck", resume=True)
    assert resumed.steps == 44
    assert read_meta(run / LAST)["tokenizer_hash"] == old.tokenizer.fingerprint()
