"""Request bodies read into the library's own settings, every mistake a 400 naming its field.

A body is checked field by field against a table of types; the ranges are ``SampleConfig``'s
own checks (the command line's), their messages told with the request's field names. The
server's caps (``Limits``) are checked here too, so a request past them never reaches the model.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from charrnn.config import SampleConfig, Stop
from charrnn.errors import ConfigError


class RequestError(Exception):
    """A request the server refuses: its HTTP status, a message and the field at fault."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`charrnn serve` options of the same names)."""

    prompt_chars: int = 20_000  # characters of a prompt, or of all the texts of a score
    max_tokens: int = 1000  # tokens of one sample; also the default max_tokens
    n: int = 16  # samples of one completion
    body_bytes: int = 1_000_000
    logprobs: int = 20  # alternatives listed per token
    next_k: int = 100  # tokens /v1/next lists


@dataclass(frozen=True)
class Completion:
    prompt: str
    n: int
    config: SampleConfig
    stream: bool = False
    logprobs: int | None = None  # how many alternatives per token; None: no logprobs
    echo: bool = False  # the prompt's text before each sample's
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the counts


@dataclass(frozen=True)
class ScoreRequest:
    texts: list[str]
    stop: Stop
    per_token: bool
    single: bool  # input was one string, not a list


@dataclass(frozen=True)
class NextRequest:
    prompt: str
    k: int
    stop: Stop


# -- reading a body ------------------------------------------------------------------------


def parse_json(body: bytes) -> dict[str, Any]:
    """The body's JSON object."""
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise RequestError(f"the body is not valid JSON ({_first_line(e)})") from None
    if not isinstance(value, dict):
        raise RequestError("the body must be a JSON object")
    return value


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:120]


def _integer(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
        raise RequestError(f"{name} must be an integer", name)
    return int(v)


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise RequestError(f"{name} must be a finite number", name)
    return float(v)


def _boolean(name: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise RequestError(f"{name} must be true or false", name)
    return v


def _string(name: str, v: Any) -> str:
    if not isinstance(v, str):
        raise RequestError(f"{name} must be a string", name)
    return v


def _strings(name: str, v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return (v,)
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise RequestError(f"{name} must be a string or a list of strings", name)
    return tuple(v)


def _biases(name: str, v: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(v, dict):
        raise RequestError(f"{name} must be an object of token: number", name)
    return tuple((k, _number(f"{name}.{k}", x)) for k, x in v.items())


def _object(name: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise RequestError(f"{name} must be an object", name)
    return v


Reader = Callable[[str, Any], Any]

# The request's fields: how each is read, and the SampleConfig field it sets (None: not one).
COMPLETION_FIELDS: dict[str, tuple[Reader, str | None]] = {
    "model": (_string, None),  # one model is served: any name is taken to mean it
    "prompt": (_strings, None),
    "max_tokens": (_integer, "max_tokens"),
    "temperature": (_number, "temperature"),
    "top_p": (_number, "top_p"),
    "n": (_integer, None),
    "stop": (_strings, "stop_at"),
    "seed": (_integer, "seed"),
    "logprobs": (_integer, None),
    "stream": (_boolean, None),
    "stream_options": (_object, None),
    "echo": (_boolean, None),
    "user": (_string, None),
    "stop_rule": (_string, "stop"),
    "length": (_integer, "length"),
    "top_k": (_integer, "top_k"),
    "min_p": (_number, "min_p"),
    "repeat_penalty": (_number, "repeat_penalty"),
    "repeat_window": (_integer, "repeat_window"),
    "presence_penalty": (_number, "presence_penalty"),
    "frequency_penalty": (_number, "frequency_penalty"),
    "no_repeat_ngram": (_integer, "no_repeat_ngram"),
    "keep_stop": (_boolean, "keep_stop"),
    "ban": (_strings, "ban"),
    "bias": (_biases, "bias"),
}
SCORE_FIELDS: dict[str, tuple[Reader, str | None]] = {
    "model": (_string, None),
    "input": (_strings, None),
    "stop_rule": (_string, None),
    "per_token": (_boolean, None),
}
NEXT_FIELDS: dict[str, tuple[Reader, str | None]] = {
    "model": (_string, None),
    "prompt": (_string, None),
    "k": (_integer, None),
    "stop_rule": (_string, None),
}


def read_fields(body: dict[str, Any], table: dict[str, tuple[Reader, str | None]]) -> dict:
    """Each field read by its type (null: left out); an unknown field is refused by name, as a
    misspelt option would be silently ignored otherwise."""
    values = {}
    for name, value in body.items():
        if name not in table:
            raise RequestError(f"unknown field {name!r}; known: {', '.join(table)}", name)
        if value is not None:
            values[name] = table[name][0](name, value)
    return values


# -- the three kinds of request -------------------------------------------------------------


def completion(body: dict[str, Any], limits: Limits) -> Completion:
    values = read_fields(body, COMPLETION_FIELDS)
    prompt = _one_prompt(values.get("prompt", ("",)), limits)
    n = values.get("n", 1)
    if not 1 <= n <= limits.n:
        raise RequestError(f"n must be in [1, {limits.n}]", "n")
    values.setdefault("max_tokens", limits.max_tokens)
    if not 1 <= values["max_tokens"] <= limits.max_tokens:
        raise RequestError(f"max_tokens must be in [1, {limits.max_tokens}]", "max_tokens")
    logprobs = values.get("logprobs")
    if logprobs is not None and not 0 <= logprobs <= limits.logprobs:
        raise RequestError(f"logprobs must be in [0, {limits.logprobs}]", "logprobs")
    options = {COMPLETION_FIELDS[k][1]: v for k, v in values.items() if COMPLETION_FIELDS[k][1]}
    usage = values.get("stream_options", {}).get("include_usage", False)
    return Completion(
        prompt=prompt,
        n=n,
        config=sample_config(options),
        stream=values.get("stream", False),
        logprobs=logprobs,
        echo=values.get("echo", False),
        include_usage=_boolean("stream_options.include_usage", usage),
    )


def _one_prompt(prompts: tuple[str, ...], limits: Limits) -> str:
    if len(prompts) != 1:
        raise RequestError("prompt must be one string (one prompt per request)", "prompt")
    if len(prompts[0]) > limits.prompt_chars:
        raise RequestError(f"prompt is longer than {limits.prompt_chars:,} characters", "prompt")
    return prompts[0]


def score(body: dict[str, Any], limits: Limits) -> ScoreRequest:
    values = read_fields(body, SCORE_FIELDS)
    if "input" not in values:
        raise RequestError("input is required: a sentence or a list of them", "input")
    texts = list(values["input"])
    if not texts or any(not t.strip() for t in texts):
        raise RequestError("input must hold sentences, none of them empty", "input")
    if sum(map(len, texts)) > limits.prompt_chars:
        raise RequestError(f"input is longer than {limits.prompt_chars:,} characters", "input")
    return ScoreRequest(
        texts,
        stop_rule(values.get("stop_rule", "eos")),
        values.get("per_token", False),
        single=isinstance(body["input"], str),
    )


def next_tokens(body: dict[str, Any], limits: Limits) -> NextRequest:
    values = read_fields(body, NEXT_FIELDS)
    prompt = _one_prompt((values.get("prompt", ""),), limits)
    k = values.get("k", 10)
    if not 1 <= k <= limits.next_k:
        raise RequestError(f"k must be in [1, {limits.next_k}]", "k")
    return NextRequest(prompt, k, stop_rule(values.get("stop_rule", "eos")))


def stop_rule(name: str) -> Stop:
    try:
        return Stop(name)
    except ValueError:
        raise RequestError("stop_rule must be eos, halt, length or none", "stop_rule") from None


# -- the library's own checks, told with the request's names --------------------------------

# The command line's option names in the library's messages, and the fields they are here.
FLAGS = {
    "--temp": "temperature",
    "--top-k": "top_k",
    "--top-p": "top_p",
    "--min-p": "min_p",
    "--max-tokens": "max_tokens",
    "--stop": "stop_rule",
    "--length": "length",
    "--repeat-penalty": "repeat_penalty",
    "--repeat-window": "repeat_window",
    "--presence-penalty": "presence_penalty",
    "--frequency-penalty": "frequency_penalty",
    "--no-repeat-ngram": "no_repeat_ngram",
    "--stop-at": "stop",
    "--keep-stop": "keep_stop",
    "--ban": "ban",
    "--bias": "bias",
    "--prompt": "prompt",
    "--next": "k",
}
_FLAG = re.compile(r"--[a-z][a-z-]*")


def as_request_error(e: ConfigError) -> RequestError:
    """A library ConfigError as a 400: its flags renamed to fields, the first one the param."""
    message = str(e)
    flags = [f for f in _FLAG.findall(message) if f in FLAGS]
    renamed = _FLAG.sub(lambda m: FLAGS.get(m.group(0), m.group(0)), message)
    return RequestError(renamed, FLAGS[flags[0]] if flags else None)


def sample_config(options: dict[str, Any]) -> SampleConfig:
    """SampleConfig from its fields; its checks' messages as 400s."""
    try:
        return SampleConfig(**options)
    except ConfigError as e:
        raise as_request_error(e) from None
