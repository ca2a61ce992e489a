"""Window budgets of the Chain-of-Agents agents.

For every call: tokens(prompt) + max_new_tokens <= W, counted with the model's own tokenizer.
segment budget = W - worker output cap - fixed instruction tokens - question tokens - previous-notes cap - margin.
The paper reserves nothing for the previous notes (the CU); we do, so a long CU can never push a call over W.
"""

from __future__ import annotations

from dataclasses import dataclass
from ..backends.base import ChatModel
from ..errors import WindowTooSmall
from .messages import Mode, manager_messages, worker_messages
from .prompts import Prompts

MIN_SEGMENT_TOKENS = 64
# Prompt pieces are tokenized together, segments alone: BPE merges across a join can move a count by a token
# or two, so we leave a few tokens spare.
JOIN_MARGIN = 8
DEFAULT_WINDOW_CAP = 8192


@dataclass(frozen=True)
class Budget:
    window: int
    segment_tokens: int  # the most document tokens one worker reads
    notes_tokens: int  # cap on a CU: the worker's max_new_tokens and the previous notes it receives
    answer_tokens: int  # the manager's max_new_tokens
    worker_overhead: int  # prompt tokens of a worker call with empty segment and notes
    manager_overhead: int
    focus_tokens: int = 0  # room for a guided chain's focus passages


def default_window(model: ChatModel) -> int:
    """The smaller of the model's context and 8192 (the local embedded model says 4096 itself)."""
    return min(model.context_window, DEFAULT_WINDOW_CAP)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def default_caps(window: int, mode: Mode) -> tuple[int, int]:
    """(notes cap, answer cap). Summary mode asks for relatively long notes and a long final text."""
    if mode == "summary":
        return _clamp(window // 8, 96, 1024), _clamp(window // 8, 128, 1024)
    return _clamp(window // 16, 64, 512), _clamp(window // 16, 64, 512)


def plan_budget(
    model: ChatModel,
    prompts: Prompts,
    mode: Mode,
    question: str | None,
    window: int | None = None,
    *,
    notes_tokens: int | None = None,
    answer_tokens: int | None = None,
    focus_tokens: int = 0,
) -> Budget:
    """`focus_tokens`: room a guided chain keeps in each worker's prompt for the passages it shows after the
    segment (their heading included), taken from the segment's budget."""
    window = window or default_window(model)
    default_notes, default_answer = default_caps(window, mode)
    notes_tokens = notes_tokens or default_notes
    answer_tokens = answer_tokens or default_answer

    worker_overhead = model.count_prompt_tokens(worker_messages(prompts, mode, question, "", "", 1)) + JOIN_MARGIN
    manager_overhead = model.count_prompt_tokens(manager_messages(prompts, mode, question, "")) + JOIN_MARGIN
    segment_tokens = window - notes_tokens - worker_overhead - notes_tokens - focus_tokens
    manager_total = manager_overhead + notes_tokens + answer_tokens
    if segment_tokens < MIN_SEGMENT_TOKENS or manager_total > window:
        raise WindowTooSmall(
            f"a window of {window} tokens is too small: the worker needs {worker_overhead} tokens of instructions "
            f"and question, {notes_tokens} for the previous notes, {notes_tokens} for its output and at least "
            f"{MIN_SEGMENT_TOKENS} for document text; the manager needs {manager_total}. "
            "Use a larger --window or a shorter question."
        )
    return Budget(window, segment_tokens, notes_tokens, answer_tokens, worker_overhead, manager_overhead, focus_tokens)
