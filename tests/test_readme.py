"""The README's quickstart runs as printed, on a fresh folder with no file of the user's."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The test's own budget, after the quickstart's train command: a few steps of a small model.
SHORT = ["--max-steps", "15", "--hidden", "64", "--embed", "32", "--stop-fit", "0"]
# ... and a fixed draw: a model of 15 steps ends about one sample in 300 at once ("\n")
EXTRA = {"train": SHORT, "sample": ["--seed", "1"]}


def quickstart() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Quickstart") :]
    section = section[: section.index("\n## ", 1)]
    lines = re.findall(r"^    (charrnn .*)$", section, re.M)
    return [shlex.split(line.split("  #")[0]) for line in lines]


def test_the_quickstart_runs_as_printed(tmp_path):
    commands = quickstart()
    assert [c[:2] for c in commands] == [
        ["charrnn", "train"],
        ["charrnn", "sample"],
        ["charrnn", "score"],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CHARRNN_CACHE": str(tmp_path / "cache")}
    outputs = []
    for command in commands:
        args = [*command[1:], *EXTRA.get(command[1], [])]
        done = subprocess.run(
            [sys.executable, "-m", "charrnn", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (command, done.stderr[-2000:])
        outputs.append(done.stdout)
    assert "text: built-in shakespeare" in outputs[0]  # no file of the user's was needed
    assert (tmp_path / "checkpoints" / "shakespeare" / "best.safetensors").exists()
    assert outputs[1].strip()  # a sample
    assert "apple and pear salad" in outputs[2] and "apple and pair salad" in outputs[2]
