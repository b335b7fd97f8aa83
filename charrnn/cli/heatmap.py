"""A sentence coloured by the surprisal of each token (Karpathy's "visualizing predictions")."""

from __future__ import annotations

import math

from rich.table import Table
from rich.text import Text

from charrnn.cli.format import prob_text
from charrnn.score import HeatCell, SentenceScore


def _surprisal_style(nats: float) -> str:
    bits = nats / math.log(2)
    for limit, style in ((1, "green"), (3, "yellow"), (6, "dark_orange"), (math.inf, "red")):
        if bits < limit:
            return style
    return "red"


# Surprisal heatmap: background from pale (expected) to dark red (surprising), as in Karpathy's
# "visualizing predictions"; a fixed foreground keeps it readable on dark and light terminals.
_HEAT = (
    (1.0, "black on #fff5eb", "< 1"),
    (2.0, "black on #fdd0a2", "1-2"),
    (4.0, "black on #fd8d3c", "2-4"),
    (8.0, "white on #d94801", "4-8"),
    (math.inf, "white on #7f2704", "8+"),
)


def _heat_style(bits: float) -> str:
    return next(style for limit, style, _ in _HEAT if bits < limit)


def heat_line(cells: list[HeatCell]) -> Text:
    """The sentence, each token on its surprisal's colour; the end marker as ⏎."""
    line = Text()
    for c in cells:
        text = "⏎" if c.kind == "eos" else c.text.replace("\n", "↵")
        lead = text[: len(text) - len(text.lstrip(" "))] if len(text.strip()) else ""
        line.append(lead)
        style = _heat_style(c.bits) + (" underline" if c.unk else "")
        line.append(text[len(lead) :], style=style)
    return line


def _heat_legend() -> Text:
    legend = Text("surprisal (bits): ", style="dim")
    for _, style, label in _HEAT:
        legend.append(f" {label} ", style=style)
    return legend


def per_token_view(r: SentenceScore, cells: list[HeatCell]) -> Table:
    title = heat_line(cells) + Text("\n") + _heat_legend()
    t = Table(title=title, title_justify="left", show_edge=False)
    for col in ("term", "symbol", "log P", "P", "surprisal (bits)"):
        t.add_column(col, justify="left" if col in ("term", "symbol") else "right")
    for term in r.terms:
        piece = term.piece.replace("\n", "\\n")
        sym = Text(piece + (" <unk>" if term.unk else ""), style=_surprisal_style(-term.log_prob))
        t.add_row(
            term.kind,
            sym,
            f"{term.log_prob:.3f}",
            prob_text(term.log_prob),
            f"{-term.log_prob / math.log(2):.2f}",
        )
    return t
