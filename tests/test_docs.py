"""docs/ holds a page per command generated from its --help; the README shows each command."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _docs_module():
    spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_docs_match_help():
    docs = _docs_module()
    assert docs.stale() == [], "docs/ is out of date: run python docs/generate.py"
    pages = docs.pages()
    assert set(pages) == {f"{c}.md" for c in docs.commands()} | {"README.md"}
    assert "--per-token" in pages["score.md"] and "--plot" in pages["info.md"]


def test_every_command_has_a_readme_example():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in _docs_module().commands():
        assert f"### `charrnn {command}" in readme, command
