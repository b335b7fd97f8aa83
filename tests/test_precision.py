"""Mixed precision on the CPU: --precision auto trains in bf16 where the CPU computes in bfloat16
in hardware, a bf16 run is wider in the same time, and it trains and resumes bit for bit."""

import math

import pytest
import torch

from charrnn import defaults
from charrnn.checkpoint import BEST, LAST, load_tensors, read_run_json
from charrnn.config import ModelConfig, Precision
from charrnn.data import prepare
from charrnn.defaults import BF16_CPU_SPEEDUP, hidden_for_budget
from charrnn.errors import ConfigError
from charrnn.training import precision
from charrnn.training.callbacks import Callbacks
from charrnn.training.precision import resolve_precision
from charrnn.training.run import fit_model_config, train
from tests.conftest import StopAt, tiny_job

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def test_auto_is_bf16_only_on_a_cpu_that_computes_in_bfloat16(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", CPU) is Precision.bf16
    assert resolve_precision("auto", CUDA) is Precision.fp32  # unmeasured there: as before
    assert resolve_precision("fp32", CPU) is Precision.fp32
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", CPU) is Precision.fp32
    assert resolve_precision("bf16", CPU) is Precision.bf16  # asked for: honoured, if slow


@pytest.mark.parametrize(
    "amx, avx512_bf16, expected", [(True, False, True), (False, True, True), (False, False, False)]
)
def test_either_amx_or_avx512_bf16_counts_as_bfloat16_in_hardware(
    monkeypatch, amx, avx512_bf16, expected
):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert precision.cpu_has_bf16() is expected


def test_a_torch_without_the_probes_counts_as_fp32_only(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert precision.cpu_has_bf16() is False


@pytest.mark.parametrize(
    "name, device, message",
    [("fp16", CPU, "fp16 needs a CUDA device"), ("bf16", MPS, "not supported on mps")],
)
def test_a_precision_the_device_cannot_run_is_refused(name, device, message):
    with pytest.raises(ConfigError, match=message):
        resolve_precision(name, device)


def test_a_bf16_run_on_the_cpu_is_as_wide_as_a_longer_fp32_run_where_its_rows_are_light(
    corpus, monkeypatch
):
    fast = BF16_CPU_SPEEDUP
    assert [hidden_for_budget(b, "cpu", speedup=fast) for b in (150, 900)] == [384, 704]
    assert hidden_for_budget(150, "cuda", speedup=fast) == 512  # the rule is the CPU's
    ds, _ = prepare(corpus, tiny_job().data)
    split, _ = ds.split(0.1)
    job = tiny_job(time_budget=150.0, max_steps=None, precision="auto")

    def width(has_units: bool, row_load: float) -> int:
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: has_units)
        monkeypatch.setattr(defaults, "BF16_ROW_LOAD", row_load)
        return fit_model_config(ModelConfig(hidden=0), ds, split, job.train, CPU).hidden

    # the verses: 32 symbols x (128 + 256) row parameters over 3,366 training tokens: 3.65
    assert width(True, 10.0) == 384
    assert width(False, 10.0) == 256
    assert width(True, 1.0) == 256  # rows this heavy per token memorize: no wider


class Precisions(Callbacks):
    def __init__(self):
        self.seen: list[str] = []

    def on_start(self, info) -> None:
        self.seen.append(info["precision"])


def test_a_bf16_run_on_the_cpu_trains_and_resumes_bit_for_bit(corpus, tmp_path):
    job = tiny_job(max_steps=16, evals=2, precision="bf16")
    said = Precisions()
    straight = train(corpus, job, run="straight", root=tmp_path, callbacks=said)
    assert said.seen == ["bf16"]
    vocab = read_run_json(tmp_path / "straight")["model"]["vocab_size"]
    assert straight.val is not None and straight.val.loss < math.log(vocab)  # below a guess
    train(corpus, job, run="split", root=tmp_path, callbacks=StopAt(8))
    resumed = train(corpus, job, run="split", root=tmp_path, resume=True)
    assert resumed.steps == 16 and resumed.val.loss == straight.val.loss
    for name in (LAST, BEST):
        a, b = load_tensors(tmp_path / "straight" / name), load_tensors(tmp_path / "split" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the same run in fp32 ends elsewhere: autocast was on
    fp32 = tiny_job(max_steps=16, evals=2, precision="fp32")
    assert train(corpus, fp32, run="fp32", root=tmp_path).val.loss != straight.val.loss
