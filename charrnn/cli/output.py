"""How output and errors reach the user: stdout and stderr consoles, and one red line on stderr
for a mistake, never a traceback."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console, ConsoleOptions, RenderHook
from rich.segment import Segment

from charrnn.errors import CharRNNError, out_of_memory

# C0 controls but tab and line feed, DEL, and C1 controls: what can drive a terminal
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with its control characters (but tabs and line breaks) written as escapes
    (ESC as \\x1b), so that nothing read from a file or an argument drives the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Visible:
    """A renderable as it renders, its text made ``visible`` (Rich's own control segments,
    which move the cursor for a progress bar, are kept)."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for seg in console.render(self.inner, options):
            if seg.control or not _CONTROL.search(seg.text):
                yield seg
            else:
                yield Segment(visible(seg.text), seg.style)


class _ShowControls(RenderHook):
    """Everything printed shows control characters as escapes: names and fields from a run's
    files, arguments quoted in errors (a run named to clear the screen cannot)."""

    def process_renderables(self, renderables: list[Any]) -> list[Any]:
        return [_Visible(r) for r in renderables]


out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
for _console in (out, err):
    _console.push_render_hook(_ShowControls())

F = TypeVar("F", bound=Callable[..., Any])


def escape(s: str) -> str:
    return s.replace("[", r"\[")


def json_text(obj: Any, indent: int | None = None) -> str:
    """``obj`` as JSON. JSON has no NaN or infinity: a number that is not finite (the
    log-probability of an impossible sentence) is written as null. No control character is
    left raw (JSON escapes C0 itself; DEL and C1 are escaped here), so none reaches a terminal."""
    text = json.dumps(_finite(obj), allow_nan=False, default=str, ensure_ascii=False, indent=indent)
    return _UNESCAPED.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


_UNESCAPED = re.compile("[\x7f-\x9f]")  # control characters json.dumps leaves as they are


def print_json(obj: Any) -> None:
    """``obj`` as JSON on stdout (``json_text``), indented."""
    out.print(json_text(obj, indent=2), markup=False, highlight=False, soft_wrap=True)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def fail(message: str) -> None:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


MEMORY_HINT = "ask for less: a smaller model (--hidden, --embed, --layers), --batch-size or -n"


def friendly(fn: F) -> F:
    """Library errors, failed reads and writes and a lack of memory become one red line on
    stderr and exit status 1 (anything else is a bug: see app.py)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharRNNError as e:
            fail(str(e))
        except OSError as e:
            where = f": {e.filename}" if getattr(e, "filename", None) else ""
            fail(f"{e.strerror or e}{where}")
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except (MemoryError, RuntimeError) as e:
            words = out_of_memory(e)
            if words is None:
                raise
            fail(f"{words}; {MEMORY_HINT}")

    return wrapper  # type: ignore[return-value]
