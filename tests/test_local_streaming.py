"""The local engine streams tokens as they are decoded: only the few tokens a loop could still remove wait.

The repetition guard removes a loop's repeats once the loop is complete, and streamed text cannot be taken back,
so the stream holds back what the guard may still drop (`RepetitionGuard.unsettled`), not a fixed 64 tokens.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from longread.backends.local.engine import TextStreamer
from longread.backends.local.generation import Decoding, RepetitionGuard


class CharTokenizer:
    """Token i is the character chr(97 + i): decoding is joining, so text positions are token positions."""

    def decode(self, ids, skip_special_tokens=True):  # noqa: ANN001
        return "".join(chr(97 + i) for i in ids)


def stream(tokens: list[int], guard: RepetitionGuard | None = None) -> tuple[list[str], list[int], list[int]]:
    """Feeds `tokens` through the engine's decoding rules with a streamer attached, as the engine does:
    (pieces streamed, final ids, tokens decoded when each piece was sent)."""
    guard = guard or RepetitionGuard()
    pieces: list[str] = []
    when: list[int] = []
    decoding = Decoding(len(tokens) + 1, eos_ids={-1}, guard=guard)
    streamer = TextStreamer(CharTokenizer(), lambda piece: (pieces.append(piece), when.append(decoding.decoded)),
                            guard)
    decoding.on_token = streamer.push
    for token in tokens:
        if not decoding.accept(token):
            break
    streamer.finish(CharTokenizer().decode(decoding.out))
    return pieces, decoding.out, when


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=160))
def test_what_was_streamed_is_never_taken_back_by_the_guard(tokens):
    # A four-token alphabet makes loops of every period up to the guard's common: the guard trims them.
    pieces, final, _ = stream(tokens)
    assert "".join(pieces) == CharTokenizer().decode(final)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 25), min_size=1, max_size=200, unique=True))
def test_text_that_does_not_repeat_streams_each_token_as_it_is_decoded(tokens):
    pieces, final, when = stream(tokens)
    assert final == tokens
    assert len(pieces) == len(tokens)  # one piece per token: nothing held back
    assert when == list(range(1, len(tokens) + 1))


def test_only_the_tokens_of_a_repeat_in_progress_wait():
    guard = RepetitionGuard()
    text = list(range(20))  # 20 distinct tokens
    assert guard.unsettled(text) == 0
    assert guard.unsettled(text + text[:5]) == 5  # may become a loop of period 20: those five wait
    assert guard.unsettled(text + [99]) == 0  # broken off: nothing waits
    # A fixed hold-back would have kept the last 64 tokens of every answer until its end.
    assert guard.holdback() == 64


def test_a_loop_streams_its_first_copy_and_never_its_repeats():
    block = [1, 2, 3, 0, 2]
    pieces, final, _ = stream([3, 3, 2] + block * 6)
    assert CharTokenizer().decode(final) == "".join(pieces)
    assert final.count(1) == 1 and len(final) < 3 + 2 * len(block)  # the repeats were dropped, one copy kept
