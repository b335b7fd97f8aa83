"""The command line as a person uses it: streaming samples, --output, the surprisal heatmap,
next-token lists, shell completion."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.cli import app

runner = CliRunner()


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


@pytest.fixture(scope="module")
def ck(trained_run: Path) -> list[str]:
    return ["-c", trained_run.name, "--checkpoints", str(trained_run.parent)]


# -- sample -------------------------------------------------------------------------------


def test_streamed_samples_are_the_json_samples(ck):
    args = ["sample", *ck, "-n", "3", "--seed", "9", "--max-tokens", "50", "--prompt", "The"]
    streamed = run(*args)
    assert streamed.exit_code == 0, streamed.output
    texts = [s["text"] for s in json.loads(run(*args, "--json").stdout)]
    parts = streamed.stdout.split("─" * 20 + "\n")
    assert len(parts) == 3
    for shown, text in zip(parts, texts):
        assert shown == (text if text.endswith("\n") else text + "\n")


def test_output_writes_the_file_and_nothing_to_stdout(ck, tmp_path):
    path = tmp_path / "samples.txt"
    r = run("sample", *ck, "-n", "2", "--seed", "1", "--max-tokens", "30", "-o", path)
    assert r.exit_code == 0, r.output
    assert r.stdout == "" and "wrote 2 sample(s)" in r.stderr
    texts = [
        s["text"]
        for s in json.loads(
            run("sample", *ck, "-n", "2", "--seed", "1", "--max-tokens", "30", "--json").stdout
        )
    ]
    expected = "\n".join(t if t.endswith("\n") else t + "\n" for t in texts)
    assert path.read_text(encoding="utf-8") == expected
    assert [p.name for p in tmp_path.iterdir()] == ["samples.txt"]  # no temporary left

    r = run("sample", *ck, "--seed", "1", "--max-tokens", "30", "--json", "-o", tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())[0]["log_prob"] < 0


def test_output_into_a_missing_folder_is_one_line(ck, tmp_path):
    r = run("sample", *ck, "--max-tokens", "5", "-o", tmp_path / "no" / "s.txt")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:")
    assert not (tmp_path / "no").exists()


# -- score --------------------------------------------------------------------------------


def test_per_token_draws_the_heatmap(ck):
    r = run("score", "The cat sat.", *ck, "--per-token")
    assert r.exit_code == 0, r.output
    assert "The cat sat.⏎" in r.stdout  # the sentence, then its end
    assert "surprisal (bits)" in r.stdout and "8+" in r.stdout  # the legend


def test_heatmap_colours_grow_with_surprisal():
    from charrnn.cli.heatmap import heat_line
    from charrnn.score import HeatCell

    cells = [HeatCell("token", "a", 0.5), HeatCell("token", " b", 9.0), HeatCell("eos", "", 3.0)]
    line = heat_line(cells)
    assert line.plain == "a b⏎"
    styles = {line.plain[s.start : s.end]: str(s.style) for s in line.spans}
    assert set(styles) == {"a", "b", "⏎"}  # the space before b is not coloured
    assert styles["a"] != styles["b"] != styles["⏎"]
    assert all(" on #" in st for st in styles.values())  # a background, as in a heatmap


def test_next_lists_the_likeliest_tokens(ck):
    r = run("score", "The cat sat on the", *ck, "--next", "4")
    assert r.exit_code == 0, r.output
    rows = re.findall(r"P\((.+?) \| The cat sat on the\) += ([0-9.e-]+)", r.stdout)
    assert len(rows) == 4
    probs = [float(p) for _, p in rows]
    assert probs == sorted(probs, reverse=True)
    d = json.loads(run("score", "The cat sat on the", *ck, "--next", "4", "--json").stdout)
    nxt = d[0]["next"]
    assert [round(x["prob"], 4) for x in nxt] == probs
    assert run("score", "x", *ck, "--next", "0").exit_code != 0


# -- completion ---------------------------------------------------------------------------


def test_show_completion_for_bash(monkeypatch):
    # the shell is found from the process tree, which a test runner's may not show: say it
    monkeypatch.setattr("shellingham.detect_shell", lambda: ("bash", "/bin/bash"))
    r = run("--show-completion", prog_name="charrnn")
    assert r.exit_code == 0, r.output
    assert "_CHARRNN_COMPLETE=complete_bash" in r.stdout
    assert "complete -o default -F _charrnn_completion charrnn" in r.stdout


def _complete(words: str, cword: int) -> list[str]:
    env = {"_CHARRNN_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    r = runner.invoke(app, [], env=env, prog_name="charrnn")
    return r.stdout.split()


def test_completion_of_commands_choices_and_run_names(trained_run):
    assert _complete("charrnn sa", 1) == ["sample"]
    assert _complete("charrnn sample --stop ", 3) == ["eos", "halt", "length", "none"]
    root = str(trained_run.parent)
    assert _complete(f"charrnn info --checkpoints {root} ve", 4) == [trained_run.name]
