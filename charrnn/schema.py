"""What a value from outside must be, and the files of runs and datasets read in bounded memory.

One description of each value checks it as an option (the command line and the Python API
alike) and as a field read back from a file, so both are refused in the same words:

    --hidden must be at most 16,384
    ck/verses/run.json: model.hidden must be at most 16,384

A kind (``Whole``, ``Real``, ``Flag``, ``Text``, ``Choice``, ``OneOf``, ``Maybe``, ``Items``,
``Table``, ``Nested``) says what a value must be. ``check`` holds a frozen config to its
``SPEC``; ``build`` makes a config from a JSON object read from a file; ``Doc`` reads the
other fields of such an object; ``read_bytes``, ``read_json`` and ``json_lines`` read a file,
refusing what is not a regular file or is larger than a cap.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from charrnn.errors import CharRNNError, ConfigError, first_line

MiB = 1 << 20
JSON_CAP = 64 * MiB  # run.json, stopfit.json, dataset.json, the metadata of weights
Error = Callable[[str], CharRNNError]


def shown(value: Any, limit: int = 40) -> str:
    """A value as a message quotes it: JSON's words for JSON's values, cut short."""
    if isinstance(value, (dict, list)):
        return "a JSON object" if isinstance(value, dict) else "a JSON list"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    try:
        text = repr(value) if not isinstance(value, int) else str(value)
    except ValueError:  # an integer of more digits than Python prints
        return "a number too large to print"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


class Kind:
    """What a value must be: ``problem`` says what is wrong with one (None: nothing), and
    ``convert`` gives the value as the config holds it."""

    def problem(self, value: Any) -> str | None:
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class Whole(Kind):
    lo: int | None = None
    hi: int | None = None

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            return f"must be a whole number{self._range()}, not {shown(value)}"
        if self.lo is not None and value < self.lo:
            return f"must be at least {self.lo:,}"
        if self.hi is not None and value > self.hi:
            return f"must be at most {self.hi:,}"
        return None

    def _range(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f" from {self.lo:,} to {self.hi:,}"
        return f" >= {self.lo:,}" if self.lo is not None else ""

    def convert(self, value: Any) -> int:
        return int(value)


@dataclass(frozen=True)
class Real(Kind):
    """A number in [lo, hi] (an open end where said); finite unless ``finite`` is False."""

    lo: float | None = None
    hi: float | None = None
    open_lo: bool = False
    open_hi: bool = False
    finite: bool = True

    def problem(self, value: Any) -> str | None:
        try:
            x = float(value) if _number(value) else math.nan
        except OverflowError:  # an integer beyond any float
            x = math.inf
        if math.isnan(x) or (self.finite and math.isinf(x)):
            return f"must be {self.words()}, not {shown(value)}"
        low = self.lo is not None and (x <= self.lo if self.open_lo else x < self.lo)
        high = self.hi is not None and (x >= self.hi if self.open_hi else x > self.hi)
        return f"must be {self.words()}" if low or high else None

    def words(self) -> str:
        finite = "a finite number" if self.finite else "a number"
        if self.lo is not None and self.hi is not None:
            left, right = "(["[not self.open_lo], ")]"[not self.open_hi]
            return f"a number in {left}{self.lo:g}, {self.hi:g}{right}"
        if self.lo == 0 and self.open_lo:
            return f"a positive {finite.removeprefix('a ')}"
        if self.lo is not None:
            return f"{finite} {'>' if self.open_lo else '>='} {self.lo:g}"
        if self.hi is not None:
            return f"{finite} {'<' if self.open_hi else '<='} {self.hi:g}"
        return finite

    def convert(self, value: Any) -> float:
        return float(value)


@dataclass(frozen=True)
class Flag(Kind):
    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, bool) else f"must be true or false, not {shown(value)}"


@dataclass(frozen=True)
class Text(Kind):
    def problem(self, value: Any) -> str | None:
        return None if isinstance(value, str) else f"must be text, not {shown(value)}"


@dataclass(frozen=True)
class Choice(Kind):
    """A member of an enum, or its value (as JSON and the Python API give it)."""

    enum: type[Enum]
    but: tuple[str, ...] = ()  # values the field may not take

    def problem(self, value: Any) -> str | None:
        allowed = [m.value for m in self.enum if m.value not in self.but]
        got = value.value if isinstance(value, self.enum) else value
        if isinstance(got, str) and got in allowed:
            return None
        *most, last = allowed
        return f"must be {', '.join(most)} or {last}, not {shown(got)}"

    def convert(self, value: Any) -> Enum:
        return self.enum(value)


@dataclass(frozen=True)
class OneOf(Kind):
    """One of a few words."""

    words: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        if isinstance(value, str) and value in self.words:
            return None
        *most, last = self.words
        return f"must be {', '.join(most)} or {last}, not {shown(value)}"


@dataclass(frozen=True)
class Maybe(Kind):
    """None, or a value of ``kind``."""

    kind: Kind

    def problem(self, value: Any) -> str | None:
        return None if value is None else self.kind.problem(value)

    def convert(self, value: Any) -> Any:
        return None if value is None else self.kind.convert(value)


@dataclass(frozen=True)
class Items(Kind):
    """A JSON list whose items are each of ``kind``."""

    kind: Kind

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, list):
            return f"must be a JSON list, not {shown(value)}"
        for i, item in enumerate(value):
            problem = self.kind.problem(item)
            if problem is not None:
                return f"item {i} {problem}"
        return None

    def convert(self, value: Any) -> list[Any]:
        return [self.kind.convert(v) for v in value]


@dataclass(frozen=True)
class Table(Kind):
    """A JSON object from names of ``keys`` to values of ``kind``."""

    keys: Kind
    kind: Kind

    def problem(self, value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a JSON object, not {shown(value)}"
        for k, v in value.items():
            problem = self.keys.problem(k)
            if problem is not None:
                return f"has a key that {problem}"
            problem = self.kind.problem(v)
            if problem is not None:
                return f"{shown(k)} {problem}"
        return None

    def convert(self, value: Any) -> dict[Any, Any]:
        return {self.keys.convert(k): self.kind.convert(v) for k, v in value.items()}


@dataclass(frozen=True)
class Nested(Kind):
    """A config within a config (given as itself, or as the JSON object of its fields)."""

    cls: type

    def problem(self, value: Any) -> str | None:
        if isinstance(value, (self.cls, dict)):
            return None
        return f"must be a JSON object, not {shown(value)}"

    def convert(self, value: Any) -> Any:
        return make(self.cls, value) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Strings(Kind):
    """One string or a list of them, held as a tuple (a lone string is one item, not its
    characters)."""

    def problem(self, value: Any) -> str | None:
        items = (value,) if isinstance(value, str) else value
        if isinstance(items, (list, tuple)) and all(isinstance(s, str) for s in items):
            return None
        return f"takes strings, not {shown(value)}"

    def convert(self, value: Any) -> tuple[str, ...]:
        return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True)
class Biases(Kind):
    """``{token: value}``, "TOKEN=VALUE" strings or (token, value) pairs, held as pairs of a
    token and a finite number."""

    def problem(self, value: Any) -> str | None:
        pairs = self._pairs(value)
        return pairs if isinstance(pairs, str) else None

    def convert(self, value: Any) -> tuple[tuple[str, float], ...]:
        pairs = self._pairs(value)
        assert not isinstance(pairs, str), pairs
        return pairs

    @staticmethod
    def _pairs(value: Any) -> tuple[tuple[str, float], ...] | str:
        """The pairs, or what is wrong with ``value``."""
        if isinstance(value, dict):
            items = list(value.items())
        elif isinstance(value, (str, list, tuple)):
            items = list(Strings().convert(value))  # a lone string is one item
        else:
            return f"takes TOKEN=VALUE strings, not {shown(value)}"
        out = []
        for given in items:
            item = given
            if isinstance(given, str):
                token, eq, number = given.rpartition("=")
                item = (token, number) if eq and token else None
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                return f"{given!r}: write TOKEN=VALUE, as in 'e=-2'"
            token, number = item
            try:
                number = float(number)
            except (TypeError, ValueError):
                return f"{token}={number}: the value must be a number"
            if not token or not math.isfinite(number):
                return f"{token}={number}: give a token and a finite value"
            out.append((str(token), number))
        return tuple(out)


def option(name: str) -> str:
    """A setting as the command line spells it: max_steps -> --max-steps."""
    return "--" + name.replace("_", "-")


def check(config: Any) -> None:
    """Hold a frozen config to its ``SPEC`` (field -> kind), converting values given as JSON
    gives them; a ConfigError names the option (``NAMES`` spells those that are not options)
    and what is wrong. A config's __post_init__ calls it."""
    names: dict[str, str] = getattr(config, "NAMES", {})
    for name, kind in config.SPEC.items():
        value = getattr(config, name)
        try:
            problem = kind.problem(value)
            if problem is None:
                new = kind.convert(value)
        except ConfigError as e:  # inside a nested config
            field = f"{name}.{e.field}" if e.field else name
            raise ConfigError(f"{field} {e.problem}", field, e.problem) from None
        if problem is not None:
            raise ConfigError(f"{names.get(name, option(name))} {problem}", name, problem)
        if new is not value:
            object.__setattr__(config, name, new)


def make(cls: type, d: Any) -> Any:
    """A config of ``cls`` from a JSON object of its fields (those left out keep their
    defaults); a ConfigError names a field that is wrong or unknown."""
    if not isinstance(d, dict):
        problem = f"must be a JSON object, not {shown(d)}"
        raise ConfigError(f"settings {problem}", "", problem)
    unknown = sorted(set(d) - {f.name for f in fields(cls)}, key=str)
    if unknown:
        problem = "is not a setting charrnn knows"
        raise ConfigError(f"{unknown[0]} {problem}", unknown[0], problem)
    return cls(**d)


def build(cls: type, d: Any, where: Path | str, error: Error, prefix: str = "") -> Any:
    """``make`` for a config read from the file ``where``: an ``error`` names the file and
    the field (``prefix`` places the config in the file: "model.")."""
    try:
        return make(cls, d)
    except ConfigError as e:
        field = (prefix + (e.field or "")).rstrip(".") or "the file"
        raise error(f"{where}: {field} {e.problem or e}") from None


class Doc:
    """A JSON object read from the file ``where``, whose fields are read with their kind
    checked; a missing or wrong one is an ``error`` naming the file and the field."""

    def __init__(self, obj: Any, where: Path | str, error: Error, prefix: str = ""):
        self.obj, self.where, self.error, self.prefix = obj, where, error, prefix
        if not isinstance(obj, dict):
            what = prefix.rstrip(".") or "its content"
            raise error(f"{where}: {what} must be a JSON object, not {shown(obj)}")

    def fail(self, key: str, problem: str) -> CharRNNError:
        return self.error(f"{self.where}: {self.prefix}{key} {problem}")

    def get(self, key: str, kind: Kind, default: Any = ...) -> Any:
        if key not in self.obj:
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        value = self.obj[key]
        problem = kind.problem(value)
        if problem is not None:
            raise self.fail(key, problem)
        return kind.convert(value)

    def doc(self, key: str) -> Doc:
        """The JSON object at ``key``, to read fields of."""
        if key not in self.obj:
            raise self.fail(key, "is missing")
        return Doc(self.obj[key], self.where, self.error, f"{self.prefix}{key}.")

    def config(self, key: str, cls: type, default: Any = ...) -> Any:
        if key not in self.obj:
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        return build(cls, self.obj[key], self.where, self.error, f"{self.prefix}{key}.")

    def known(self, keys: Any) -> None:
        """Refuse a field that is none of ``keys``."""
        unknown = sorted(set(self.obj) - set(keys))
        if unknown:
            raise self.fail(unknown[0], "is not a field charrnn knows")


# -- reading files ------------------------------------------------------------------------


def regular(path: Path, error: Error) -> os.stat_result:
    """The status of ``path`` (links followed), refused unless it is a regular file: a FIFO
    would block a reader, a device would never end. FileNotFoundError when it is missing."""
    st = os.stat(path)
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is not a regular file")
    return st


def open_regular(path: Path, error: Error) -> int:
    """A file descriptor of ``path`` opened for reading, refused unless it is a regular file
    (opened without blocking: a FIFO is refused, not waited on); FileNotFoundError when it is
    missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise FileNotFoundError(path) from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a folder, not a file" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise error(f"{path} is {kind}")
    os.set_blocking(fd, True)
    return fd


def read_bytes(path: Path, cap: int, error: Error) -> bytes:
    """The whole of a regular file no larger than ``cap`` bytes, read in bounded memory
    (``open_regular``); FileNotFoundError when it is missing."""
    fd = open_regular(path, error)
    try:
        chunks, size = [], 0
        while size <= cap and (chunk := os.read(fd, min(cap + 1 - size, 1 << 24))):
            chunks.append(chunk)
            size += len(chunk)
        if size > cap:
            raise error(f"{path} is larger than {cap // MiB} MiB, more than such a file holds")
        return b"".join(chunks)
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)


def parse_json(data: bytes | str, where: Path | str, error: Error) -> Any:
    """JSON text, or an ``error`` naming ``where`` (deep nesting included)."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{where} is not valid JSON ({first_line(e, 80)})") from None


def read_json(path: Path, error: Error, cap: int = JSON_CAP) -> Any:
    """A JSON file (``read_bytes``, then parsed); FileNotFoundError when it is missing."""
    return parse_json(read_bytes(path, cap, error), path, error)


def json_lines(path: Path, error: Error, max_line: int = MiB) -> Iterator[Any]:
    """The values of a JSON-lines file, one a line, in bounded memory: a line that is not JSON
    (torn by a crash, damaged, longer than ``max_line``) gives None. FileNotFoundError when the
    file is missing."""
    with os.fdopen(open_regular(path, error), "rb") as f:
        while line := f.readline(max_line + 1):
            if len(line) > max_line:  # skip the rest of an overlong line
                while line and not line.endswith(b"\n"):
                    line = f.readline(max_line)
                yield None
                continue
            try:
                yield json.loads(line)
            except (ValueError, UnicodeDecodeError, RecursionError):
                yield None
