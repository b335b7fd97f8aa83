"""Numbers, sizes and times as a person reads them in a table."""

from __future__ import annotations

import math
import time


def prob_text(log_prob: float) -> str:
    if log_prob == -math.inf:
        return "0"
    exponent = math.floor(log_prob / math.log(10))
    mantissa = math.exp(log_prob - exponent * math.log(10))
    if mantissa >= 9.95:
        mantissa, exponent = mantissa / 10, exponent + 1
    return f"{mantissa:.1f}e{exponent:+d}" if exponent < -3 else f"{math.exp(log_prob):.4f}"


def shown_piece(piece: str) -> str:
    """A token as it reads in P(token | context): spaces and line breaks made visible."""
    return piece.replace(" ", "␣").replace("\n", "⏎") or "''"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighth-blocks."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    return "█" * (eighths // 8) + ("", "▏", "▎", "▍", "▌", "▋", "▊", "▉")[eighths % 8]


def size_text(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def when_text(t: float, now: float | None = None) -> str:
    """'3 min ago' for the last week, a date before that."""
    if not t:
        return "-"
    ago = (time.time() if now is None else now) - t
    if 0 <= ago < 7 * 86400:
        for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
            if ago >= size:
                return f"{int(ago // size)}{unit} ago"
        return "just now"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    m, sec = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {sec:02d}s" if m else f"{sec}s"


def num(x: float | int | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)
