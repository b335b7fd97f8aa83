"""What `charrnn train` shows: a progress bar, evaluation lines and samples while it trains,
and the summary after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from charrnn.builtin import shown_path
from charrnn.cli.format import size_text
from charrnn.cli.options import format_duration
from charrnn.cli.output import escape, out
from charrnn.training.callbacks import Callbacks, EvalStats, StepStats, TrainResult


class TrainView(Callbacks):
    """Rich progress bar, evaluation lines and samples while training."""

    def __init__(self, shown: bool = True, console: Console = out):
        self.shown = shown
        self.bar = bar = Progress(
            TextColumn("[bold]step {task.fields[step]}[/]"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[loss]}"),
            TextColumn("{task.fields[val]}"),
            TextColumn("{task.fields[speed]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not (shown and console.is_terminal),  # no bar frames in a log
        )
        self.task = bar.add_task("train", total=1.0, loss="", val="", speed="", step=0)
        fields = {"loss": "", "val": "", "speed": "", "step": ""}
        self.data_task = bar.add_task("data", total=None, visible=False, **fields)
        self.interrupted = False
        self.val = ""

    @contextmanager
    def showing(self) -> Iterator[None]:
        """The bar starts with the first thing it shows (a refused run draws none) and is
        stopped however the run ends."""
        try:
            yield
        finally:
            if self.bar.live.is_started:
                self.bar.stop()

    def on_data(self, done: int, total: int) -> None:
        """Encoding the corpus: its own bar, gone when done."""
        if done < total:
            self.bar.start()
        self.bar.update(self.data_task, completed=done, total=total, visible=done < total)

    def on_start(self, info: dict[str, Any]) -> None:
        m, say = info["model"], self.bar.console.print
        resumed = f" (resumed at step {info['resumed_from']:,})" if info["resumed_from"] else ""
        say(
            f"run [bold]{escape(info['run'])}[/]{resumed}: {m['cell']} {m['layers']}x"
            f"{m['hidden']}, {info['parameters']:,} parameters, on {info['device']}"
            + (f" ({info['precision']})" if info.get("precision", "fp32") != "fp32" else "")
        )
        say(
            f"text: {escape(info['corpus'])} ({size_text(info['corpus_bytes'])}), "
            f"{info['level']} level ({info['vocab_size']:,} symbols)"
        )
        base = info.get("base")
        if base:
            say(f"from: {escape(_lineage(base, info['level']))}")
            if m["max_len"] > base.get("max_len", m["max_len"]):
                say(
                    f"units: up to {m['max_len']:,} tokens (base: {base['max_len']:,}); "
                    "the length buckets grow"
                )
        say(
            f"split: {info['train_tokens']:,} train / {info['val_tokens']:,} val tokens "
            f"({info['split']} split)"
        )
        say(f"length: {_ends(info)}")
        for warning in info["warnings"]:  # with the run's header, in its log
            say(f"[yellow]warning:[/] {escape(warning)}")
        self.bar.start()

    def on_step(self, s: StepStats) -> None:
        done = s.progress if s.progress is not None else 0.0
        self.bar.update(
            self.task,
            completed=min(1.0, done),
            loss=f"loss {s.loss:.3f}",
            val=self.val,
            speed=f"{s.tokens_per_s:,.0f} tok/s",
            step=s.step,
        )

    def on_eval(self, e: EvalStats) -> None:
        self.val = f"val {e.loss:.3f}"
        mark = "  [green]best[/]" if e.best and not e.full else ""
        what = " (kept model)" if e.full else ""  # on the whole validation split
        self.bar.console.print(
            f"step {e.step:,}  val {e.loss:.4f} nats/token, {e.bpc:.3f} bits/char, "
            f"ppl {e.perplexity:.2f}{what}{mark}"
        )

    def on_sample(self, step: int, text: str) -> None:
        self.bar.console.print(f"[dim]--- sample at step {step} ---[/]")
        self.bar.console.print(Text(text.strip("\n")[:600]))
        self.bar.console.print("[dim]---[/]")

    def stop_requested(self) -> bool:
        return self.interrupted


def _lineage(base: dict[str, Any], level: str) -> str:
    """Where a fine-tuned run starts: run shakespeare (step 5,000): +12 symbols, 65 -> 77."""
    added, had = base.get("added_symbols", 0), base.get("vocab_size", 0)
    if level in ("bpe", "unigram"):
        grown = f"its {level} tokenizer as it is"
    else:
        grown = f"+{added:,} symbols, {had:,} -> {had + added:,}" if added else "no new symbols"
    step = base.get("step")
    at = f" (step {step:,})" if isinstance(step, int) else ""
    return f"run {base.get('name', '?')}{at}: {grown}"


def _ends(info: dict[str, Any]) -> str:
    """How long the run goes on: 15m (--time-budget) or 500 steps, whichever comes first."""
    ends = []
    if info["time_budget"]:
        ends.append(f"{format_duration(info['time_budget'])} (--time-budget)")
    if info["max_steps"]:
        ends.append(f"{info['max_steps']:,} steps (--max-steps)")
    if info["epochs"]:
        ends.append(f"{info['epochs']:g} epochs (--epochs)")
    if not ends:
        return "until Ctrl-C (no --time-budget)"
    return " or ".join(ends) + (", whichever comes first" if len(ends) > 1 else "")


def summary_table(result: TrainResult, corpus: Path) -> Table:
    t = Table(title="training summary", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column(justify="right")
    rows = [
        ("run", escape(shown_path(result.run))),
        ("steps", f"{result.steps:,}"),
        ("tokens", f"{result.tokens:,}"),
        ("time", f"{result.elapsed:.0f}s"),
        ("throughput", f"{result.tokens_per_s:,.0f} tokens/s"),
        ("stopped by", result.stopped_by),
        ("last train loss", f"{result.train_loss:.4f} nats/token"),
    ]
    if result.val is not None:
        rows += [
            ("best step", f"{result.best_step:,}"),
            ("val loss", f"{result.val.loss:.4f} nats/token"),
            ("val perplexity", f"{result.val.perplexity:.2f}"),
            ("val bits/char", f"{result.val.bpc:.4f}"),
            ("val bits/byte", f"{result.val.bpb:.4f}"),
        ]
    if result.stop_fit is not None:
        f = result.stop_fit
        rows.append(
            (
                f"stop rules vs val lengths (KS, {f.n} samples)",
                "  ".join(f"{rule} {ks:.3f}" for rule, ks in f.ks.items()),
            )
        )
    for k, v in rows:
        t.add_row(k, v)
    return t
