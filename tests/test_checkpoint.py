import json
import os

import pytest
import torch

from charrnn.checkpoint import (
    BEST,
    FORMAT_VERSION,
    LAST,
    RUN_JSON,
    find_run,
    load_run,
    read_meta,
    save_tensors,
)
from charrnn.errors import CheckpointError, TrainingError
from charrnn.io import write_bytes_atomic


def test_save_then_load_gives_identical_logits(trained_run):
    a = load_run(trained_run)
    b = load_run(trained_run)
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        la, _ = a.model(tokens)
        lb, _ = b.model(tokens)
    assert torch.equal(la, lb)
    # and the saved weights are exactly the ones the checkpoint holds
    meta = read_meta(trained_run / BEST)
    assert meta["kind"] == "best" and meta["full"] is True


def test_last_checkpoint_holds_resume_state(trained_run):
    meta = read_meta(trained_run / LAST)
    assert meta["kind"] == "last"
    assert meta["loop"]["step"] == 40
    assert meta["param_groups"][0]["betas"] == [0.9, 0.99]


def test_checkpoints_are_not_pickles(trained_run):
    for name in (BEST, LAST):
        head = (trained_run / name).read_bytes()[:16]
        # safetensors: an 8-byte header length, then the JSON header (a pickle starts with
        # its protocol opcode, 0x80, which is also a header length's first byte now and then)
        assert int.from_bytes(head[:8], "little") < 10_000_000
        assert head[8:9] == b"{"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    write_bytes_atomic(path, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_bytes_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]  # no temp file left


def test_checkpoint_write_failure_is_a_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    save_tensors(path, {"model.x": torch.ones(2)}, {"kind": "best"})
    monkeypatch.setattr(
        os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device"))
    )
    with pytest.raises(TrainingError, match="No space left"):
        save_tensors(path, {"model.x": torch.zeros(2)}, {"kind": "best"})
    assert read_meta(path) == {"format_version": FORMAT_VERSION, "kind": "best"}


def _copy_run(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        if f.is_file():
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_pickle_in_place_of_weights_is_refused(trained_run, tmp_path):
    import pickle  # only to build the hostile file

    run = _copy_run(trained_run, tmp_path / "run")
    (run / BEST).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_run(run)


def test_truncated_weights_are_refused(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "run")
    data = (run / BEST).read_bytes()
    (run / BEST).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError):
        load_run(run)


def test_mismatched_shapes_are_refused(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "run")
    info = json.loads((run / RUN_JSON).read_text())
    info["model"]["hidden"] = 48
    (run / RUN_JSON).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="do not match"):
        load_run(run)


def test_future_format_is_refused(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "run")
    info = json.loads((run / RUN_JSON).read_text())
    info["format_version"] = 999
    (run / RUN_JSON).write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="newer"):
        load_run(run)


def test_vocabulary_size_disagreement_is_refused(trained_run, tmp_path):
    run = _copy_run(trained_run, tmp_path / "run")
    tok = json.loads((run / "tokenizer.json").read_text())
    tok["pieces"] = tok["pieces"][:-1]
    (run / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(CheckpointError, match="symbols"):
        load_run(run)


def test_find_run(trained_run, tmp_path):
    root = trained_run.parent
    assert find_run(None, root) == trained_run
    assert find_run("verses", root) == trained_run
    assert find_run(str(trained_run), root) == trained_run
    with pytest.raises(CheckpointError, match="no run named"):
        find_run("nope", root)
    with pytest.raises(CheckpointError, match="not a charrnn run"):
        find_run(str(tmp_path), root)
    with pytest.raises(CheckpointError, match="no trained run"):
        find_run(None, tmp_path / "empty")


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from charrnn.io import write_bytes_atomic

    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "f.txt", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_format_2_model_loads_and_computes_what_it_computed_then(trained_run, tmp_path):
    """Format 2 had one "unknown" length-input row, read without a scale, and no end
    calibration; such a run loads into today's model and gives the same logits."""
    import shutil

    from safetensors.torch import save_file

    from charrnn.checkpoint import META_KEY, load_tensors

    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    new = load_run(trained_run)
    n = new.model.n_buckets
    with torch.no_grad():  # a model whose unknown rows are all alike: format 2 could hold it
        new.model.len_embed.weight[n:] = new.model.len_embed.weight[n]
        new.model.end_bias.zero_()
    tensors = load_tensors(run / "best.safetensors")
    rows = new.model.length_table().detach()
    tensors["model.len_embed.weight"] = torch.cat([rows[:n], rows[n : n + 1]]).contiguous()
    del tensors["model.end_bias"]
    meta = {**read_meta(run / "best.safetensors"), "format_version": 2}
    save_file(tensors, str(run / "best.safetensors"), metadata={META_KEY: json.dumps(meta)})
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "format_version": 2}))
    old = load_run(run)
    assert old.model.len_embed.weight.shape == (2 * n, new.model.config.embed)
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(old.model(tokens)[0], new.model(tokens)[0], atol=1e-5)
