"""The JSON the server answers with: OpenAI's completion objects, and charrnn's own."""

from __future__ import annotations

import math
from typing import Any

from charrnn.api import Model
from charrnn.decoding import IncrementalDecoder
from charrnn.runs import summarize
from charrnn.score import NextToken, SentenceScore, surprisal_map
from charrnn.serve.drawing import EndEvent, TokenEvent
from charrnn.serve.requests import Completion
from charrnn.tokenizers import Tokenizer


def finite(value: Any) -> Any:
    """JSON has no infinities: a log-probability of -inf (a token the rule never draws) is
    written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value


# -- completions ---------------------------------------------------------------------------


def chunk(meta: dict[str, Any], index: int, text: str, **choice: Any) -> dict[str, Any]:
    """One server-sent event of a streamed completion."""
    choice = {"logprobs": None, "finish_reason": None, **choice}
    return {**meta, "choices": [{"text": text, "index": index, **choice}]}


def token_logprobs(event: TokenEvent, offset: int) -> dict[str, Any]:
    """OpenAI's logprobs object for one token (lists of one)."""
    return {
        "tokens": [event.token],
        "token_logprobs": [event.logprob],
        "top_logprobs": [event.top],
        "text_offset": [offset],
    }


def completion_body(
    meta: dict[str, Any], req: Completion, steps: list[list[TokenEvent | EndEvent]]
) -> dict[str, Any]:
    """A whole completion: each sample's text as ``Model.sample`` gives it, its logprobs when
    asked for, and the token counts."""
    ends: dict[int, EndEvent] = {}
    logprobs: list[dict[str, list[Any]]] = [
        {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for _ in range(req.n)
    ]
    offsets = [len(req.prompt) if req.echo else 0] * req.n
    for events in steps:
        for e in events:
            if isinstance(e, EndEvent):
                ends[e.index] = e
                continue
            for key, value in token_logprobs(e, offsets[e.index]).items():
                logprobs[e.index][key] += value
            offsets[e.index] += len(e.text)
    choices = []
    for i in range(req.n):
        s = ends[i].sample
        text = req.prompt + s.continuation if req.echo else s.continuation
        lp = logprobs[i] if req.logprobs is not None else None
        choices.append(
            {"text": text, "index": i, "logprobs": lp, "finish_reason": ends[i].finish_reason}
        )
    return {**meta, "choices": choices, "usage": usage(list(ends.values()))}


def usage(ends: list[EndEvent]) -> dict[str, int]:
    prompt = len(ends[0].sample.prompt_tokens) if ends else 0
    drawn = sum(len(e.sample.tokens) for e in ends)
    return {"prompt_tokens": prompt, "completion_tokens": drawn, "total_tokens": prompt + drawn}


# -- charrnn's own -------------------------------------------------------------------------


def score_json(tokenizer: Tokenizer, s: SentenceScore, per_token: bool) -> dict[str, Any]:
    """As ``charrnn score --json`` writes a sentence; with ``per_token``, its terms and the
    surprisal of each token's text (the heatmap)."""
    d: dict[str, Any] = {
        "text": s.text,
        "stop": s.stop.value,
        "log_prob": s.log_prob,
        "prob": s.prob,
        "tokens": s.n_tokens,
        "perplexity": s.perplexity,
        "bits_per_char": s.bits_per_char,
        "bits_per_byte": s.bits_per_byte,
        "unknown": s.n_unk,
    }
    if per_token:
        d["terms"] = [
            {"kind": t.kind, "piece": t.piece, "log_prob": t.log_prob, "unk": t.unk}
            for t in s.terms
        ]
        d["heatmap"] = [
            {"kind": c.kind, "text": c.text, "bits": c.bits, "unk": c.unk}
            for c in surprisal_map(tokenizer, s)
        ]
    return d


def next_json(tokenizer: Tokenizer, prompt: str, tokens: list[NextToken]) -> list[dict]:
    """The likeliest next tokens, each with the text it would add to the prompt."""
    decoder = IncrementalDecoder(tokenizer, tokenizer.encode(prompt), show_prefix=False)
    out = []
    for t in tokens:
        d = decoder.copy()
        text = d.push(t.id) + d.take(final=True)
        prob = t.prob
        logprob = math.log(prob) if prob > 0 else None
        out.append({"id": t.id, "token": t.piece, "text": text, "prob": prob, "logprob": logprob})
    return out


def model_json(model: Model, created: int) -> dict[str, Any]:
    """A run as /v1/models lists it: OpenAI's model object, and what charrnn knows of it."""
    summary = summarize(model.folder)
    c = model.config
    rules = ["eos", "halt", "length", "none"] if c.stop_heads else ["eos", "none"]
    return {
        "id": model.name,
        "object": "model",
        "created": created,
        "owned_by": "charrnn",
        "level": model.level,
        "cell": c.cell.value,
        "layers": c.layers,
        "hidden": c.hidden,
        "parameters": model.n_parameters,
        "vocab_size": model.tokenizer.vocab_size,
        "val_loss": summary.val_loss,
        "val_bpc": summary.val_bpc,
        "stop_rules": rules,
    }
