"""How output and errors reach the user: stdout and stderr consoles, and one red line on stderr
for a mistake, never a traceback."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from charrnn.errors import CharRNNError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: JSON has no literal for
    them (Python's json would write -Infinity, which JSON readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = 2) -> str:
    """Valid JSON (non-finite numbers as null), non-ASCII text kept as it is."""
    return json.dumps(finite(value), ensure_ascii=False, allow_nan=False, indent=indent)


def print_json(value: Any) -> None:
    """JSON on stdout as it is (no markup, no emoji codes read into it)."""
    out.file.write(json_text(value) + "\n")
    out.file.flush()


def escape(s: str) -> str:
    return s.replace("[", r"\[")


def fail(message: str) -> None:
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def friendly(fn: F) -> F:
    """Library errors become one red line on stderr and exit status 1."""

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

    return wrapper  # type: ignore[return-value]
