"""Sessions: the state kept between turns (continuing is reading one long prompt), picking the
next token by hand, interrupted turns, and the terminal loop driven through its input."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import charrnn
from charrnn.cli import app
from charrnn.errors import ConfigError
from charrnn.tokenizers import EOS

runner = CliRunner()
GREEDY = {"temperature": 0, "stop": "none", "max_tokens": 8}


@pytest.fixture(scope="module")
def model(trained_run):
    return charrnn.load(trained_run)


def turn_text(session, text: str) -> tuple[str, list[int]]:
    with session.say(text) as turn:
        shown = "".join(turn)
    return shown, turn.tokens


def test_continuing_a_session_is_reading_one_long_prompt(model):
    session = model.session(**GREEDY)
    first, tokens = turn_text(session, "The c")
    assert EOS not in tokens and len(tokens) == 8
    second, _ = turn_text(session, " and the d")
    (whole,) = model.samples(1, "The c" + first + " and the d", **GREEDY)
    assert second == whole.continuation and second
    third, _ = turn_text(session, "")  # Enter alone: it goes on
    (on,) = model.samples(1, "The c" + first + " and the d" + second, **GREEDY)
    assert third == on.continuation


def test_a_seeded_session_is_reproducible(model):
    def talk():
        s = model.session(temperature=1.0, seed=4, max_tokens=40, repeat_penalty=1.2)
        return [turn_text(s, t)[0] for t in ("The", "A bird", "")]

    assert talk() == talk()


def test_top_tokens_and_a_chosen_one(model):
    session = model.session(**GREEDY)
    session.say("The c").close()  # read, nothing drawn
    top = session.top(3)
    want = model.next_tokens("The c", k=3)
    assert [t.id for t in top] == [t.id for t in want]
    assert [t.prob for t in top] == pytest.approx([t.prob for t in want], abs=1e-5)
    assert sum(t.prob for t in session.top(1000)) == pytest.approx(1.0, abs=1e-5)
    piece = session.choose(top[1].id)
    assert piece == top[1].piece
    after, _ = turn_text(session, "")
    (whole,) = model.samples(1, "The c" + piece, **GREEDY)
    assert after == whole.continuation
    with pytest.raises(ConfigError):
        session.choose(0)


def test_an_interrupted_turn_keeps_what_was_drawn(model):
    session = model.session(temperature=0, stop="none", max_tokens=30)
    turn = session.say("The d")
    pieces = iter(turn)
    shown = next(pieces) + next(pieces)  # then Ctrl-C
    turn.close()
    drawn = model.tokenizer.decode(turn.tokens)
    assert shown and drawn.startswith(shown)
    session.say("").close()
    top = session.top(2)
    want = model.next_tokens("The d" + drawn, k=2)
    assert [t.prob for t in top] == pytest.approx([t.prob for t in want], abs=1e-5)


def test_a_turn_the_rule_ends_opens_a_new_unit(model):
    session = model.session(temperature=0.5, seed=1, stop="eos", max_tokens=400)
    for _ in range(3):
        with session.say("The cat") as turn:
            list(turn)
        if turn.ended:
            break
    assert turn.ended and turn.tokens[-1] == EOS
    assert session.at.offset == 1  # <sos> read: the next text starts a unit
    assert session.recent[-2:] == [EOS, 1]


def test_a_session_refuses_what_it_cannot_do(model):
    with pytest.raises(ConfigError, match="--beam"):
        model.session(beam=2)
    session = model.session()
    with pytest.raises(ConfigError, match="does not know"):
        session.say("日本")


# -- the terminal loop --------------------------------------------------------------------


def ck(trained_run: Path) -> list[str]:
    return ["-c", trained_run.name, "--checkpoints", str(trained_run.parent)]


def options() -> list[str]:
    return ["--temp", "0", "--stop", "none", "--max-tokens", "8"]


def test_the_interactive_loop_keeps_its_state(trained_run):
    args = ["sample", *ck(trained_run), "-i", *options()]
    result = runner.invoke(app, args, input="The c\n and the d\n")
    assert result.exit_code == 0, result.output
    turns = result.stdout.split("> ")
    assert turns[0] == "" and len(turns) == 4 and turns[-1] == "\n"  # two turns, then Ctrl-D
    turns = turns[1:]
    first, second = (t.removesuffix("\n") for t in turns[:2])
    prompt = "The c" + first + " and the d"
    long = runner.invoke(app, ["sample", *ck(trained_run), *options(), "-p", prompt, "--json"])
    assert json.loads(long.stdout)[0]["text"] == prompt + second


def test_the_interactive_loop_shows_and_picks_the_next_token(trained_run, model):
    args = ["sample", *ck(trained_run), "-i", *options(), "-p", "The c"]
    result = runner.invoke(app, args, input="/top 3\n2\n\n/reset\n/nope\n")
    assert result.exit_code == 0, result.output
    first = model.samples(1, "The c", **GREEDY)[0].continuation
    second_best = model.next_tokens("The c" + first, k=3)[1]
    assert f"{second_best.prob:.4f}" in result.stdout
    after = model.samples(1, "The c" + first + second_best.piece, **GREEDY)[0].continuation
    assert second_best.piece + "\n" + "> " + after in result.stdout
    assert "unknown command /nope" in result.stderr


def test_interactive_refuses_what_it_cannot_show(trained_run):
    for extra, needle in ((["-n", "2"], "-n"), (["--beam", "2"], "--beam"), (["--json"], "--json")):
        result = runner.invoke(app, ["sample", *ck(trained_run), "-i", *extra], input="")
        assert result.exit_code == 1 and needle in result.stderr
