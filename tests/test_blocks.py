"""The block path (``charrnn.blocks``) draws what the per-token path draws: same seed, same
tokens, step by step, under every rule and the plain controls; and the generator moves on
alike. The CPU is the device here; on CUDA the same test runs on the GPU's rounding."""

import json

import numpy as np
import pytest
import torch

from benchmarks import gpu
from charrnn import blocks
from charrnn.blocks import BlockSampler, Words, plain
from charrnn.config import Cell, Nonlinearity, SampleConfig, Stop
from charrnn.generate import Sampler, generator
from charrnn.tokenizers import SOS
from tests.test_fast_paths import random_model

SETTINGS = [
    {},
    {"temperature": 0.8, "top_k": 5},
    {"temperature": 1.3, "top_p": 0.7},
    {"temperature": 0},
    {"min_p": 0.1},
]


def both(model, n: int, config: SampleConfig, block: int, seed: int):
    """Each path's steps, info and generator after drawing n samples from one seed."""
    out = []
    for in_blocks in (False, True):
        gen, info = generator(seed), {}
        if in_blocks:
            steps = BlockSampler(model, block).iter_tokens(n, config, [SOS], info, gen)
        else:
            steps = Sampler(model, None, blocks=False).iter_tokens(n, config, [SOS], info, gen=gen)
        out.append((list(steps), info, gen))
    return out


@pytest.mark.parametrize("stop", list(Stop))
@pytest.mark.parametrize("settings", SETTINGS)
def test_blocks_draw_the_tokens_of_the_per_token_path(stop, settings):
    model = random_model(Cell.lstm, Nonlinearity.tanh, stop_heads=True)
    config = SampleConfig(stop=stop, max_tokens=45, seed=7, **settings)
    assert plain(config, model)
    for n, block in ((1, 3), (5, 4)):
        (ref, ref_info, g_ref), (got, info, g_blk) = both(model, n, config, block, seed=7)
        assert got == ref  # each step's (sample, token) pairs and the samples drawing
        assert ref  # (and several blocks where the samples run long: the none rule's 45)
        np.testing.assert_array_equal(info["cut"], ref_info["cut"])
        np.testing.assert_array_equal(info["length"], ref_info["length"])
        # a batch of another size rounds the float32 logits apart in the last bit
        np.testing.assert_allclose(info["log_prob"], ref_info["log_prob"], rtol=1e-6)
        assert torch.equal(torch.rand(4, generator=g_blk), torch.rand(4, generator=g_ref))


@pytest.mark.parametrize("cell", [Cell.gru, Cell.rnn])
def test_blocks_take_every_cell(cell):
    model = random_model(cell, Nonlinearity.tanh)
    config = SampleConfig(stop=Stop.eos, max_tokens=30, seed=3, temperature=1.2)
    (ref, _, _), (got, _, _) = both(model, 4, config, 16, seed=3)
    assert got == ref and ref


def test_a_large_vocabulary_draws_shorter_blocks_alike(monkeypatch):
    monkeypatch.setattr(blocks, "WORDS", 200)  # 5 rows x 25 words a step: blocks of 1 token
    model = random_model(Cell.lstm, Nonlinearity.tanh, stop_heads=True)
    config = SampleConfig(stop=Stop.halt, max_tokens=30, seed=5, temperature=1.1)
    (ref, _, g_ref), (got, _, g_blk) = both(model, 5, config, 16, seed=5)
    assert got == ref and len(ref) > 1
    assert torch.equal(torch.rand(4, generator=g_blk), torch.rand(4, generator=g_ref))


def test_words_are_the_numbers_torch_rand_draws():
    g, ref = generator(11), generator(11)
    words = Words(g, 2000, torch.device("cpu"))
    alive = torch.tensor([True, False, True])
    u32 = words.uniform32(alive, 7)  # two live rows: 14 float32 numbers
    u64 = words.uniform64(alive)  # then two float64 numbers
    assert torch.equal(u32[[0, 2]], torch.rand((2, 7), generator=ref))
    assert torch.equal(u64[[0, 2]], torch.rand(2, dtype=torch.float64, generator=ref))
    used = int(words.pos)
    assert used == 14 + 4
    words.refill(used)
    assert torch.equal(words.uniform32(alive[:1], 3)[0], torch.rand(3, generator=ref))
    words.close(int(words.pos))
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=ref))


def test_plain_leaves_text_controls_to_the_per_token_path():
    model = random_model(Cell.lstm, Nonlinearity.tanh)
    assert plain(SampleConfig(top_k=3, temperature=0.7), model)
    assert not plain(SampleConfig(repeat_penalty=1.3), model)
    assert not plain(SampleConfig(stop_at=("\n",)), model)
    assert not plain(SampleConfig(), model.train())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("stop", list(Stop))
def test_a_captured_block_draws_what_the_eager_one_draws(stop):
    model = random_model(Cell.lstm, Nonlinearity.tanh, stop_heads=True).cuda()
    config = SampleConfig(stop=stop, max_tokens=45, seed=7, temperature=0.9, top_p=0.9)
    runs = []
    for graph in (False, True):
        info: dict[str, np.ndarray] = {}
        gen = generator(7)
        steps = list(BlockSampler(model, 8, graph).iter_tokens(6, config, [SOS], info, gen))
        runs.append((steps, info["log_prob"].tolist(), torch.rand(3, generator=gen)))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][2], runs[1][2])


def test_the_gpu_script_runs_its_table_small(tmp_path):
    gpu.main(["--smoke", "--out", str(tmp_path), "--device", "cpu"])
    (path,) = tmp_path.glob("gpu-*.json")
    report = json.loads(path.read_text(encoding="utf-8"))
    figures = [f["figure"] for f in report["figures"]]
    assert len(figures) == 5 and figures[0].startswith("train lstm")
    assert all(min(f["best"].values()) > 0 for f in report["figures"])
    same = [n for n in report["notes"] if "draws the per-token tokens" in n]
    assert len(same) == 4 and all(n.endswith("True") for n in same)
