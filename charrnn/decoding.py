"""Text as tokens arrive: incremental decoding.

A sample is drawn token by token, but text is what a reader wants to see. ``IncrementalDecoder``
turns a growing token sequence into the text each new token adds: the new suffix of
``decode(tokens so far)``. At word level the detokenizer decides spacing from the words before,
so decoding the new token alone would be wrong; decoding everything and handing out the suffix
is always right.
"""

from __future__ import annotations

from collections.abc import Sequence

from charrnn.tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"  # what a byte-level decoder shows for a character not yet complete


class IncrementalDecoder:
    """Hands out the text that new tokens add to ``decode(prefix + tokens so far)``.

    For char and word levels decoding only ever appends, so the pieces join up to exactly the
    decoded text. A decoder that rewrites earlier text (a byte-level subword piece completing a
    character) is waited for: a trailing replacement character is held back until it resolves.
    """

    def __init__(self, tokenizer: Tokenizer, prefix: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prefix)
        self.shown = ""  # the text handed out so far
        self._dirty = True

    def feed(self, token: int) -> None:
        self.ids.append(token)
        self._dirty = True

    def take(self, final: bool = False) -> str:
        """The text added since the last call ("" when nothing new is settled)."""
        if not self._dirty and not final:
            return ""
        self._dirty = False
        text = self.tokenizer.decode(self.ids)
        if not final:
            text = text.rstrip(_INCOMPLETE)
        if not text.startswith(self.shown):
            if not final:
                return ""  # earlier text changed; wait until the decode extends it again
            common = len(_common_prefix(text, self.shown))
            self.shown = text
            return text[common:]
        new = text[len(self.shown) :]
        self.shown = text
        return new

    def push(self, token: int) -> str:
        """``feed`` then ``take``."""
        self.feed(token)
        return self.take()


def _common_prefix(a: str, b: str) -> str:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return a[:n]
