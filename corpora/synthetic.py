"""A synthetic corpus whose unit lengths are known exactly: ``synthetic-lengths.txt``.

Each line is one unit: the first L - 1 letters of the alphabet and a full stop, so the text
of a unit tells where in it one stands, and every unit ends the same recognisable way:

    L = 5    abcd.
    L = 18   abcdefghijklmnopq.

L (in characters, which are the tokens at char level) is drawn independently for each line
from a fixed two-peaked distribution with a gap (no unit has 10 to 14 characters), so a
stopping rule that only learned the mean length, or smeared it, is seen at once:

    L:       3 4 5  6 7 8 9 | 15 16 17 18 19 20 21 22 23
    weight:  2 5 8 10 8 5 2 |  1  2  4  6  7  6  4  2  1      (out of 73)

The tests train a tiny model on it and check that each stopping rule (eos, halt, length)
draws samples whose lengths follow this distribution.

    python corpora/synthetic.py                 # rewrite corpora/synthetic-lengths.txt
    python corpora/synthetic.py --lines 500 --seed 1 --out /tmp/small.txt
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

import numpy as np

LENGTH_WEIGHTS = {
    **{3: 2, 4: 5, 5: 8, 6: 10, 7: 8, 8: 5, 9: 2},
    **{15: 1, 16: 2, 17: 4, 18: 6, 19: 7, 20: 6, 21: 4, 22: 2, 23: 1},
}
LINES = 2000
SEED = 0
FILE = Path(__file__).with_name("synthetic-lengths.txt")


def length_probabilities() -> dict[int, float]:
    """P(L = l) for each unit length l (characters, the full stop included)."""
    total = sum(LENGTH_WEIGHTS.values())
    return {length: w / total for length, w in LENGTH_WEIGHTS.items()}


def length_cdf(lengths: np.ndarray) -> np.ndarray:
    """P(L <= x) for each x in ``lengths``."""
    probs = length_probabilities()
    support = np.array(sorted(probs))
    cum = np.cumsum([probs[k] for k in support])
    idx = np.searchsorted(support, np.asarray(lengths), side="right") - 1
    return np.where(idx >= 0, cum[np.clip(idx, 0, None)], 0.0)


def unit_text(length: int) -> str:
    assert 2 <= length <= len(string.ascii_lowercase) + 1
    return string.ascii_lowercase[: length - 1] + "."


def make_text(lines: int = LINES, seed: int = SEED) -> str:
    rng = random.Random(seed)
    support = sorted(LENGTH_WEIGHTS)
    lengths = rng.choices(support, weights=[LENGTH_WEIGHTS[k] for k in support], k=lines)
    return "".join(unit_text(n) + "\n" for n in lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=LINES)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, default=FILE)
    args = parser.parse_args()
    args.out.write_text(make_text(args.lines, args.seed), encoding="utf-8")
    print(f"wrote {args.lines} units to {args.out}")


if __name__ == "__main__":
    main()
