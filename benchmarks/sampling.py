"""The sampling controls, measured: the figures docs/sampling.md quotes.

    python -m benchmarks.sampling speed             # priming, beam search, the plain path
    python -m benchmarks.sampling speed --against ../../main    # ... and main's plain path
    python -m benchmarks.sampling quality --run NAME            # a trained char-level run

speed (an untrained LSTM 2x512 on tinyshakespeare's characters; one torch thread):
    priming     tokens/s reading a prompt in one batched forward (prime.read, chunked) and one
                token at a time through the sampler's one-step path; their ratio
    beam        output tokens/s of a 5-beam search for a 200-token text (--stop length
                --length 200) next to sampling the same text, one stream and five
    plain path  one-stream sampling tokens/s with no control set, this tree against the tree
                given by --against, in alternating subprocesses; and with a repeat penalty on

quality (a trained run, measured on its own validation text):
    beam gain   the log-probability of the 40 tokens after each of 100 prompts (--stop length
                --length 40, so every method writes as many tokens and P(tau) is the same):
                beam search (5 beams) against greedy and against sampling at temperature 0.8
    loops       how many samples at temperature 0.5, 0.05 and 0 (--stop none, 600 tokens)
                hold the same 20-character string three times in a row, with and without
                the penalties, and the model's own bits per character of those samples

Figures are best-of-rounds rates and same-run ratios, with the machine named. Results go to
benchmarks/out/sampling-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.machine import Clock, cpu_model, load_average  # noqa: E402
from benchmarks.speed import Shape, _models  # noqa: E402
from charrnn import beam  # noqa: E402
from charrnn.checkpoint import load_run  # noqa: E402
from charrnn.config import SampleConfig, Stop  # noqa: E402
from charrnn.generate import Sampler  # noqa: E402
from charrnn.io import write_json_atomic  # noqa: E402
from charrnn.model.stepper import Stepper  # noqa: E402
from charrnn.prime import read  # noqa: E402
from charrnn.tokenizers import SOS  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
OUT = ROOT / "benchmarks" / "out"
LOOP = re.compile(r"(.{20})\1\1", re.S)  # the same 20 characters three times in a row


def machine() -> str:
    return (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} thread(s), load average {load_average()} at start"
    )


# -- speed --------------------------------------------------------------------------------


@torch.inference_mode()
def priming(model: Any, ids: list[int], step_tokens: int, rounds: int) -> dict[str, Any]:
    """Tokens/s of a prompt read in one batched forward, and one token at a time."""
    batched, stepped = [], []
    step = Stepper(model)
    for _ in range(rounds):
        clock = Clock(torch.device("cpu"))
        read(model, ids)
        batched.append(len(ids) / clock.seconds()[0])
        start = read(model, ids[:1])
        state, tokens = start.state, torch.tensor(ids[1 : step_tokens + 1])
        offsets = torch.arange(1, step_tokens + 1).clamp(max=model.config.max_len)
        lengths = torch.as_tensor(model.unknown_at(offsets.numpy()))
        clock = Clock(torch.device("cpu"))
        for t in range(step_tokens):
            _, state = step(tokens[t : t + 1], state, lengths[t : t + 1])
        stepped.append(step_tokens / clock.seconds()[0])
    return {
        "prompt_tokens": len(ids),
        "batched_tok_s": round(max(batched)),
        "one_at_a_time_tok_s": round(max(stepped)),
        "ratio": round(max(batched) / max(stepped), 1),
        "one_at_a_time_measured_on": step_tokens,
    }


def _rate(fn: Any, tokens: int, rounds: int) -> float:
    best = 0.0
    for _ in range(rounds):
        clock = Clock(torch.device("cpu"))
        fn()
        best = max(best, tokens / clock.seconds()[0])
    return best


def beam_speed(sampler: Sampler, width: int, length: int, rounds: int) -> dict[str, Any]:
    """Output tokens/s of a beam search and of sampling the same text length."""
    c = SampleConfig(stop=Stop.length, length=length, max_tokens=length, seed=0)
    with_beams = SampleConfig(**{**c.__dict__, "beam": width})
    rates = {
        "beam": _rate(lambda: beam.search(sampler, 1, with_beams, "ROMEO:"), length, rounds),
        "sample_1": _rate(lambda: sampler.sample(1, c, "ROMEO:"), length, rounds),
        "sample_n": _rate(lambda: sampler.sample(width, c, "ROMEO:"), width * length, rounds),
    }
    return {
        "beams": width,
        "tokens": length,
        "beam_output_tok_s": round(rates["beam"]),
        "beam_hypothesis_tok_s": round(rates["beam"] * width),
        "sample_1_stream_tok_s": round(rates["sample_1"]),
        f"sample_{width}_streams_tok_s": round(rates["sample_n"]),
        "beam_vs_1_stream": round(rates["beam"] / rates["sample_1"], 3),
        f"beam_hypotheses_vs_{width}_streams": round(rates["beam"] * width / rates["sample_n"], 3),
    }


_PLAIN = """
import json, sys, time, torch
sys.path.insert(0, ".")
torch.set_num_threads(1)
from pathlib import Path
from benchmarks.speed import Shape, _models
from charrnn.config import SampleConfig, Stop
from charrnn.generate import Sampler
model, _, tok = _models(Path(sys.argv[1]), Shape())
s = Sampler(model, tok)
extra = json.loads(sys.argv[2])
c = SampleConfig(temperature=1.0, stop=Stop.none, max_tokens=400, seed=0, **extra)
s.sample(1, SampleConfig(stop=Stop.none, max_tokens=20, seed=0))
best = [0.0, 0.0]
for _ in range(3):
    t, cpu = time.perf_counter(), time.process_time()
    n = len(s.sample(1, c)[0].tokens)
    t, cpu = time.perf_counter() - t, time.process_time() - cpu
    best = [max(best[0], n / t), max(best[1], n / cpu)]
print(*best)
"""


def plain_path(trees: dict[str, Path], alternations: int) -> dict[str, Any]:
    """One-stream tokens/s of each tree's sampler, in subprocesses that take turns."""
    runs: list[tuple[str, Path, dict[str, Any]]] = [(n, p, {}) for n, p in trees.items()]
    runs.append(("this tree, --repeat-penalty 1.3", ROOT, {"repeat_penalty": 1.3}))
    best: dict[str, list[float]] = {name: [0.0, 0.0] for name, _, _ in runs}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    for _ in range(alternations):
        for name, tree, extra in runs:
            out = subprocess.run(
                [sys.executable, "-c", _PLAIN, str(CORPUS), json.dumps(extra)],
                cwd=tree,
                env={**env, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            )
            rates = [float(x) for x in out.stdout.split()[-2:]]
            best[name] = [max(a, b) for a, b in zip(best[name], rates)]
    ours = best["this tree"]
    return {
        name: {
            "tok_s": round(v[0]),
            "tok_per_cpu_s": round(v[1]),
            "ratio_to_this_tree": round(v[0] / ours[0], 3),
            "ratio_to_this_tree_cpu_time": round(v[1] / ours[1], 3),
        }
        for name, v in best.items()
    }


def speed(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    model, _, tok = _models(CORPUS, Shape())
    text = CORPUS.read_text(encoding="utf-8")
    ids = [SOS, *tok.encode(text)][: args.prompt_tokens]
    result: dict[str, Any] = {"shape": "lstm 2x512, embed 128, char level, untrained"}
    parts = set(args.parts.split(","))
    sampler = Sampler(model, tok)
    if "priming" in parts:
        print("... priming", file=sys.stderr, flush=True)
        result["priming"] = priming(model, ids, args.step_tokens, args.rounds)
        t0 = time.perf_counter()
        sampler.sample(1, SampleConfig(stop=Stop.none, max_tokens=1, seed=0), text[: len(ids)])
        result["priming"]["sample_after_the_prompt_s"] = round(time.perf_counter() - t0, 2)
    if "beam" in parts:
        print("... beam search", file=sys.stderr, flush=True)
        result["beam"] = beam_speed(sampler, 5, 200, args.rounds)
    if "plain" in parts:
        trees = {"this tree": ROOT}
        if args.against:
            trees["--against " + str(args.against)] = args.against.resolve()
        print("... the plain path", file=sys.stderr, flush=True)
        result["plain_path"] = plain_path(trees, args.alternations)
    return result


# -- quality ------------------------------------------------------------------------------


def prompts(text: str, n: int, chars: int) -> list[str]:
    """n prompts spread over the validation text: the first ``chars`` characters of a
    paragraph."""
    paragraphs = [p for p in text.split("\n\n") if len(p) > chars + 40]
    step = max(1, len(paragraphs) // n)
    return [p[:chars] for p in paragraphs[::step][:n]]


def validation_text(run: Any) -> str:
    """The tail of the corpus that validated the run (its last val_fraction)."""
    text = CORPUS.read_text(encoding="utf-8")
    return text[int(len(text) * (1 - run.info["train"]["val_fraction"])) :]


def beam_gain(sampler: Sampler, texts: list[str], length: int, width: int) -> dict[str, Any]:
    """Mean log P of the ``length`` tokens after each prompt: beam, greedy, sampling at 0.8."""
    base = SampleConfig(stop=Stop.length, length=length, max_tokens=length, seed=1)
    got: dict[str, list[float]] = {"beam": [], "greedy": [], "sample_0.8": []}
    for prompt in texts:
        got["beam"].append(
            beam.search(sampler, 1, SampleConfig(**{**base.__dict__, "beam": width}), prompt)[
                0
            ].log_prob
        )
        greedy = SampleConfig(**{**base.__dict__, "temperature": 0})
        got["greedy"].append(sampler.sample(1, greedy, prompt)[0].log_prob)
        warm = SampleConfig(**{**base.__dict__, "temperature": 0.8})
        got["sample_0.8"].append(sampler.sample(1, warm, prompt)[0].log_prob)
    mean = {k: statistics.fmean(v) for k, v in got.items()}
    wins = sum(b >= g - 1e-9 for b, g in zip(got["beam"], got["greedy"]))
    return {
        "prompts": len(texts),
        "tokens": length,
        "beams": width,
        "mean_log_prob": {k: round(v, 2) for k, v in mean.items()},
        "gain_over_greedy_nats": round(mean["beam"] - mean["greedy"], 2),
        "gain_over_sample_0.8_nats": round(mean["beam"] - mean["sample_0.8"], 2),
        "beam_at_least_greedy": f"{wins}/{len(texts)}",
    }


SETTINGS: dict[str, dict[str, Any]] = {
    "none": {},
    "repeat 1.1": {"repeat_penalty": 1.1},
    "repeat 1.3": {"repeat_penalty": 1.3},
    "presence 0.5": {"presence_penalty": 0.5},
    "frequency 0.3": {"frequency_penalty": 0.3},
    "no-repeat-ngram 12": {"no_repeat_ngram": 12},
}


def loops(
    sampler: Sampler, texts: list[str], per_prompt: int, tokens: int, temperature: float
) -> dict[str, Any]:
    """The share of samples that loop, per setting, and their bits/char (the model's own
    log-probability, whatever the setting did)."""
    out: dict[str, Any] = {}
    per_prompt = per_prompt if temperature > 0 else 1  # greedy: one text per prompt
    for name, extra in SETTINGS.items():
        c = SampleConfig(
            temperature=temperature, stop=Stop.none, max_tokens=tokens, seed=7, **extra
        )
        looping, nats, chars, example = 0, 0.0, 0, None
        for prompt in texts:
            for s in sampler.sample(per_prompt, c, prompt):
                looping += LOOP.search(s.continuation) is not None
                nats -= s.log_prob
                chars += len(s.continuation)
                if example is None:
                    example = s.continuation[:200]
        n = len(texts) * per_prompt
        out[name] = {
            "looping": f"{looping}/{n}",
            "share": round(looping / n, 3),
            "bits_per_char": round(nats / chars / 0.6931471805599453, 3),
            "example": example,
        }
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    run = load_run(args.run, args.checkpoints)
    sampler = Sampler(run.model, run.tokenizer)
    texts = prompts(validation_text(run), args.prompts, args.prompt_chars)
    print("... beam gain", file=sys.stderr, flush=True)
    gain = beam_gain(sampler, texts, 40, 5)
    print("... loops", file=sys.stderr, flush=True)
    return {
        "run": str(run.folder),
        "prompt_example": texts[0],
        "beam_gain": gain,
        "loops": {
            f"temperature {t}": loops(sampler, texts, args.per_prompt, args.loop_tokens, t)
            for t in (0.5, 0.05, 0.0)
        },
    }


# -- main ---------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["speed", "quality"])
    p.add_argument("--parts", default="priming,beam,plain", help="speed: which figures")
    p.add_argument("--against", type=Path, help="speed: another checkout to compare with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--alternations", type=int, default=4, help="speed: turns of each tree")
    p.add_argument("--prompt-tokens", type=int, default=100_000, help="speed: batched")
    p.add_argument("--step-tokens", type=int, default=5_000, help="speed: one at a time")
    p.add_argument("--run", help="quality: the run to measure")
    p.add_argument("--checkpoints", type=Path, default=Path("checkpoints"))
    p.add_argument("--prompts", type=int, default=100)
    p.add_argument("--prompt-chars", type=int, default=30)
    p.add_argument("--per-prompt", type=int, default=2, help="quality: loop samples per prompt")
    p.add_argument("--loop-tokens", type=int, default=600)
    args = p.parse_args()
    if args.what == "quality" and not args.run:
        sys.exit(
            "quality needs --run: train one first, e.g. python -m charrnn train "
            "../shared/corpora/tinyshakespeare.txt --level char --time-budget 10m --run ts"
        )
    header = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    result = {**header, **(speed(args) if args.what == "speed" else quality(args))}
    print(json.dumps(result, indent=2, ensure_ascii=False))
    OUT.mkdir(parents=True, exist_ok=True)
    write_json_atomic(OUT / f"sampling-{args.what}.json", result)


if __name__ == "__main__":
    main()
