"""`charrnn info`: everything about one run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from charrnn.builtin import shown_path
from charrnn.checkpoint import DEFAULT_ROOT, find_run
from charrnn.cli.charts import loss_chart, save_loss_plot
from charrnn.cli.format import duration_text, num, shown_piece, size_text, when_text
from charrnn.cli.options import (
    OUTPUT,
    CheckpointsDirOpt,
    JsonOpt,
    RunArg,
)
from charrnn.cli.output import err, escape, friendly, out, print_json
from charrnn.config import Stop
from charrnn.runs import STOPFIT_HINT, RunDetails, details


@friendly
def info_cmd(
    run: RunArg = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also write the loss curves to this image (.png, .svg or .pdf); needs "
            "matplotlib: pip install 'charrnn[plot]'.",
            rich_help_panel=OUTPUT,
        ),
    ] = None,
    as_json: JsonOpt = False,
    checkpoints: CheckpointsDirOpt = DEFAULT_ROOT,
) -> None:
    """Everything about one run: config, parameters, tokenizer, loss curves, stopping rules."""
    d = details(find_run(run, checkpoints))
    if plot is not None:
        c = d.curves
        save_loss_plot(
            plot,
            f"{d.summary.name}: loss",
            c.train_steps,
            c.train_loss,
            c.val_steps,
            c.val_loss,
            d.best.get("step"),
        )
    if as_json:
        print_json(d.to_json())
    else:
        _print_info(d)
    if plot is not None:
        err.print(f"wrote the loss curves to {escape(str(plot))}")


def _print_info(d: RunDetails) -> None:
    s, info = d.summary, d.info
    out.print(f"[bold]{escape(s.name)}[/]  [dim]{escape(shown_path(s.folder))}[/]")
    created = str(info.get("created", "?")).replace("T", " ")[:16]  # to the minute
    out.print(
        f"created {escape(created)} by charrnn {escape(str(info.get('charrnn_version', '?')))}, "
        f"trained {when_text(s.trained)}, {size_text(s.size_bytes)}"
    )
    builtin = info.get("builtin")
    corpus = f"built-in {builtin}" if builtin else shown_path(Path(str(info.get("corpus", "?"))))
    out.print(f"corpus {escape(corpus)}")
    if isinstance(info.get("base"), dict):
        out.print(f"fine-tuned from {escape(_lineage(info['base']))}")
    out.print()
    out.print(_progress_table(d))
    out.print()
    out.print(_config_table(d))
    out.print(_tokenizer_text(d.tokenizer))
    out.print()
    _print_curves(d)
    out.print()
    _print_stopfit(d)


def _lineage(base: dict[str, Any]) -> str:
    """shakespeare (step 5,000 of its best weights, format 6), +12 symbols"""
    step, added = base.get("step"), base.get("added_symbols", 0)
    at = f"step {step:,} of its " if isinstance(step, int) else ""
    where = f"{at}{base.get('weights', 'best')} weights, format {base.get('format_version', '?')}"
    grown = f", +{added:,} symbols" if isinstance(added, int) and added > 0 else ""
    return f"{base.get('name', '?')} ({where}){grown}"


def _progress_table(d: RunDetails) -> Table:
    t = Table(title="training", title_justify="left", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    data, loop, best = d.info.get("data", {}), d.loop, d.best
    rows = [
        ("parameters", num(d.parameters, ",")),
        ("steps", num(loop.get("step"), ",")),
        ("tokens seen", num(loop.get("tokens"), ",")),
        ("training time", duration_text(loop.get("elapsed"))),
        (
            "split",
            f"{data.get('train_tokens', 0):,} train / {data.get('val_tokens', 0):,} val tokens "
            f"({d.info.get('train', {}).get('split', 'tail')})",
        ),
    ]
    reg = d.regularization()
    if reg is not None:
        rows.append(
            (
                "regularization",
                f"weight decay {reg.weight_decay}, learning rate decayed to {reg.min_lr_ratio} x "
                f"peak (for {reg.passes} passes over the training text expected x "
                f"{reg.per_token:.2f} recurrent parameters per training token = {reg.pressure})",
            )
        )
        if reg.row_pressure is not None:  # decided since format 6
            rows.append(
                (
                    "weight drop, dropout, row decay",
                    f"{reg.weight_drop}, {reg.dropout}, {reg.row_decay} (row pressure "
                    f"{reg.row_pressure}: "
                    "passes x embedding and output parameters per training token)",
                )
            )
    if best:
        scope = "whole validation split" if best.get("full") else "validation sample"
        calibrated = ""
        if "temperature" in best:
            calibrated = f", logits / {best['temperature']} (fitted on validation text)"
        rows.append(
            (
                "kept model",
                f"step {best.get('step', 0):,}: {best.get('val_loss', math.nan):.4f} nats/token, "
                f"{best.get('val_bpc', math.nan):.3f} bits/char ({scope}){calibrated}",
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    return t


def _config_table(d: RunDetails) -> Table:
    """The three configs one after another, every field, two to a row (80 columns hold it)."""
    configs = [
        ("model", d.info.get("model", {})),
        ("training", d.info.get("train", {})),
        ("data", _flat(d.info.get("data", {}).get("config", {}))),
    ]
    t = Table(title="config", title_justify="left", box=box.SIMPLE_HEAD, show_header=False)
    for justify in ("left", "right", "left", "right"):
        t.add_column(justify=justify)  # type: ignore[arg-type]
    for name, config in configs:
        t.add_row(Text(name, style="bold"), "", "", "")
        items = [(k, escape(str(v))) for k, v in sorted(config.items())]
        half = (len(items) + 1) // 2
        rows = list(zip(items[:half], [*items[half:], ("", "")]))
        for i, ((k1, v1), right) in enumerate(rows):
            t.add_row(k1, v1, *right, end_section=i == len(rows) - 1)
    return t


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out_: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out_.update(_flat(v, f"{prefix}{k}."))
        else:
            out_[prefix + k] = v
    return out_


def _tokenizer_text(tok: dict[str, Any]) -> Text:
    t = Text("tokenizer: ", style="bold")
    t.append(f"{tok.get('level', '?')} level, {tok.get('vocab_size', 0):,} symbols")
    t.append(" (<pad> <sos> <eos> <unk> and the corpus's own)", style="dim")
    commonest = tok.get("commonest")
    if commonest:
        t.append("\ncommonest: ", style="bold")
        t.append(" ".join(shown_piece(p) for p in commonest))
    return t


def _print_curves(d: RunDetails) -> None:
    c = d.curves
    if c.problem:
        out.print(f"[yellow]loss curves: {escape(c.problem)}[/]")
        return
    if not c.train_steps and not c.val_steps:
        out.print("[dim]no loss records yet (metrics.jsonl)[/]")
        return
    width = max(20, min(72, out.width - 12))
    rows = loss_chart(c.train_steps, c.train_loss, c.val_steps, c.val_loss, width, 10)
    styles = {"train": "cyan", "val": "bold magenta", "val+train": "bold magenta on cyan"}
    title = Text("loss (nats/token)   ", style="bold")
    title.append("█ train", style="cyan")
    title.append("   ● validation", style="bold magenta")
    out.print(title)
    for row in rows:
        line = Text()
        for text, tag in row:
            line.append(text, style=styles.get(tag, "dim" if tag == "axis" else ""))
        out.print(line, no_wrap=True, crop=False)
    if c.final_loss is not None:
        out.print(
            f"kept model on the whole validation split: {c.final_loss:.4f} nats/token, "
            f"{c.final_bpc:.3f} bits/char"
        )


def _print_stopfit(d: RunDetails) -> None:
    f = d.stopfit
    if d.stopfit_problem:
        out.print(f"[yellow]stopping rules: {escape(d.stopfit_problem)}[/]")
        return
    if f is None:
        out.print(f"[dim]stopping rules: no fit for this run yet; {escape(STOPFIT_HINT)}[/]")
        return
    t = Table(
        title=f"stopping rules: sample lengths against the validation units "
        f"({f.n:,} samples a rule at temperature {f.temperature:g}; validation mean "
        f"{f.val_mean_length:.1f} tokens)",
        title_justify="left",
    )
    for col in ("rule", "KS distance", "mean length"):
        t.add_column(col, justify="left" if col == "rule" else "right")
    known = [s.value for s in Stop]  # the rules in their usual order, then any others
    for rule in [*[r for r in known if r in f.ks], *sorted(set(f.ks) - set(known))]:
        mean = f.mean_length.get(rule)
        t.add_row(rule, f"{f.ks[rule]:.3f}", "-" if mean is None else f"{mean:.1f}")
    out.print(t)
    out.print(Text("KS distance: 0 = the same length distribution, 1 = disjoint", style="dim"))
