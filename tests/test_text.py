from pathlib import Path

import pytest

from charrnn.config import Unit
from charrnn.corpus import read_text
from charrnn.errors import CorpusError
from charrnn.text import (
    iter_sample,
    iter_text,
    iter_unit_blocks,
    iter_units,
    resolve_unit,
    split_units,
)


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "c.txt"
    path.write_bytes(data)
    return path


def test_bom_dropped_and_line_endings_normalised(tmp_path):
    path = write(tmp_path, "\ufeffone\r\ntwo\rthree\n".encode())
    assert read_text(path) == "one\ntwo\nthree\n"


def test_crlf_split_across_chunks_becomes_one_newline(tmp_path):
    path = write(tmp_path, b"ab\r\ncd\r\nef")
    for size in range(1, 8):
        assert "".join(iter_text(path, chunk_bytes=size)) == "ab\ncd\nef"


def test_multibyte_characters_split_across_chunks(tmp_path):
    text = "naïve café 日本語 🙂 done"
    path = write(tmp_path, text.encode())
    for size in range(1, 6):
        assert "".join(iter_text(path, chunk_bytes=size)) == text


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    path = write(tmp_path, b"hello \xff world")
    with pytest.raises(CorpusError, match="byte offset 6"):
        read_text(path)
    # the offset is exact even when the bad byte is in a later chunk
    with pytest.raises(CorpusError, match="byte offset 6"):
        "".join(iter_text(path, chunk_bytes=4))


def test_invalid_utf8_can_be_replaced(tmp_path):
    path = write(tmp_path, b"hello \xff world")
    assert read_text(path, errors="replace") == "hello \ufffd world"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.txt", "not found"),
        (lambda p: p, "is a directory"),
        (lambda p: write(p, b""), "empty"),
        (lambda p: write(p, b"  \n\n "), "empty"),
        (lambda p: write(p, b"\x7fELF\x00\x01\x02"), "binary"),
    ],
)
def test_unusable_corpora(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message):
        read_text(make(tmp_path))


def test_units():
    text = "a\n  b\n\n\n  c d\ne\n \n"
    assert split_units(text, Unit.paragraph) == ["a\n  b", "  c d\ne"]
    assert split_units(text, Unit.line) == ["a", "  b", "  c d", "e"]
    assert split_units(text, Unit.document) == ["a\n  b\n\n\n  c d\ne"]


def test_auto_unit():
    assert resolve_unit(Unit.auto, "one\ntwo\n") is Unit.line
    assert resolve_unit(Unit.auto, "one\n\ntwo\n") is Unit.paragraph
    assert resolve_unit(Unit.line, "one\n\ntwo\n") is Unit.line


@pytest.mark.parametrize("unit", [Unit.line, Unit.paragraph, Unit.document])
def test_streamed_units_equal_whole_text_units(unit):
    text = "para one\nline two\n\n  para two\n \n\n\npara three\nx\n" * 3
    for size in (1, 2, 3, 5, 7, 11, 64):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        streamed = [u for batch in iter_units(chunks, unit) for u in batch]
        assert streamed == split_units(text, unit)


@pytest.mark.parametrize("unit", [Unit.paragraph, Unit.document])
def test_long_units_are_handed_out_in_pieces_that_join_up(unit):
    text = "a long\nparagraph of\nlines\n\n" * 3 + "one\n \n\ntwo\nthree\n"
    for size in (1, 4, 9):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        units: list[str] = []
        pieces = 0
        for block in iter_unit_blocks(chunks, unit, max_open=8):
            got = block.units()
            pieces += block.open
            if block.continues:
                units[-1] += got.pop(0)
            units += got
            assert block.char_counts().tolist() == [len(u) for u in block.units()]
        assert units == split_units(text, unit)
        assert pieces > 0  # some unit was longer than max_open


def test_any_unicode_whitespace_makes_a_blank_line():
    text = "\u3000indented first\n\u3000\u00a0\nsecond\n\u2003\nthird"
    assert split_units(text, Unit.paragraph) == ["\u3000indented first", "second", "third"]
    blocks = list(iter_unit_blocks([text[:9], text[9:]], Unit.paragraph))
    assert [u for b in blocks for u in b.units()] == split_units(text, Unit.paragraph)


def test_byte_counts_of_units():
    text = "añb\n\n日本 🙂\n\nplain"
    blocks = list(iter_unit_blocks([text], Unit.paragraph))
    assert [n for b in blocks for n in b.byte_counts().tolist()] == [4, 11, 5]


def test_sample_reads_whole_lines_spread_over_the_file(tmp_path):
    lines = [f"line {i:05d} " + "x" * 40 for i in range(2000)]
    path = write(tmp_path, ("\r\n".join(lines) + "\r\n").encode())
    sample = "".join(iter_sample(path, 5000, window=1000))
    got = sample.splitlines()
    assert 50 < len(got) < 120 and all(g in lines for g in got)
    assert got[0] == lines[0] and got[-1] == lines[-1]  # from the start to the end
    assert "\r" not in sample
    assert "".join(iter_sample(path, 10**9)) == read_text(path)  # small: the whole file
    bad = write(tmp_path, b"ok\n" * 5000 + b"\xff\n" + b"ok\n" * 5000)
    with pytest.raises(CorpusError, match="byte offset 15000"):
        "".join(iter_sample(bad, 3000, window=1000))
