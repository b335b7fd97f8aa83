import errno
import itertools
import threading
from dataclasses import replace

import numpy as np
import pytest

from charrnn import defaults
from charrnn.config import SPREAD_SECTIONS, DataConfig, Holdout, Level, TokenizerConfig, Unit
from charrnn.corpus import read_text
from charrnn.data import Dataset, LengthPlan, StreamBatches, prepare, resolve_data, reveal_points
from charrnn.data.batches import NEVER
from charrnn.data.encode import TOKENS_BIN, UNITS_NPY, _stream, _UnitIndex, encode_corpus
from charrnn.data.split import Split, trained_spans, trained_text
from charrnn.defaults import resolve_level
from charrnn.errors import CorpusError
from charrnn.evaluate import bits_per_byte, bits_per_char
from charrnn.model.lengths import EXACT, bucket_edges, bucketize
from charrnn.text import iter_sample, iter_text, iter_unit_blocks, split_units
from charrnn.tokenizers import EOS, PAD, SOS, UNK
from tests.conftest import VERSES, drifting_corpus


def tokenizer_config(level: Level) -> TokenizerConfig:
    return TokenizerConfig(level=level, vocab_size=320)  # small: sentencepiece trains fast


def test_memory_mapped_tokens_equal_an_in_memory_encode(corpus):
    for level in Level:
        ds, _ = prepare(corpus, DataConfig(tokenizer_config(level)))
        units = split_units(read_text(corpus), ds.unit)
        expected = ds.tokenizer.encode_units(units)
        assert isinstance(ds.tokens, np.memmap)
        assert np.array_equal(np.asarray(ds.tokens, dtype=np.int64), expected)
        assert ds.tokens.dtype == np.uint16
        assert ds.meta["n_units"] == len(units) == len(ds.units)
        assert ds.meta["n_chars"] == sum(len(u) + 1 for u in units)
        assert np.array_equal(ds.units[:, 0], np.flatnonzero(expected == SOS))
        assert (ds.folder / "tokenizer.model").exists() == (level in (Level.bpe, Level.unigram))


TRICKY = (
    "Première ligne, naïve <unk> café.\nSecond line of it\n\n"
    "日本語の段落 🙂\n<unk><unk>\n   \n\t\n"
    + "a long paragraph line\n" * 12
    + "\n\n\nthe end <unk>"
)


@pytest.mark.parametrize(
    ("level", "unit"),
    [
        (Level.char, Unit.paragraph),
        (Level.char, Unit.document),
        (Level.word, Unit.paragraph),
        (Level.word, Unit.document),
        (Level.bpe, Unit.paragraph),
        (Level.unigram, Unit.line),
    ],
)
def test_streamed_encoding_in_small_chunks_equals_an_in_memory_encode(tmp_path, level, unit):
    path = tmp_path / "tricky.txt"
    path.write_text(TRICKY * 3, encoding="utf-8")
    for chunk in (7, 50, 1 << 20):  # units cut into pieces; whole units; one chunk
        folder = tmp_path / f"{level.value}-{chunk}"
        folder.mkdir()
        tok, stats = encode_corpus(
            path, tokenizer_config(level), unit, "strict", folder, None, chunk
        )
        tokens = np.fromfile(folder / TOKENS_BIN, dtype=stats["dtype"]).astype(np.int64)
        units = split_units(read_text(path), unit)
        assert tokens.tolist() == tok.encode_units(units).tolist()
        rows = np.load(folder / UNITS_NPY)
        assert rows[:, 1].tolist() == [len(u) + 1 for u in units]
        assert rows[:, 2].tolist() == [len(u.encode()) + 1 for u in units]
        assert np.array_equal(rows[:, 0], np.flatnonzero(tokens == SOS))
        assert stats["n_unk"] == int(np.count_nonzero(tokens == UNK))


class _DiskFullAfter:
    """A token file that takes ``n`` writes, then fails as a full disk does."""

    def __init__(self, n: int):
        self.n, self.chunks = n, []

    def write(self, data) -> int:
        if len(self.chunks) == self.n:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.chunks.append(bytes(data))
        return len(self.chunks[-1])


@pytest.mark.parametrize("room", [0, 3])
def test_a_failed_token_write_is_raised_and_what_came_before_is_in_order(tmp_path, room):
    # the token file is written from a thread of its own, while the next block is encoded
    path = tmp_path / "c.txt"
    path.write_text(TRICKY * 3, encoding="utf-8")
    config = tokenizer_config(Level.char)
    (tmp_path / "ok").mkdir()
    tok, stats = encode_corpus(path, config, Unit.line, "strict", tmp_path / "ok", None, 20)
    whole = np.fromfile(tmp_path / "ok" / TOKENS_BIN, dtype=stats["dtype"])
    sink = _DiskFullAfter(room)
    blocks = iter_unit_blocks(iter_text(path, "strict", 20), Unit.line, max_open=20)
    index = _UnitIndex(tmp_path / "units.npy")
    with pytest.raises(OSError, match="No space left"):
        _stream(tok.encode_block, blocks, sink, index, whole.dtype)
    assert len(sink.chunks) == room
    written = np.frombuffer(b"".join(sink.chunks), dtype=whole.dtype)
    assert np.array_equal(written, whole[: len(written)])
    assert not [t for t in threading.enumerate() if t.name == "charrnn-writer"]


def test_char_level_with_a_large_alphabet(tmp_path):
    # more than 256 symbols: ids no longer fit a byte, Latin-1 and other text take other paths
    text = "".join(chr(c) for c in range(0x20, 0x200)) + "\n\nÀ <unk> b\n\n" + "日本\n"
    path = tmp_path / "big.txt"
    path.write_text(text * 2, encoding="utf-8")
    ds, _ = prepare(path, DataConfig(TokenizerConfig(level=Level.char)))
    assert ds.meta["vocab_size"] > 256
    expected = ds.tokenizer.encode_units(split_units(read_text(path), ds.unit))
    assert np.array_equal(np.asarray(ds.tokens, dtype=np.int64), expected)


def test_same_text_same_characters_at_every_level(corpus):
    """Bits per character compare across levels: every level sees the same units, characters
    and bytes, and validates on the same text."""
    # units of long words, then units of punctuation: tokens per character differ by level
    text = "Extraordinarily incomprehensible circumstances.\n\n" * 30
    text += "Ça va? Oui, oui; non: « 日本 »!\n\n" * 8
    corpus.write_text(text, encoding="utf-8")
    seen = {}
    for level in Level:
        ds, _ = prepare(corpus, DataConfig(tokenizer_config(level)))
        _, val = ds.split(0.1)
        seen[level] = (np.asarray(ds.units[:, 1:]).tolist(), val.n_chars, val.n_bytes)
        if level is not Level.word:  # these decode exactly
            seen[level] += (ds.tokenizer.decode(val.tokens),)
    first = seen[Level.char]
    assert first[2] > first[1]  # the text is not all ASCII: bytes and characters differ
    for level in Level:
        assert seen[level][:3] == first[:3], level
        assert seen[level][3:] in ((), first[3:])


def test_bits_per_char_and_per_byte_share_the_same_total(corpus):
    ds, _ = prepare(corpus, DataConfig())
    _, val = ds.split(0.1)
    bits = bits_per_char(1.0, val) * val.n_chars
    assert bits == pytest.approx(bits_per_byte(1.0, val) * val.n_bytes)
    assert bits == pytest.approx((len(val) - len(val.unit_starts)) / np.log(2))


def test_cache_hit_and_invalidation(corpus):
    config = DataConfig()
    ds1, cached1 = prepare(corpus, config)
    ds2, cached2 = prepare(corpus, config)
    assert (cached1, cached2) == (False, True)
    assert ds1.folder == ds2.folder
    # a changed setting re-encodes into another folder
    ds3, cached3 = prepare(corpus, DataConfig(unit=Unit.line))
    assert not cached3 and ds3.folder != ds1.folder
    # a changed file re-encodes too
    corpus.write_text(VERSES + "A new line of verse.\n", encoding="utf-8")
    ds4, cached4 = prepare(corpus, config)
    assert not cached4 and ds4.folder != ds1.folder
    assert ds4.meta["n_tokens"] != ds1.meta["n_tokens"]


def test_subword_cache_hit_and_invalidation(corpus):
    config = DataConfig(tokenizer_config(Level.bpe))
    ds1, cached1 = prepare(corpus, config)
    _, cached2 = prepare(corpus, config)
    assert (cached1, cached2) == (False, True)
    assert ds1.meta["tokenizer_sample_chars"] == len(read_text(corpus))  # small: all of it
    # settings a subword level does not use change nothing
    same = DataConfig(replace(config.tokenizer, min_freq=3, max_vocab=50))
    assert prepare(corpus, same)[1]
    for changed in (
        replace(config.tokenizer, vocab_size=330),
        replace(config.tokenizer, sample_chars=500),
        replace(config.tokenizer, level=Level.unigram),
    ):
        ds, cached = prepare(corpus, DataConfig(changed))
        assert not cached and ds.folder != ds1.folder
    ds, _ = prepare(corpus, DataConfig(replace(config.tokenizer, sample_chars=500)))
    assert ds.meta["tokenizer_sample_chars"] <= 500
    corpus.write_text(VERSES + "A new line of verse.\n", encoding="utf-8")
    assert not prepare(corpus, config)[1]


def test_a_dataset_folder_is_used_as_is(corpus):
    ds, _ = prepare(corpus, DataConfig())
    again, cached = prepare(ds.folder, DataConfig(TokenizerConfig(level=Level.word)))
    assert cached and again.tokenizer.level is Level.char


def test_damaged_dataset_folder_is_an_error(tmp_path):
    (tmp_path / "dataset.json").write_text("{broken")
    with pytest.raises(CorpusError, match=r"dataset\.json is not valid JSON"):
        Dataset(tmp_path)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(CorpusError, match="not a charrnn dataset"):
        Dataset(tmp_path)


def test_split_cuts_at_a_unit_boundary(corpus):
    ds, _ = prepare(corpus, DataConfig())
    train, val = ds.split(0.1)
    assert len(train) + len(val) == len(ds.tokens)
    assert val.tokens[0] == SOS and train.tokens[-1] == EOS
    assert 0.05 < len(val) / len(ds.tokens) < 0.2
    assert train.n_chars + val.n_chars == ds.meta["n_chars"]
    assert val.unit_starts[0] == 0 and np.all(val.tokens[val.unit_starts] == SOS)


def _markdown_like(tmp_path, n_paragraphs=272, giant_at=269):
    """Paragraphs of a few hundred characters, and near the end one giant block (a code
    listing, say): the first paragraph after 90% of the text comes only after the giant."""
    paragraphs = [f"Paragraph {i}: " + "some words here " * 30 for i in range(n_paragraphs)]
    paragraphs[giant_at] = "\n".join("    code line " + "x" * 60 for _ in range(300))
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    return path


def test_the_tail_split_holds_about_the_share_asked_for(tmp_path):
    """A validation split holds about --val-fraction of the text, whatever its units: cut at
    the unit boundary nearest to the share, or inside a unit when no boundary is near."""
    from charrnn.config import SplitCut

    one_unit = tmp_path / "one.txt"
    one_unit.write_text("abc def ghi " * 2000, encoding="utf-8")
    few = tmp_path / "few.txt"
    few.write_text("\n\n".join("word " * n for n in (3000, 2500, 2800, 40)) + "\n")
    for corpus in (_markdown_like(tmp_path), one_unit, few, drifting_corpus(tmp_path)):
        ds, _ = prepare(corpus, DataConfig(tokenizer=TokenizerConfig(level=Level.char)))
        for f in (0.1, 0.3):
            train, val = ds.split(f)
            share = val.n_chars / ds.meta["n_chars"]
            assert abs(share - f) <= 0.5 * f, (corpus.name, f, share)
            assert abs(len(val) / len(ds.tokens) - share) < 0.05
            assert train.n_chars + val.n_chars == ds.meta["n_chars"]
            assert train.n_bytes + val.n_bytes == ds.meta["n_bytes"]
            assert len(train) + len(val) == len(ds.tokens)
    # the rule of runs of format 4 and before is kept for them: on the markdown-like text it
    # validated on a sliver
    ds, _ = prepare(
        _markdown_like(tmp_path), DataConfig(tokenizer=TokenizerConfig(level=Level.char))
    )
    _, old = ds.split(0.1, cut=SplitCut.unit_after)
    assert old.n_chars / ds.meta["n_chars"] < 0.03


def test_spread_split_holds_out_the_tail_of_every_section(tmp_path):
    ds, _ = prepare(drifting_corpus(tmp_path), DataConfig(unit=Unit.line))
    stream = np.asarray(ds.tokens, dtype=np.int64)
    starts = np.append(ds.units[:, 0], len(stream))
    train, val = ds.split(0.1, Holdout.spread)
    # every unit is on exactly one side, whole, in the corpus's order
    in_val = np.isin(np.arange(len(ds.units)), _units_of(ds, val))
    for split, side in ((train, ~in_val), (val, in_val)):
        expected = np.concatenate(
            [stream[a:b] for a, b in zip(starts[:-1][side], starts[1:][side])]
        )
        assert len(split) == len(expected)
        assert np.array_equal(split.tokens[np.arange(len(split))], expected)
        assert np.all(split.tokens[split.unit_starts] == SOS)
        assert np.array_equal(split.unit_lengths(), np.diff(starts)[side] - 2)
    assert train.n_chars + val.n_chars == ds.meta["n_chars"]
    assert train.n_bytes + val.n_bytes == ds.meta["n_bytes"]
    # the tail of each twentieth of the text: validation units come from every part of it
    char_at = np.cumsum(ds.units[:, 1]) - ds.units[:, 1]  # where each unit starts, in chars
    sections = char_at[in_val] * SPREAD_SECTIONS // ds.meta["n_chars"]
    assert set(sections.tolist()) == set(range(SPREAD_SECTIONS))
    assert 0.05 < len(val) / len(ds.tokens) < 0.2
    # so its lengths are those of the whole corpus, where the tail's are the longest
    _, tail = ds.split(0.1)
    assert tail.unit_lengths().min() > train.unit_lengths().mean() * 1.5
    assert abs(val.unit_lengths().mean() / train.unit_lengths().mean() - 1) < 0.15


def _units_of(ds, split):
    """Indices of the corpus units that make up ``split`` (matched by their tokens)."""
    stream = np.asarray(ds.tokens, dtype=np.int64)
    ends = np.append(ds.units[1:, 0], len(stream))
    index = {stream[a:b].tobytes(): i for i, (a, b) in enumerate(zip(ds.units[:, 0], ends))}
    assert len(index) == len(ds.units)  # every unit its own
    joined = split.tokens[np.arange(len(split))].astype(np.int64)
    bounds = np.append(split.unit_starts, len(split))
    return [index[joined[a:b].tobytes()] for a, b in itertools.pairwise(bounds)]


def test_stream_batches_read_a_spread_split_as_one_stream(tmp_path):
    ds, _ = prepare(drifting_corpus(tmp_path), DataConfig(unit=Unit.line))
    train, _ = ds.split(0.1, Holdout.spread)
    assert not isinstance(train.tokens, np.ndarray)  # pieces of the memory map, not a copy
    joined = train.tokens[np.arange(len(train))].astype(np.int64)
    batches = StreamBatches(train, batch_size=3, seq_len=50)
    for k in range(batches.n_windows()):
        w = batches.window(k)
        for b in range(3):
            at = b * batches.stream_len + k * 50
            assert np.array_equal(w.x[b], joined[at : at + 50])


def test_spread_split_of_one_unit_falls_back_to_the_tail(corpus):
    ds, _ = prepare(corpus, DataConfig(unit=Unit.document))
    for a, b in zip(ds.split(0.1, Holdout.spread), ds.split(0.1)):
        assert len(a) == len(b) and a.n_chars == b.n_chars
        assert np.array_equal(a.unit_starts, b.unit_starts)


def test_stream_batches_carry_on_from_window_to_window(corpus):
    ds, _ = prepare(corpus, DataConfig())
    train, _ = ds.split(0.1)
    batches = StreamBatches(train, batch_size=4, seq_len=8)
    w0, w1 = batches.window(0), batches.window(1)
    assert w0.x.shape == (4, 8)
    # the targets are the inputs shifted by one; window 1 continues window 0 in each stream
    assert np.array_equal(w0.x[:, 1:], np.where(w0.y[:, :-1] == PAD, SOS, w0.y[:, :-1]))
    assert np.array_equal(w1.x[:, 0], np.where(w0.y[:, -1] == PAD, SOS, w0.y[:, -1]))
    # stream b starts b * stream_len tokens in
    stream = np.asarray(train.tokens, dtype=np.int64)
    assert np.array_equal(w1.x[2], stream[2 * batches.stream_len + 8 : 2 * batches.stream_len + 16])
    # predicting <sos> after <eos> is certain, so it is not a loss term
    assert not np.any(w0.y == SOS)


def _split_and_plan(corpus) -> tuple[Split, LengthPlan]:
    """The training split of ``corpus``, and a plan that shows some units' lengths."""
    ds, _ = prepare(corpus, DataConfig())
    train, _ = ds.split(0.1)
    edges = bucket_edges(512)
    return train, LengthPlan(edges, unknown=len(edges), p_hidden=0.5, p_from_start=0.5, seed=3)


def test_each_pass_starts_the_streams_elsewhere_on_the_text_read_as_a_ring(corpus):
    train, plan = _split_and_plan(corpus)
    fixed = StreamBatches(train, 4, 16, plan)
    moving = StreamBatches(train, 4, 16, plan, shift_seed=5)
    ring = np.asarray(train.tokens, dtype=np.int64)
    n = len(ring)
    assert ring[0] == SOS and ring[-1] == EOS  # the ring joins two units
    assert np.array_equal(fixed.window(3).x, moving.window(3).x)  # the first pass as before
    shifts = [moving.shift(e) for e in (1, 2, 3)]
    assert len(set(shifts)) == 3 and all(0 <= s < n for s in shifts)
    assert shifts == [StreamBatches(train, 4, 16, shift_seed=5).shift(e) for e in (1, 2, 3)]
    for k in range(len(moving)):  # every window of a pass, the one across the end included
        w = moving.window(k, epoch=2)
        at = (moving.offsets[:, None] + shifts[1] + k * 16 + np.arange(16)) % n
        assert np.array_equal(w.x, ring[at])
        inside = (w.x != SOS) & (w.x != EOS)
        assert np.all(w.halt[inside] == (w.y[inside] == EOS))


def test_stop_targets(corpus):
    ds, _ = prepare(corpus, DataConfig())
    train, _ = ds.split(0.1)
    edges = bucket_edges(512)
    plan = LengthPlan(edges, unknown=len(edges), p_hidden=0.0, p_from_start=1.0)
    b = StreamBatches(train, 2, 300, plan).window(0)
    x, y = b.x, b.y
    # halting: 1 exactly where the next token is <eos>, ignored on <sos> and <eos> inputs
    assert np.all(b.halt[(x != SOS) & (x != EOS)] == (y[(x != SOS) & (x != EOS)] == EOS))
    assert np.all(b.halt[(x == SOS) | (x == EOS)] == -1)
    # lengths shown from the first token: the last token of a unit is told 0 remain
    last = y == EOS
    assert np.all(b.remaining[last] == 0)
    # the length head learns only where the length is not yet shown: at <sos>
    assert np.all((b.length >= 0) == (x == SOS))
    first_sos = np.argwhere(x[0] == SOS)[0, 0]
    unit_len = np.argwhere(x[0, first_sos:] == EOS)[0, 0] - 1
    assert b.length[0, first_sos] == bucketize(unit_len, edges)


def test_hidden_lengths_are_unknown_and_trained_everywhere(corpus):
    ds, _ = prepare(corpus, DataConfig())
    train, _ = ds.split(0.1)
    edges = bucket_edges(512)
    plan = LengthPlan(edges, unknown=len(edges), p_hidden=1.0)
    b = StreamBatches(train, 2, 64, plan).window(0)
    assert np.all(b.remaining >= len(edges))  # "unknown", by offset in the unit
    assert np.all((b.length >= 0) == (b.x != EOS))
    # the offset: 0 on <sos>, then one more each token (exact below EXACT)
    assert np.all(b.remaining[b.x == SOS] == len(edges))
    after_sos = np.roll(b.x == SOS, 1, axis=1)
    after_sos[:, 0] = False
    assert np.all(b.remaining[after_sos] == len(edges) + 1)


def test_reveal_points_do_not_depend_on_a_units_own_length():
    # short and long units alternate; "not shown yet at offset j" must be as likely for both,
    # or an unknown length would hint "a long unit" and the rules would learn long lengths
    lengths = np.tile([5, 60], 20_000)
    plan = LengthPlan(bucket_edges(128), unknown=64, p_hidden=0.3, p_from_start=0.4, seed=7)
    k = reveal_points(plan, 0, lengths)
    for j in (1, 3, 5):
        short, long = (np.mean(k[i::2] > j) for i in (0, 1))
        assert abs(short - long) < 0.015
    assert np.mean(k == NEVER) == pytest.approx(0.3, abs=0.01)
    assert np.mean(k == 1) >= 0.7 * 0.4
    # a pure function of (seed, epoch, unit): the same again, another epoch differs
    assert np.array_equal(k, reveal_points(plan, 0, lengths))
    assert not np.array_equal(k, reveal_points(plan, 1, lengths))


def test_shown_lengths_count_down_to_the_end_of_each_unit(corpus):
    train, plan = _split_and_plan(corpus)
    batches = StreamBatches(train, 2, 64, plan)
    seen_shown = seen_hidden = 0
    for epoch in (0, 1):
        for k in range(len(batches)):
            b = batches.window(k, epoch)
            shown = b.remaining < plan.unknown
            seen_shown += int(shown.sum())
            seen_hidden += int((~shown & (b.x != EOS)).sum())
            # once shown, a unit's length stays shown and counts down (buckets are exact below
            # EXACT), reaching 0 before its <eos>
            for row in range(2):
                for t in range(1, 64):
                    if shown[row, t - 1] and b.x[row, t] != EOS:
                        before, now = b.remaining[row, t - 1], b.remaining[row, t]
                        assert shown[row, t] and now <= before
                        assert before >= EXACT or now == before - 1
            assert np.all(b.remaining[shown & (b.y == EOS)] == 0)
            # the length head learns exactly where the length is not shown (inside a unit)
            assert np.array_equal(b.length >= 0, ~shown & (b.x != EOS))
    assert seen_shown and seen_hidden  # the plan shows some units' lengths and hides others'


def test_auto_level_is_bpe_where_the_text_outlasts_the_budget_in_a_small_alphabet():
    auto = TokenizerConfig()  # the default: --level auto, --vocab-size 0
    text, budget = "The cat sat on the mat.\n", 150.0
    big = int(defaults.AUTO_BYTES_PER_SECOND * budget)
    bpe = replace(auto, level=Level.bpe, vocab_size=defaults.SUBWORD_VOCAB)
    assert resolve_level(auto, big, text, budget) == bpe
    assert resolve_level(auto, big - 1, text, budget).level is Level.char  # read many times
    assert resolve_level(auto, big, text, budget * 1.01).level is Level.char
    assert resolve_level(auto, 10**9, text).level is Level.char  # no budget: a long run
    many = "".join(chr(0x4E00 + i) for i in range(defaults.AUTO_MAX_SYMBOLS + 1))
    assert resolve_level(auto, big, many, budget).level is Level.char  # too many symbols
    # bpe only for a text it can encode in a tenth of the budget
    limit = defaults.SUBWORD_ENCODE_RATE * defaults.AUTO_ENCODE_SHARE * budget
    assert resolve_level(auto, int(limit), text, budget).level is Level.bpe
    assert resolve_level(auto, int(limit) + 1, text, budget).level is Level.char
    # what the user chose stays; a subword vocabulary of 0 gets SUBWORD_VOCAB
    assert resolve_level(replace(auto, vocab_size=700), big, text, budget).vocab_size == 700
    unigram = replace(auto, level=Level.unigram)
    assert resolve_level(unigram, 1, many) == replace(unigram, vocab_size=2048)
    char = replace(auto, level=Level.char)
    assert resolve_level(char, big, text, budget) == char


@pytest.mark.parametrize("holdout", list(Holdout))
@pytest.mark.parametrize("unit", [Unit.line, Unit.paragraph, Unit.document])
def test_the_text_pieces_learn_from_is_what_the_split_trains_on(tmp_path, holdout, unit):
    path = drifting_corpus(tmp_path)
    path.write_text(path.read_text().replace("0\n", "0\n\n"), encoding="utf-8")  # paragraphs
    ds, _ = prepare(path, DataConfig(TokenizerConfig(level=Level.char), unit=unit))
    trained, _ = ds.split(0.15, holdout)
    expected = ds.tokenizer.decode(trained.tokens[np.arange(len(trained))])
    got = trained_text(read_text(path), unit, 0.15, holdout)
    assert got == expected and 0.75 < len(got) / ds.meta["n_chars"] < 0.95


def test_a_runs_pieces_never_learn_its_validation_text(tmp_path):
    path = tmp_path / "tail.txt"
    lines = [f"the {w} sat on the mat" for w in ("cat", "dog", "hen") * 300]
    path.write_text("\n".join(lines + ["zyxwvu qzyxwv"] * 100) + "\n", encoding="utf-8")
    bpe = DataConfig(TokenizerConfig(level=Level.bpe, vocab_size=400))
    held = resolve_data(path, bpe, held_out=(0.1, Holdout.tail))
    assert held.tokenizer.held_out == 0.1 and "held_out" not in bpe.tokenizer.to_dict()
    for config, learned in ((bpe, True), (held, False)):
        ds, cached = prepare(path, config)
        pieces = [ds.tokenizer.piece(i) for i in range(ds.tokenizer.vocab_size)]
        assert not cached and any("zyx" in p for p in pieces) == learned
    # char and word vocabularies are the whole text's: nothing to hold out
    word = DataConfig(TokenizerConfig(level=Level.word))
    assert resolve_data(path, word, held_out=(0.1, Holdout.tail)) == word


def test_a_sample_of_a_long_text_is_drawn_from_the_spans_asked_for(tmp_path):
    lines = [f"line {i:05d} " + "x" * 40 for i in range(2000)]
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for val, holdout in ((0.1, Holdout.tail), (0.25, Holdout.spread)):
        spans = trained_spans(val, holdout)
        got = "".join(iter_sample(path, 20_000, window=1000, spans=spans)).splitlines()
        at = [lines.index(g) / len(lines) for g in got]
        assert len(got) > 300 and all(any(lo <= a < hi for lo, hi in spans) for a in at)
        assert max(at) > spans[-1][1] - 0.05  # spread to the last span's end


def test_auto_level_decided_for_a_corpus_and_budget(corpus):
    ds, _ = prepare(corpus, DataConfig())
    assert ds.tokenizer.level is Level.char  # no budget: auto is char
    assert resolve_data(corpus, DataConfig(), 60.0).tokenizer.level is Level.char  # a few KB
    ds, _ = prepare(corpus, resolve_data(corpus, DataConfig(), 1.0))
    assert ds.config.tokenizer == TokenizerConfig(level=Level.bpe, vocab_size=2048)
    again, cached = prepare(corpus, DataConfig(TokenizerConfig(level=Level.bpe)))
    assert cached and again.folder == ds.folder  # the same encoding, asked for by name
