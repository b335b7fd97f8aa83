"""Muon on the recurrent matrices, AdamW on the rest (training/muon.py)."""

import math

import pytest
import torch

from charrnn.checkpoint import LAST, load_tensors, read_run_json
from charrnn.config import Optimizer
from charrnn.training.muon import RMS_MATCH, MuonAdamW, orthogonalize
from charrnn.training.run import train
from tests.conftest import tiny_job
from tests.test_train import Recorder


@pytest.mark.parametrize("shape", [(96, 24), (24, 96), (32, 32)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_orthogonalizing_moves_every_singular_value_near_one(shape, dtype):
    torch.manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k))
    g = u @ torch.diag(torch.logspace(-2, 0, k)) @ v.T  # singular values 100 times apart
    out = orthogonalize(g, dtype=dtype)
    assert out.shape == g.shape and out.dtype == g.dtype
    s = torch.linalg.svdvals(out)
    assert s.min() > 0.5 and s.max() < 1.3, s


def _pair(fused: bool = False):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(48, 12)), torch.nn.Parameter(torch.randn(12))]
    return params, MuonAdamW(params, params[:1], lr=1e-2, fused=fused)


@pytest.mark.parametrize("fused", [False, True])
def test_the_other_parameters_take_adamws_step(fused):
    params, opt = _pair(fused)
    twin = torch.nn.Parameter(params[1].detach().clone())
    ref = torch.optim.AdamW([twin], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, fused=fused)
    for group in opt.param_groups:
        group["weight_decay"] = 0.1
    for step in range(5):
        torch.manual_seed(step)
        grad = torch.randn(12)
        params[1].grad, twin.grad = grad.clone(), grad.clone()
        params[0].grad = torch.randn(48, 12)
        opt.step()
        ref.step()
    torch.testing.assert_close(params[1], twin, rtol=0, atol=1e-6)


def test_a_matrix_moves_alike_in_every_direction_at_adamws_rms():
    params, opt = _pair()
    before = params[0].detach().clone()
    params[0].grad = torch.randn(48, 12) * torch.logspace(-2, 0, 12)
    opt.step()
    moved = torch.linalg.svdvals(params[0].detach() - before)
    # the first step's update is the gradient orthogonalized (g + 0.95 of its momentum, g)
    scale = 1e-2 * RMS_MATCH * math.sqrt(48)
    assert moved.min() > 0.5 * scale and moved.max() < 1.3 * scale, moved / scale
    assert set(opt.state[params[0]]) == {"momentum"}
    assert set(opt.state[params[1]]) == set()  # no gradient, no state


def test_a_muon_run_records_its_optimizer_and_resumes_as_an_unbroken_one(corpus, tmp_path):
    job = tiny_job(max_steps=20, evals=4, optimizer=Optimizer.muon)
    train(corpus, job, run="straight", root=tmp_path)
    train(corpus, job, run="split", root=tmp_path, callbacks=Recorder(stop_at=10))
    train(corpus, job, run="split", root=tmp_path, resume=True)
    assert read_run_json(tmp_path / "split")["train"]["optimizer"] == "muon"
    moments = load_tensors(tmp_path / "split" / LAST, "optim.")
    assert any(k.endswith(".momentum") for k in moments)
    assert any(k.endswith(".exp_avg") for k in moments)
    want, got = (load_tensors(tmp_path / r / LAST, "model.") for r in ("straight", "split"))
    assert want.keys() == got.keys()
    assert all(torch.equal(want[n], got[n]) for n in want)


def test_the_option_reaches_the_run_and_a_bad_one_is_one_line(corpus, tmp_path):
    from tests.test_cli import TINY, run

    ck = tmp_path / "ck"
    given = ("--max-steps", "3", "--optimizer", "muon", "--name", "r", "--checkpoints", ck)
    r = run("train", corpus, *TINY, *given)
    assert r.exit_code == 0, r.output
    assert read_run_json(ck / "r")["train"]["optimizer"] == "muon"
    bad = run("train", corpus, *TINY, "--optimizer", "sgd", "--checkpoints", ck)
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "--optimizer" in bad.output
