"""`charrnn corpora`: the corpora that ship with charrnn."""

from __future__ import annotations

import json

from rich import box
from rich.table import Table

from charrnn.builtin import BUILTIN, DEFAULT
from charrnn.cli.format import size_text
from charrnn.cli.options import JsonOpt
from charrnn.cli.output import friendly, out


@friendly
def corpora_cmd(as_json: JsonOpt = False) -> None:
    """The corpora that ship with charrnn: `charrnn train NAME` trains on one."""
    rows = [
        {"name": b.name, "bytes": b.path.stat().st_size, "what": b.what, "licence": b.licence}
        for b in BUILTIN.values()
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table(title="built-in corpora", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("name", "size", "what it is", "licence"):
        t.add_column(col, justify="right" if col == "size" else "left")
    for r in rows:
        t.add_row(r["name"], size_text(r["bytes"]), r["what"], r["licence"])
    out.print(t)
    out.print(f"`charrnn train NAME` trains on one; without a corpus, train takes {DEFAULT}.")
