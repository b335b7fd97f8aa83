"""The Typer app: its commands, --version, and a mistake on the command line as one line."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from charrnn.cli import corpora, info, runs, sample, score, serve, tokenize, train
from charrnn.cli import eval as heldout
from charrnn.cli.output import err, escape, out
from charrnn.errors import one_line
from charrnn.version import __version__

# Typer may bundle its own copy of click: take its exception classes from Typer itself.
_ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
INTERNAL = 3  # the exit status of a bug of charrnn's own (1: a refusal, 2: the parser's)
DEBUG = "CHARRNN_DEBUG"  # set to 1, a bug shows its traceback


class _OneLineErrors(TyperGroup):
    """A user's mistake on the command line is one line on stderr, never a usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
            code = rv if isinstance(rv, int) else 0
        except _ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # `charrnn` alone: the help, shown
                return self._exit(0, standalone_mode)
            hint = ""
            ctx = getattr(e, "ctx", None)
            if ctx is not None:
                hint = f" (see '{ctx.command_path} -h')"
            err.print(f"[red]error:[/] {escape(e.format_message())}{hint}", soft_wrap=True)
            code = e.exit_code
        except typer.Abort:
            err.print("[red]aborted[/]")
            code = 130
        except Exception as e:  # a bug: one line that says so, the traceback on request
            if os.environ.get(DEBUG, "") not in ("", "0"):
                raise
            err.print(
                f"[red]error:[/] internal error ({type(e).__name__}: {escape(one_line(e))}); "
                f"run again with {DEBUG}=1 for the traceback, and please report it",
                soft_wrap=True,
            )
            code = INTERNAL
        return self._exit(code, standalone_mode)

    @staticmethod
    def _exit(code: int, standalone_mode: bool) -> int:
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=_OneLineErrors,
    name="charrnn",
    help="Train recurrent language models on plain text, sample from them, score sentences.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"charrnn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """charrnn: char-, word- and subword-level RNN language models."""


# The commands, in the order the help lists them.
app.command("tokenize")(tokenize.tokenize_cmd)
app.command("train")(train.train_cmd)
app.command("sample")(sample.sample_cmd)
app.command("score")(score.score_cmd)
app.command("eval")(heldout.eval_cmd)
app.command("serve")(serve.serve_cmd)
app.command("runs")(runs.runs_cmd)
app.command("info")(info.info_cmd)
app.command("corpora")(corpora.corpora_cmd)
