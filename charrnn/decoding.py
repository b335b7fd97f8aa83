"""Text as tokens arrive: incremental decoding, and stop strings watched on that text.

A sample is drawn token by token, but text is what a reader wants to see. ``IncrementalDecoder``
turns a growing token sequence into the text each new token adds: the new suffix of
``decode(tokens so far)``. At word level the detokenizer decides spacing from the words around,
so decoding the new token alone would be wrong; decoding everything and handing out the suffix
is always right. A sample longer than ``WINDOW`` tokens is decoded from its last ``CONTEXT``
tokens on, so that a token costs the same however long the text grows.

``TextWatch`` ends a sample's text at a stop string, at every level: it looks at the decoded
text, not at tokens, so a string that several tokens spell (or a token's middle) is found.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from charrnn.tokenizers import Tokenizer

_INCOMPLETE = "\ufffd"  # what a byte-level decoder shows for a character not yet complete
WINDOW = 4096  # tokens decoded at once at most, past the prefix
CONTEXT = 256  # tokens kept as context when the window moves on


class IncrementalDecoder:
    """Hands out the text that new tokens add to ``decode(prefix + tokens so far)``.

    For char and word levels decoding only ever appends, so the pieces join up to exactly the
    decoded text. A decoder that rewrites earlier text (a byte-level subword piece completing a
    character) is waited for: a trailing replacement character is held back until it resolves.
    ``show_prefix=False`` treats the prefix's text as handed out already (only its last
    ``CONTEXT`` tokens are decoded, once).
    """

    def __init__(self, tokenizer: Tokenizer, prefix: Sequence[int] = (), show_prefix: bool = True):
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prefix if show_prefix else prefix[-CONTEXT:])
        self.shown = "" if show_prefix else tokenizer.decode(self.ids).rstrip(_INCOMPLETE)
        self._alone = getattr(tokenizer, "joins_exactly", False)  # new tokens decode alone
        self._done = 0 if show_prefix else len(self.ids)  # ids handed out, when _alone
        self._dirty = True

    def feed(self, token: int) -> None:
        self.ids.append(token)
        self._dirty = True

    def take(self, final: bool = False) -> str:
        """The text added since the last call ("" when nothing new is settled)."""
        if not self._dirty and not final:
            return ""
        self._dirty = False
        if self._alone:
            new = self.tokenizer.decode(self.ids[self._done :])
            self.ids, self._done = [], 0
            return new
        held = 0 if final else self.tokenizer.unsettled(self.ids)  # a word joiner, say
        decoded = self.tokenizer.decode(self.ids[: len(self.ids) - held])
        text = decoded if final else decoded.rstrip(_INCOMPLETE)
        if not text.startswith(self.shown):
            if not final:
                return ""  # earlier text changed; wait until the decode extends it again
            common = len(_common_prefix(text, self.shown))
            self.shown = text
            return text[common:]
        new = text[len(self.shown) :]
        self.shown = text
        if len(self.ids) > WINDOW and text == decoded and not held:
            self.ids = self.ids[-CONTEXT:]  # the text before these is settled
            self.shown = self.tokenizer.decode(self.ids)
        return new

    def copy(self) -> IncrementalDecoder:
        twin = copy.copy(self)
        twin.ids = list(self.ids)
        return twin

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


class TextWatch:
    """A sample's text as its tokens arrive, ended at the first stop string.

    ``take`` hands out settled text as ``IncrementalDecoder`` does, but holds back an end that
    may be the start of a stop string. Once the text holds one (ending after the prefix), it
    hands out the text up to it (through it, with ``keep``), ``hit`` names it, and ``end`` is
    the text's length after the prefix (with ``show_prefix=False``) or in all.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        stops: Sequence[str],
        keep: bool,
        prefix: Sequence[int] = (),
        show_prefix: bool = True,
    ):
        self.decoder = IncrementalDecoder(tokenizer, prefix, show_prefix)
        self.stops, self.keep = tuple(stops), keep
        self.reach = max(len(s) for s in self.stops) - 1  # text before the new that can matter
        # the prefix's text is never cut nor held back, and ends no sample by itself
        self.floor = len(tokenizer.decode(prefix).rstrip(_INCOMPLETE)) if show_prefix else 0
        self.seen = self.decoder.shown[-self.reach :] if self.reach else ""  # text handed out
        self.pending = ""  # text held back
        self.released = 0  # characters handed out
        self.hit: str | None = None
        self.end: int | None = None

    def feed(self, token: int) -> None:
        self.decoder.feed(token)

    def copy(self) -> TextWatch:
        """An independent twin (beam search continues a hypothesis in several ways)."""
        twin = copy.copy(self)
        twin.decoder = self.decoder.copy()
        return twin

    def take(self, final: bool = False) -> str:
        if self.hit is not None:
            return ""
        new = self.decoder.take(final)
        if not new and not final:
            return ""
        buf = self.seen + self.pending + new
        start = len(self.seen)  # where the text not yet handed out begins in buf
        found = self._find(buf, start + len(self.pending))
        if found is not None:
            stop, stop_end = found
            cut = stop_end if self.keep else stop_end - len(stop)
            cut = max(cut, start, self.floor - (self.released - start))  # never into the prefix
            out = buf[start:cut]
            self.hit, self.end = stop, self.released + len(out)
        else:
            text = buf[start:]
            held = 0 if final else self._held(text)
            out, self.pending = text[: len(text) - held], text[len(text) - held :]
        self.released += len(out)
        self.seen = (self.seen + out)[-self.reach :] if self.reach else ""
        return out

    def _find(self, buf: str, new_at: int) -> tuple[str, int] | None:
        """The stop string that ends first in ``buf[new_at:]`` (past the prefix), the longest
        of those that end there, and where it ends."""
        offset = self.released - len(self.seen)  # buf[0]'s place in the text handed out
        best: tuple[str, int] | None = None
        for stop in self.stops:
            i = buf.find(stop, max(0, new_at - len(stop) + 1))
            while i >= 0 and offset + i + len(stop) <= self.floor:
                i = buf.find(stop, i + 1)
            if i < 0:
                continue
            end = i + len(stop)
            if best is None or end < best[1] or (end == best[1] and len(stop) > len(best[0])):
                best = (stop, end)
        return best

    def _held(self, text: str) -> int:
        """How much of the end of ``text`` may be the start of a stop string (past the prefix)."""
        past_floor = self.released + len(text) - self.floor
        for n in range(min(self.reach, len(text), max(past_floor, 0)), 0, -1):
            tail = text[-n:]
            if any(s.startswith(tail) for s in self.stops):
                return n
        return 0
