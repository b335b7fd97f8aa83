"""Sampling: temperature, top-k / top-p / min-p, penalties, bans, stop strings, under one of the
stopping rules (``stopping``). What the controls do to the logits is ``controls``'.

Several samples are drawn side by side as one batch. Each sample's log-probability is the
model's own (temperature 1, no truncation, no penalty) under the chosen rule, so it equals what
``score`` gives for the same tokens; a sample a stop string or --max-tokens ended has the
log-probability of the tokens it drew.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from charrnn import controls
from charrnn.blocks import BlockSampler, plain
from charrnn.config import SampleConfig, Stop
from charrnn.controls import Controls, draw, filter_logits
from charrnn.decoding import TextWatch
from charrnn.errors import ConfigError
from charrnn.model import RNNLM, State
from charrnn.model.stepper import Stepper
from charrnn.prime import Primed, read
from charrnn.stopping import RULES, LengthIds, Rows, StopRule, Totals
from charrnn.tokenizers import SOS, UNK, Tokenizer

__all__ = ["Sample", "Sampler", "draw", "filter_logits"]

Feed = Callable[[Tensor, State, "Tensor | None"], tuple[Tensor, State]]
Step = tuple[list[tuple[int, int]], list[int]]  # (sample, token) pairs drawn; samples drawing


@dataclass
class Sample:
    tokens: list[int]  # drawn tokens (the prompt excluded; <eos> kept in "none" mode)
    text: str  # prompt + generated text (up to a stop string, when one ended it)
    log_prob: float  # log P of the drawn tokens under the model and the stopping rule
    cut: bool  # stopped by --max-tokens rather than by the rule
    length: int | None = None  # length mode: the tau that was drawn
    unk_in_prompt: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    stop_string: str | None = None  # the --stop-at string that ended it
    prompt_chars: int = 0  # text[:prompt_chars] is the prompt's

    @property
    def continuation(self) -> str:
        """The text after the prompt."""
        return self.text[self.prompt_chars :]


def generator(seed: int | None) -> torch.Generator:
    """The random numbers of one sampling call (a fresh seed when none is given)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
    return gen


class Sampler:
    """Draws samples from a model; one instance per (model, tokenizer).

    ``fast`` (the default) feeds tokens through ``Stepper``, the one-step path; False feeds
    them through ``model.features``, the straightforward path. ``blocks`` draws the plain
    settings in blocks on the device (``charrnn.blocks``; None: on CUDA only). All give the
    same tokens.
    """

    def __init__(
        self, model: RNNLM, tokenizer: Tokenizer, fast: bool = True, blocks: bool | None = None
    ):
        self.model, self.tokenizer, self.fast = model, tokenizer, fast
        self.device = next(model.parameters()).device
        self.blocks = self.device.type == "cuda" if blocks is None else blocks

    def encode_prompt(self, prompt: str) -> list[int]:
        """<sos> and the prompt's tokens; a prompt of unknown symbols only is refused (the
        model would read nothing of it)."""
        ids = self.tokenizer.encode(prompt, "--prompt") if prompt else []
        if ids and all(t == UNK for t in ids):
            raise ConfigError("--prompt has only symbols this model does not know")
        return [SOS, *ids]

    def check(self, config: SampleConfig) -> None:
        """Refuse settings that only this model makes wrong."""
        RULES[config.stop].check(self.model)
        if config.top_k is not None and config.top_k > self.tokenizer.vocab_size:
            raise ConfigError(
                f"--top-k {config.top_k} is larger than the vocabulary "
                f"({self.tokenizer.vocab_size} symbols)"
            )
        controls.check(
            config, self.tokenizer, RULES[config.stop].mask(self.model.config.vocab_size)
        )

    @torch.no_grad()
    def sample(self, n: int, config: SampleConfig, prompt: str = "") -> list[Sample]:
        """``n`` samples, drawn side by side."""
        self.check(config)
        ids = self.encode_prompt(prompt)
        results: list[list[int]] = [[] for _ in range(n)]
        info: dict[str, np.ndarray] = {}
        for pairs, _ in self.iter_tokens(n, config, ids, info):
            for i, t in pairs:
                results[i].append(t)
        return self.finish(ids, results, info, config)

    def finish(
        self,
        prompt_ids: list[int],
        results: list[list[int]],
        info: dict[str, np.ndarray],
        config: SampleConfig,
    ) -> list[Sample]:
        """Samples from the tokens ``iter_tokens`` drew and the ``info`` it filled."""
        prompt_chars = len(self.tokenizer.decode(prompt_ids[1:]).rstrip("\ufffd"))
        ends = info.get("text_end")
        out = []
        for i, toks in enumerate(results):
            text = self.tokenizer.decode(prompt_ids[1:] + toks)
            stop_string = None
            if ends is not None and ends[i] >= 0:
                text, stop_string = text[: prompt_chars + ends[i]], info["stop_string"][i]
            out.append(
                Sample(
                    tokens=toks,
                    text=text,
                    log_prob=float(info["log_prob"][i]),
                    cut=bool(info["cut"][i]),
                    length=int(info["length"][i]) if config.stop is Stop.length else None,
                    unk_in_prompt=prompt_ids.count(UNK),
                    prompt_tokens=prompt_ids[1:],
                    stop_string=stop_string,
                    prompt_chars=prompt_chars,
                )
            )
        return out

    @torch.inference_mode()
    def iter_tokens(
        self,
        n: int,
        config: SampleConfig,
        prompt_ids: list[int],
        info: dict[str, np.ndarray],
        start: Primed | None = None,
        gen: torch.Generator | None = None,
    ) -> Iterator[Step]:
        """Yield, at each step, the (sample index, token) pairs drawn and the samples still
        drawing; fills ``info`` with per-sample log_prob, cut and length (length rule), and
        where a stop string ended the text, when done.

        ``start`` is where the net stands (default: after reading ``prompt_ids``, which the
        controls and stop strings take as the text so far); ``gen`` the random numbers.
        A sample that has ended leaves the batch, so a batch costs the sum of its samples'
        lengths rather than n times the longest one. The rule (``stopping``) decides when.
        """
        model, stop = self.model, RULES[config.stop]
        gen = gen or generator(config.seed)
        if self.fast and self.blocks and plain(config, model):
            yield from BlockSampler(model).iter_tokens(n, config, prompt_ids, info, gen, start)
            return
        logits_of, feed = self.feeder(stop)
        lengths = LengthIds(model) if model.config.stop_heads else None
        start = start or read(model, prompt_ids, n)  # the prompt in one batched forward
        rows = Rows.start(start.h, start.state, start.offset, config.max_tokens)
        totals = Totals.zeros(n)
        shaping = Controls.make(config, self.tokenizer, model.config.vocab_size, n, prompt_ids)
        watch = _StopWatch(self.tokenizer, n, config, prompt_ids) if config.stop_at else None
        stop.begin(model, rows, totals, config, gen)
        steps = 0  # no sample has drawn more tokens than this
        while len(rows):
            if steps >= config.max_tokens and not _cut_spent(rows, totals):
                break
            logits = logits_of(rows.h)  # (b, V), rule-masked
            shaped = logits if shaping is None else shaping.apply(logits, rows.sample)
            tok = draw(shaped, config, gen)  # (b,)
            lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)  # (b,)
            alive = rows.sample.tolist()
            rows.tok, lp, drew = stop.drawn(rows, tok, lp)
            pairs = _spend(rows, drew, alive)
            yield pairs, alive
            if shaping is not None:
                shaping.push(*_drawn(rows, drew))
            steps += 1
            totals.add(rows.sample, lp)
            stop.after_draw(rows)
            if watch is not None:
                watch.end_rows(rows, pairs)
            if not len(rows):
                break
            ids = None if lengths is None else stop.length_ids(lengths, rows)
            rows.h, rows.state = feed(rows.tok, rows.state, ids)
            rows.offset = rows.offset + 1
            stop.after_read(model, rows, totals, config, gen)
        info["log_prob"], info["cut"] = totals.log_prob.numpy(), totals.cut.numpy()
        info["length"] = totals.length.numpy()
        if watch is not None:
            info["text_end"], info["stop_string"] = watch.ends()

    def feeder(self, stop: StopRule) -> tuple[Callable[[Tensor], Tensor], Feed]:
        """``logits(h (b, H)) -> (b, V)``, the token logits under the rule's mask (float32, on
        the host), and ``feed(tokens (b,), state, length input ids (b,) or None) -> (h (b, H),
        state)``: the one-step path when it applies, else the model's."""
        model, dev = self.model, self.device
        mask = stop.mask(model.config.vocab_size)  # (V,)
        if not (self.fast and Stepper.usable(model)):

            def feed(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
                r = None if ids is None else ids.to(dev)[:, None]  # (b, 1)
                h, state = model.features(tok.to(dev)[:, None], state, r)
                return h[:, 0], state  # (b, H)

            return lambda h: model.token_logits(h).cpu().float() + mask, feed
        step = Stepper(model, mask.to(dev))

        def feed_step(tok: Tensor, state: State, ids: Tensor | None) -> tuple[Tensor, State]:
            return step(tok.to(dev), state, None if ids is None else ids.to(dev))

        return lambda h: step.token_logits(h).float().cpu(), feed_step


def _spend(rows: Rows, drew: Tensor | None, alive: list[int]) -> list[tuple[int, int]]:
    """Count the tokens just drawn against each row's budget (``drew``: the rows that drew
    one, None for all); the (sample, token) pairs they are."""
    if drew is None:
        rows.left = rows.left - 1
        return list(zip(alive, rows.tok.tolist()))
    rows.left = rows.left - drew.long()
    return list(zip(rows.sample[drew].tolist(), rows.tok[drew].tolist()))


def _cut_spent(rows: Rows, totals: Totals) -> bool:
    """Mark as cut the samples that drew all --max-tokens allows and drop them (in halt mode
    the halting unit may let a unit go on); whether any row is left."""
    spent = rows.left <= 0
    if bool(spent.any()):
        totals.cut[rows.sample[spent]] = True
        rows.keep(~spent)
    return len(rows) > 0


def _drawn(rows: Rows, drew: Tensor | None) -> tuple[Tensor, Tensor]:
    """The samples that drew at this step and their tokens."""
    return (rows.sample, rows.tok) if drew is None else (rows.sample[drew], rows.tok[drew])


class _StopWatch:
    """Each sample's text, watched for the stop strings: a sample whose text holds one ends."""

    def __init__(self, tokenizer: Tokenizer, n: int, config: SampleConfig, prompt_ids: list[int]):
        prompt = prompt_ids[1:]
        self.texts = [
            TextWatch(tokenizer, config.stop_at, config.keep_stop, prompt, show_prefix=False)
            for _ in range(n)
        ]

    def end_rows(self, rows: Rows, pairs: list[tuple[int, int]]) -> None:
        """Read the tokens just drawn; drop the rows whose text now holds a stop string."""
        for i, t in pairs:
            self.texts[i].feed(t)
        samples = rows.sample.tolist()
        for i in samples:
            self.texts[i].take()
        ended = torch.tensor([self.texts[i].hit is not None for i in samples], dtype=torch.bool)
        if bool(ended.any()):
            rows.keep(~ended)

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Where each sample's text ends after the prompt (-1: no stop string), and which."""
        end = np.array([-1 if w.end is None else w.end for w in self.texts], dtype=np.int64)
        hit = np.array([w.hit for w in self.texts], dtype=object)
        return end, hit
