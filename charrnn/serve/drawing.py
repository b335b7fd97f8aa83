"""A completion drawn step by step for the server: each token's text and log-probabilities.

The tokens are the library's own (``Sampler.iter_tokens``, the loop ``Model.sample`` runs), so a
seeded request gives exactly ``Model.sample``'s text. Unlike ``SampleStream``, which hands a
terminal one sample after another, the n samples of a request come out together, token by
token: each event names its sample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from torch import Tensor

from charrnn.config import Stop
from charrnn.decoding import IncrementalDecoder, TextWatch
from charrnn.generate import Sample, Sampler
from charrnn.serve.requests import Completion
from charrnn.stopping import StopRule


@dataclass
class TokenEvent:
    """A token one sample drew: the text it settled (a stop string may hold text back), and
    its log-probability with the likeliest alternatives when asked for."""

    index: int
    text: str
    token: str
    logprob: float | None = None
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class EndEvent:
    """A sample's end: the text still held back, why it ended, the whole sample."""

    index: int
    text: str
    finish_reason: str  # "stop" (the rule or a stop string) or "length" (max_tokens)
    sample: Sample


class RecordingSampler(Sampler):
    """A Sampler that keeps the logits of its last step (rule-masked, before any control), so
    that a token's reported log-probability is the model's own, as a sample's is."""

    last: Tensor | None = None

    def feeder(self, stop: StopRule) -> tuple[Callable[[Tensor], Tensor], Callable]:
        logits_of, feed = super().feeder(stop)

        def recorded(h: Tensor) -> Tensor:
            self.last = logits_of(h)  # (b, V)
            return self.last

        return recorded, feed


def draw(sampler: RecordingSampler, req: Completion) -> Iterator[list[TokenEvent | EndEvent]]:
    """The events of each step of a completion, then one EndEvent per sample."""
    config, n = req.config, req.n
    prompt_ids = sampler.encode_prompt(req.prompt)
    decoders = [_decoder(sampler, req, prompt_ids) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    info: dict = {}
    for pairs, alive in sampler.iter_tokens(n, config, prompt_ids, info):
        last = sampler.last
        logp = None if req.logprobs is None or last is None else last.log_softmax(-1)  # (b, V)
        events = []
        for i, t in pairs:
            tokens[i].append(t)
            decoders[i].feed(t)
            event = TokenEvent(i, decoders[i].take(), sampler.tokenizer.piece(t))
            if logp is not None:
                _add_logprobs(event, sampler, logp[alive.index(i)], t, req.logprobs or 0)
            events.append(event)
        yield events
    samples = sampler.finish(prompt_ids, tokens, info, config)
    yield [
        EndEvent(i, d.take(final=True), _finish_reason(s, config.stop), s)
        for i, (d, s) in enumerate(zip(decoders, samples))
    ]


def _decoder(
    sampler: Sampler, req: Completion, prompt_ids: list[int]
) -> IncrementalDecoder | TextWatch:
    c, prefix = req.config, prompt_ids[1:]
    if c.stop_at:
        return TextWatch(sampler.tokenizer, c.stop_at, c.keep_stop, prefix, show_prefix=False)
    return IncrementalDecoder(sampler.tokenizer, prefix, show_prefix=False)


def _add_logprobs(event: TokenEvent, sampler: Sampler, logp: Tensor, token: int, k: int) -> None:
    """The token's log-probability and the k likeliest tokens' (logp: (V,))."""
    event.logprob = float(logp[token])
    if k:
        top = logp.topk(min(k, logp.numel()))
        piece = sampler.tokenizer.piece
        event.top = {piece(int(i)): float(v) for v, i in zip(top.values, top.indices)}


def _finish_reason(s: Sample, stop: Stop) -> str:
    return "length" if s.cut or stop is Stop.none else "stop"
