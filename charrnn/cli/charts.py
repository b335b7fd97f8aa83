"""Loss curves as pictures: in the terminal with Unicode blocks, or as an image (matplotlib).

The terminal chart fills the area under the training loss with eighth-blocks, so a column has
8 levels per row, and marks the validation loss on top of it:

    4.22 ┤█
         ┤█▅
         ┤██▇▃  •
    1.48 ┤██████▇▆▅▅▄▄▄▄▄▄▃▃▃▃▃▃▃
         └──────────────────────
          0                 2,000

Each cell comes with a tag ("train", "val", "val+train" for a marker over the area, "axis")
so the caller can colour it; ``plain`` joins them into text.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from charrnn.errors import ConfigError
from charrnn.io import write_output

Row = list[tuple[str, str]]  # (text, tag) segments
_EIGHTHS = " ▁▂▃▄▅▆▇█"
IMAGE_FORMATS = ("png", "svg", "pdf")


def _columns(steps: Sequence[float], values: Sequence[float], xs: np.ndarray) -> np.ndarray:
    """``values`` at the column positions ``xs``: the mean of the points in each column, and
    straight lines across columns that have none."""
    s = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    if xs[-1] == xs[0]:  # a single step: one level across
        return np.full(len(xs), v.mean())
    half = (xs[1] - xs[0]) / 2
    col = np.clip(np.round((s - xs[0]) / (2 * half)).astype(int), 0, len(xs) - 1)
    sums = np.bincount(col, weights=v, minlength=len(xs))
    counts = np.bincount(col, minlength=len(xs))
    have = counts > 0
    out = np.interp(xs, xs[have], sums[have] / counts[have])
    out[xs < s.min() - half] = np.nan  # no line before the first point or after the last
    out[xs > s.max() + half] = np.nan
    return out


def loss_chart(
    train_steps: Sequence[int],
    train_loss: Sequence[float],
    val_steps: Sequence[int] = (),
    val_loss: Sequence[float] = (),
    width: int = 60,
    height: int = 10,
) -> list[Row]:
    """Rows of the chart, top to bottom, axes and labels included."""
    if not len(train_steps) and not len(val_steps):
        return []
    width, height = max(8, width), max(3, height)
    all_steps = [*train_steps, *val_steps]
    lo, hi, clipped = _y_range(all_steps, [*train_loss, *val_loss])
    xs = np.linspace(min(all_steps), max(all_steps), width)
    levels = height * 8

    def level(v: float) -> int:  # 1..levels: the lowest point still shows
        return 1 + round((min(v, hi) - lo) / (hi - lo) * (levels - 1))

    grid = [[(" ", "")] * width for _ in range(height)]
    if len(train_steps):
        for c, v in enumerate(_columns(train_steps, train_loss, xs)):
            if np.isfinite(v):
                _fill_column(grid, c, level(v))
    if len(val_steps):
        exact = {int(round(i)) for i in _positions(val_steps, xs)}
        for c, v in enumerate(_columns(val_steps, val_loss, xs)):
            if np.isfinite(v):
                r = height - 1 - (level(v) - 1) // 8
                under = grid[r][c][0] != " "
                grid[r][c] = ("●" if c in exact else "·", "val+train" if under else "val")
    return _frame(grid, lo, hi, clipped, min(all_steps), max(all_steps))


def _y_range(steps: Sequence[int], values: Sequence[float]) -> tuple[float, float, bool]:
    """The loss range to draw, and whether its top is clipped: the first 5% of the steps (the
    loss falls fast from ln V there) do not set the scale, or the rest of the run would be a
    flat line at the bottom."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    lo, hi = float(v.min()), float(v.max())
    later = v[s >= s.min() + 0.05 * (s.max() - s.min())]
    clipped = len(later) >= 2 and float(later.max()) < hi and float(later.max()) - lo > 1e-9
    if clipped:
        hi = float(later.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi, clipped


def _positions(steps: Sequence[int], xs: np.ndarray) -> np.ndarray:
    span = xs[-1] - xs[0]
    if span == 0:
        return np.zeros(len(steps))
    return (np.asarray(steps, dtype=float) - xs[0]) / span * (len(xs) - 1)


def _fill_column(grid: list[Row], c: int, lev: int) -> None:
    height = len(grid)
    for r in range(height):
        below = (height - 1 - r) * 8  # levels under this row
        part = min(8, max(0, lev - below))
        if part:
            grid[r][c] = (_EIGHTHS[part], "train")


def _frame(
    grid: list[Row], lo: float, hi: float, clipped: bool, first: float, last: float
) -> list[Row]:
    height, width = len(grid), len(grid[0])
    labels = {0: f"{hi:.2f}" + ("+" if clipped else ""), height - 1: f"{lo:.2f}"}
    if height >= 5:
        labels[height // 2] = f"{hi - (hi - lo) * (height // 2) / (height - 1):.2f}"
    pad = max(len(x) for x in labels.values())
    rows: list[Row] = []
    for r, cells in enumerate(grid):
        rows.append([(f"{labels.get(r, ''):>{pad}} ┤", "axis"), *_merge(cells)])
    rows.append([(" " * pad + " └" + "─" * width, "axis")])
    left, right = f"{int(first):,}", f"{int(last):,} steps"
    gap = max(1, width - len(left) - len(right))
    rows.append([(" " * (pad + 2) + left + " " * gap + right, "axis")])
    return rows


def _merge(cells: Row) -> Row:
    """Neighbouring cells with one tag become one segment."""
    out: Row = []
    for text, tag in cells:
        if out and out[-1][1] == tag:
            out[-1] = (out[-1][0] + text, tag)
        else:
            out.append((text, tag))
    return out


def plain(rows: list[Row]) -> str:
    return "\n".join("".join(text for text, _ in row).rstrip() for row in rows)


# -- images -------------------------------------------------------------------------------


def save_loss_plot(
    path: Path,
    title: str,
    train_steps: Sequence[int],
    train_loss: Sequence[float],
    val_steps: Sequence[int] = (),
    val_loss: Sequence[float] = (),
    best_step: int | None = None,
) -> None:
    """Write the loss curves as an image (png, svg or pdf by the file's suffix), where the user
    means it (``io.write_output``)."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".") or "png"
    if fmt not in IMAGE_FORMATS:
        raise ConfigError(f"--plot writes {', '.join(IMAGE_FORMATS)} files, not {path.suffix!r}")
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError(
            "--plot needs matplotlib, which is not installed: pip install 'charrnn[plot]'"
        ) from None
    # A Figure of its own, not pyplot: no global state, no display needed.
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    if len(train_steps):
        ax.plot(train_steps, train_loss, lw=1.2, color="tab:blue", label="train")
    if len(val_steps):
        ax.plot(val_steps, val_loss, "o-", lw=1.5, ms=4, color="tab:red", label="validation")
    if best_step is not None:
        ax.axvline(best_step, ls=":", color="grey", label=f"kept model (step {best_step:,})")
    ax.set(title=title, xlabel="step", ylabel="loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=120)
    write_output(path, buf.getvalue())
