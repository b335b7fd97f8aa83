"""Small texts for the overfitting checks (issue 29): 50-150 KB each, of several kinds.

    python -m benchmarks.smalltexts [--out FOLDER]     # writes them, prints their figures

    shakespeare-100k   the first 100 KB of tinyshakespeare (65 symbols)
    wiki-120k          the first 120 KB of WikiText-2's test text (prose with <unk>)
    de-man-80k         80 KB of German man pages, rendered by groff
    zh-man-120k        120 KB of the Chinese (zh_CN) man pages, rendered by groff (~800 symbols)
    zh-ui-80k          80 KB of the zh_CN and zh_TW message catalogs on this machine, messages
                       taken evenly through them (~2,000 symbols)
    cjk-synth-80k      80 KB generated here: a Chinese-like text of ~3,300 distinct symbols
                       (synthetic_cjk below), as a new user's classical Chinese text would be

The texts from the machine (man pages, catalogs) need a Debian system like the project's; a
text whose sources are missing is left out. Nothing is written into the repository.
"""

from __future__ import annotations

import argparse
import gettext
import gzip
import random
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "corpora"
DEFAULT_OUT = Path("/tmp/charrnn-smalltexts")


def cut(text: str, n_bytes: int) -> str:
    """The first ``n_bytes`` of ``text`` (UTF-8), cut back to its last whole line."""
    data = text.encode("utf-8")[:n_bytes]
    return data[: data.rfind(b"\n") + 1].decode("utf-8")


def groff_pages(lang: str) -> str:
    """The man pages of one language on this machine, rendered as plain UTF-8 text."""
    pages = sorted(Path(f"/usr/share/man/{lang}").glob("man*/*.gz"))
    if not pages or not shutil.which("groff"):
        return ""
    out = []
    cmd = ["groff", "-Kutf8", "-Tutf8", "-man", "-P-cbou"]
    for page in pages:
        roff = gzip.decompress(page.read_bytes())
        rendered = subprocess.run(cmd, input=roff, capture_output=True).stdout
        out.append(rendered.decode("utf-8", "replace").strip())
    return "\n\n".join(out) + "\n"


def catalog_messages(langs: tuple[str, ...]) -> list[str]:
    """The translated messages of the gettext catalogs of these languages on this machine."""
    messages: list[str] = []
    for lang in langs:
        for path in sorted(Path(f"/usr/share/locale/{lang}/LC_MESSAGES").glob("*.mo")):
            try:
                with path.open("rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog  # type: ignore[attr-defined]
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            messages += [v.strip() for k, v in catalog.items() if k and isinstance(v, str)]
    return [m for m in messages if m]


def zh_ui(n_bytes: int) -> str:
    """Messages taken evenly through the Chinese catalogs, one paragraph each, to n_bytes."""
    messages = catalog_messages(("zh_CN", "zh_TW"))
    if not messages:
        return ""
    total = sum(len(m.encode("utf-8")) + 2 for m in messages)
    every = max(1, round(total / n_bytes))
    return cut("\n\n".join(messages[::every]) + "\n", n_bytes)


def synthetic_cjk(n_bytes: int = 80_000, symbols: int = 4_500, seed: int = 0) -> str:
    """A Chinese-like text: words of one to three symbols (Zipf-distributed over ``symbols``
    CJK ideographs), each word followed mostly by one of a few successors (a sparse bigram
    chain with Zipf-distributed word frequencies), clauses ended by ， and sentences by 。,
    paragraphs of a few sentences. 80 KB of it holds about 3,300 distinct symbols."""
    rng = random.Random(seed)
    alphabet = [chr(0x4E00 + i) for i in rng.sample(range(20_000), symbols)]
    char_weights = [1 / (r + 1) ** 0.75 for r in range(symbols)]
    n_words = 12_000
    words = [
        "".join(rng.choices(alphabet, char_weights, k=rng.choice((1, 2, 2, 2, 3))))
        for _ in range(n_words)
    ]
    word_weights = [1 / (r + 1) for r in range(n_words)]
    successors = [rng.sample(range(n_words), 4) for _ in range(n_words)]
    out: list[str] = []
    size, w = 0, 0
    while size < n_bytes:
        sentences = []
        for _ in range(rng.randint(2, 6)):
            clauses = []
            for _ in range(rng.randint(1, 3)):
                clause = []
                for _ in range(rng.randint(2, 7)):
                    fresh = rng.random() < 0.25
                    w = (
                        rng.choices(range(n_words), word_weights)[0]
                        if fresh
                        else rng.choice(successors[w])
                    )
                    clause.append(words[w])
                clauses.append("".join(clause))
            sentences.append("，".join(clauses) + "。")
        paragraph = "".join(sentences)
        out.append(paragraph)
        size += len(paragraph.encode("utf-8")) + 2
    return cut("\n\n".join(out) + "\n", n_bytes)


def _shared(name: str, n_bytes: int) -> Callable[[], str]:
    def read() -> str:
        path = SHARED / name
        return cut(path.read_text(encoding="utf-8"), n_bytes) if path.exists() else ""

    return read


TEXTS: dict[str, Callable[[], str]] = {
    "shakespeare-100k": _shared("tinyshakespeare.txt", 100_000),
    "wiki-120k": _shared("wikitext2-test.txt", 120_000),
    "de-man-80k": lambda: cut(groff_pages("de"), 80_000),
    "zh-man-120k": lambda: cut(groff_pages("zh_CN"), 120_000),
    "zh-ui-80k": lambda: zh_ui(80_000),
    "cjk-synth-80k": lambda: synthetic_cjk(80_000),
}


def build(folder: Path = DEFAULT_OUT, names: list[str] | None = None) -> dict[str, Path]:
    """Write the texts (those whose sources exist) into ``folder``; reuse those written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names or list(TEXTS):
        path = folder / f"{name}.txt"
        if not path.exists():
            text = TEXTS[name]()
            if not text:
                continue
            path.write_text(text, encoding="utf-8")
        paths[name] = path
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.smalltexts", description=__doc__)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    for name, path in build(args.out).items():
        text = path.read_text(encoding="utf-8")
        print(f"{name:18s} {path.stat().st_size:8,d} bytes {len(set(text)):6,d} symbols  {path}")


if __name__ == "__main__":
    main()
