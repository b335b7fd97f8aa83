"""`charrnn sample --interactive`: the terminal side of a session (``charrnn.session`` holds
the state and the logic; this module reads lines and writes text)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from charrnn.cli.format import bar, shown_piece
from charrnn.cli.options import unescape
from charrnn.cli.output import err, escape, out
from charrnn.errors import CharRNNError
from charrnn.session import Session

HELP = (
    "Type text and Enter: the model continues it (\\n in it is a line break). "
    "Enter alone: it goes on. /top [K]: the K likeliest next tokens, pick one. "
    "/reset: start over. Ctrl-C ends a turn, Ctrl-D the session."
)
PROMPT = "> "


def interactive_loop(session: Session, first: str = "") -> None:
    """Turns until Ctrl-D (the end of standard input)."""
    err.print(HELP, style="dim")
    if first:
        _turn(session, first)
    while True:
        try:
            line = input(PROMPT)
        except EOFError:
            out.file.write("\n")
            return
        except KeyboardInterrupt:  # at the prompt: a fresh line
            out.file.write("\n")
            continue
        if line.startswith("/") and not line.startswith("//"):
            _command(session, line)
        else:
            _turn(session, unescape(line.removeprefix("/")))


def _turn(session: Session, text: str) -> None:
    """Read ``text``, then stream the continuation; Ctrl-C ends it where it is."""
    try:
        turn = session.say(text)
    except CharRNNError as e:  # a mistake ends the line, not the session
        err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        return
    sink, ends_line = out.file, True
    try:
        with turn:
            for piece in turn:
                sink.write(piece)
                sink.flush()
                ends_line = piece.endswith("\n")
    except KeyboardInterrupt:
        pass  # leaving the with block read what was drawn into the session
    if not ends_line:
        sink.write("\n")
    if turn.sample is not None and turn.sample.cut:
        err.print(f"[yellow](cut at --max-tokens {session.config.max_tokens})[/]")


def _command(session: Session, line: str) -> None:
    name, _, arg = line[1:].partition(" ")
    if name == "top":
        _top(session, arg.strip())
    elif name == "reset":
        session.reset()
        err.print("(started over)", style="dim")
    elif name == "help":
        err.print(HELP, style="dim")
    else:
        err.print(f"[red]error:[/] unknown command /{escape(name)}; /help lists them")


def _top(session: Session, arg: str) -> None:
    """The likeliest next tokens, numbered; the one picked is read and shown."""
    if arg and not arg.isdigit():
        err.print("[red]error:[/] /top takes a number of tokens, as in /top 5")
        return
    tops = session.top(int(arg or 10))
    table = Table(box=None, show_header=False, padding=(0, 1))
    for i, t in enumerate(tops, 1):
        table.add_row(f"{i}", Text(shown_piece(t.piece)), f"{t.prob:.4f}", bar(t.prob, 24))
    out.print(table)
    try:
        pick = input(f"pick 1-{len(tops)} (Enter: none){PROMPT}").strip()
    except (EOFError, KeyboardInterrupt):
        out.file.write("\n")
        return
    if not pick:
        return
    if not pick.isdigit() or not 1 <= int(pick) <= len(tops):
        err.print(f"[red]error:[/] pick a number from 1 to {len(tops)}")
        return
    out.file.write(session.choose(tops[int(pick) - 1].id) + "\n")
