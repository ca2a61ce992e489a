"""The memory controller of Self-Controlled Memory (Wang et al., arXiv:2304.13343), every step configurable.

For a question in a session the controller
1. **activation gate** decides whether archived memory is needed: `"llm"` asks the model SCM's yes/no question
   (one call), `"always"` and `"never"` skip the call;
2. **retrieval** ranks the session's items by w_recency * recency + w_relevance * relevance (+ w_keyword *
   keyword) and activates the top k (default 5), leaving out the flash memory, which the prompt carries anyway;
3. **summary gate**: when the activated items hold more than `budget` tokens (default 2000), each item over
   `summary_threshold` tokens (default 800) is replaced by its summary. A summary is written by the model once
   and stored with the item (`MemoryStream.set_summary`), so later activations reuse it without a call;
4. **fuse** builds the prompt [instructions][related memory][flash memory][question] so that
   prompt tokens + max_new_tokens <= window, counted with the model's own `count_prompt_tokens`: the
   lowest-ranked memory goes first, then what is left is truncated; the question and instructions never are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

from ..backends.base import CallTag, ChatModel, Completion, Message
from ..backends.calls import Call, Steps, adrive, drive
from ..errors import WindowTooSmall
from ..results import CallRecord
from ..tokenizers import Tokenizer, truncate_to_tokens
from .prompts import DEFAULT_MEMORY_PROMPTS, MemoryPrompts
from .retrieval import RetrievalConfig, Scored, rank
from .store import MemoryItem, MemoryStream

Gate = Literal["llm", "always", "never"]
_GATES = ("llm", "always", "never")
_YES = {"yes", "y", "a", "true"}
_NO = {"no", "n", "b", "false"}


def parse_yes_no(reply: str) -> bool | None:
    """True for yes / (A), False for no / (B), None when the reply says neither clearly."""
    found = re.findall(r"[a-z]+", reply.lower())
    if not found:
        return None
    if found[0] in _YES | _NO:
        return found[0] in _YES
    said_yes, said_no = "yes" in found, "no" in found
    return said_yes if said_yes != said_no else None


@dataclass(frozen=True)
class Recalled:
    """An activated item as it goes into the prompt: its text, or its summary when the summary gate chose it."""

    item: MemoryItem
    text: str
    tokens: int
    summarized: bool = False
    scored: Scored | None = None


@dataclass(frozen=True)
class Activation:
    question: str
    needed: bool  # what the activation gate decided
    memories: tuple[Recalled, ...]  # best first
    flash: MemoryItem | None
    calls: tuple[CallRecord, ...] = ()  # the model calls this activation made (gate, summaries)

    @property
    def tokens(self) -> int:
        return sum(m.tokens for m in self.memories)


@dataclass(frozen=True)
class FusedPrompt:
    messages: list[Message]
    prompt_tokens: int
    kept: tuple[Recalled, ...]  # the memories in the prompt, best first (the last one may be truncated)
    dropped: int  # lowest-ranked memories left out to fit the window
    truncated: bool  # a memory or the flash memory was cut


@dataclass
class MemoryController:
    model: ChatModel
    stream: MemoryStream
    activation: Gate = "llm"
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    top_k: int = 5
    budget: int = 2000  # tokens of activated memory above which long items are summarised
    summary_threshold: int = 800  # items over this many tokens are the ones summarised
    summary_tokens: int = 200  # max_new_tokens of a summary call
    gate_tokens: int = 4  # max_new_tokens of the yes/no call
    when_unsure: bool = True  # an unclear gate reply activates memory: a needless retrieval costs less than a lost fact
    window: int | None = None  # window of the controller's own calls (the model's context window when None)
    prompts: MemoryPrompts = DEFAULT_MEMORY_PROMPTS
    tokenizer: Tokenizer | None = None  # counts item tokens for the budget; the model's tokenizer when None
    calls: list[CallRecord] = field(default_factory=list)  # every call the controller made, in order

    def __post_init__(self) -> None:
        if self.activation not in _GATES:
            raise ValueError(f"activation must be one of {', '.join(_GATES)}; got {self.activation!r}")
        if self.tokenizer is None:
            self.tokenizer = self.model.tokenizer

    # -- 1. activation gate ---------------------------------------------------------------------------

    def gate_messages(self, question: str) -> list[Message]:
        return [{"role": "user", "content": self.prompts.activation.format(question=question)}]

    def gating(self, question: str) -> Steps[bool]:
        """The activation gate, written once for `needs_memory` and `aneeds_memory` (backends/calls.py)."""
        if self.activation != "llm":
            return self.activation == "always"
        completion = yield Call(self.model, self.gate_messages(question), self.gate_tokens, window=self.window,
                                tag=CallTag("controller", step="gate"))
        self._record(completion, self.gate_tokens)
        decision = parse_yes_no(completion.text)
        return self.when_unsure if decision is None else decision

    def needs_memory(self, question: str) -> bool:
        return drive(self.gating(question))

    async def aneeds_memory(self, question: str) -> bool:
        return await adrive(self.gating(question))

    # -- 2. retrieval ---------------------------------------------------------------------------------

    def retrieve(self, session: str, question: str, *, exclude: Sequence[int] = ()) -> list[Scored]:
        """The top_k items for the question, best first; marks them accessed."""
        scored = rank(self.stream, session, question, k=self.top_k, config=self.retrieval, exclude=exclude)
        self.stream.touch(s.item.id for s in scored)
        return scored

    # -- 3. summary gate ------------------------------------------------------------------------------

    def item_tokens(self, item: MemoryItem) -> int:
        same = getattr(self.stream.tokenizer, "name", None) == getattr(self.tokenizer, "name", object())
        return item.tokens if same else self.tokenizer.count(item.text)

    def to_summarize(self, scored: Sequence[Scored]) -> list[MemoryItem]:
        """Items the summary gate replaces by their summary: none unless the activated items exceed the budget."""
        if sum(self.item_tokens(s.item) for s in scored) <= self.budget:
            return []
        return [s.item for s in scored if self.item_tokens(s.item) > self.summary_threshold]

    def summary_messages(self, item: MemoryItem) -> list[Message]:
        words = max(1, int(self.summary_tokens * 0.6))  # about 0.75 words a token, with room to finish

        def messages(text: str) -> list[Message]:
            return [
                {"role": "system", "content": self.prompts.summary_system},
                {"role": "user", "content": self.prompts.summary.format(words=words, text=text)},
            ]

        # An item longer than the summariser's window is cut to fit it (rare: items are notes of bounded size).
        limit = self._limit()
        room = limit - self.summary_tokens - self.model.count_prompt_tokens(messages(""))
        if room < 16:
            raise WindowTooSmall(f"a summary call needs more than a window of {limit} tokens")
        text = truncate_to_tokens(item.text, self.tokenizer, room)
        while (excess := self.model.count_prompt_tokens(messages(text)) + self.summary_tokens - limit) > 0:
            text = truncate_to_tokens(text, self.tokenizer, self.tokenizer.count(text) - excess)
        return messages(text)

    def summarizing(self, item: MemoryItem) -> Steps[str]:
        """An item's summary, written and stored (backends/calls.py: `drive` or `adrive` runs it)."""
        completion = yield Call(self.model, self.summary_messages(item), self.summary_tokens, window=self.window,
                                tag=CallTag("controller", step="summary"))
        self._record(completion, self.summary_tokens)
        summary = completion.text.strip()
        self.stream.set_summary(item.id, summary)
        return summary

    def summarize(self, item: MemoryItem) -> str:
        return drive(self.summarizing(item))

    async def asummarize(self, item: MemoryItem) -> str:
        return await adrive(self.summarizing(item))

    def _recall(self, scored: Sequence[Scored], summaries: dict[int, str]) -> tuple[Recalled, ...]:
        recalled = []
        for s in scored:
            if s.item.id in summaries:
                text = summaries[s.item.id]
                recalled.append(Recalled(s.item, text, self.tokenizer.count(text), True, s))
            else:
                recalled.append(Recalled(s.item, s.item.text, self.item_tokens(s.item), False, s))
        return tuple(recalled)

    # -- 1-3 together ---------------------------------------------------------------------------------

    def activating(self, session: str, question: str) -> Steps[Activation]:
        """Gate, retrieve and summarise: the memory a call about `question` should see (written once for
        `activate` and `aactivate`: backends/calls.py)."""
        first = len(self.calls)
        flash = self.stream.flash(session)
        needed = yield from self.gating(question)
        scored = self.retrieve(session, question, exclude=[flash.id] if flash else []) if needed else []
        summaries = {}
        for item in self.to_summarize(scored):
            summaries[item.id] = item.summary if item.summary is not None else (yield from self.summarizing(item))
        return Activation(question, needed, self._recall(scored, summaries), flash, tuple(self.calls[first:]))

    def activate(self, session: str, question: str) -> Activation:
        return drive(self.activating(session, question))

    async def aactivate(self, session: str, question: str) -> Activation:
        return await adrive(self.activating(session, question))

    def activate_items(self, session: str, question: str) -> tuple[Recalled, ...]:
        """Retrieval and the summary gate without the activation gate: the top-k items for the question (the
        flash memory left out, since the prompt carries it anyway), long ones replaced by their summary when the
        activated items exceed the budget."""
        flash = self.stream.flash(session)
        scored = self.retrieve(session, question, exclude=[flash.id] if flash else [])
        summaries = {item.id: item.summary or self.summarize(item) for item in self.to_summarize(scored)}
        return self._recall(scored, summaries)

    def recall_for_manager(
        self,
        session: str,
        query: str,
        notes: str,
        fits: Callable[[list[str]], bool],
        *,
        in_document_order: bool = False,
    ) -> list[tuple[str, MemoryItem]]:
        """Archived notes for a chain's manager, best first, as many as `fits` accepts beside the last CU `notes`.

        Earlier questions and answers stay out (the chain reads the document, and an answer memory could not give
        is no evidence), and so does the flash memory when it is the last CU itself. `fits(texts)` says whether
        the manager's prompt with those texts and its answer cap still fits the window; each item is added only
        if it does. A summary's manager reads the story in order (`in_document_order`).
        """
        flash = self.stream.flash(session)
        exclude = [i.id for i in self.stream.items(session, kinds=("question", "answer", "turn"))]
        if flash is not None and flash.text == notes:
            exclude.append(flash.id)
        scored = rank(self.stream, session, query, k=self.top_k, config=self.retrieval, exclude=exclude)
        summaries = {item.id: item.summary or self.summarize(item) for item in self.to_summarize(scored)}
        chosen: list[tuple[str, MemoryItem]] = []
        for s in scored:
            text = summaries.get(s.item.id, s.item.text)
            if text.strip() == notes.strip() or not text.strip():
                continue
            if s.item.kind == "summary":
                candidate = self.prompts.recalled_summary.format(text=text)
            else:
                part = s.item.spans[0].segment + 1 if s.item.spans else "?"
                candidate = self.prompts.recalled_note.format(part=part, text=text)
            if fits([*(c for c, _ in chosen), candidate]):
                chosen.append((candidate, s.item))
        if in_document_order:
            chosen.sort(key=lambda pair: [sp.segment for sp in pair[1].spans] or [0])
        self.stream.touch(item.id for _, item in chosen)
        return chosen

    # -- 4. fuse --------------------------------------------------------------------------------------

    def fuse(
        self,
        question: str,
        flash: MemoryItem | None,
        activated: Sequence[Recalled | MemoryItem],
        window: int,
        max_new_tokens: int,
        instructions: str | None = None,
    ) -> list[Message]:
        """The answer prompt; tokens(prompt) + max_new_tokens <= window, always (see build_prompt)."""
        return self.build_prompt(question, flash, activated, window, max_new_tokens, instructions).messages

    def build_prompt(
        self,
        question: str,
        flash: MemoryItem | None,
        activated: Sequence[Recalled | MemoryItem],
        window: int,
        max_new_tokens: int,
        instructions: str | None = None,
    ) -> FusedPrompt:
        """fuse, with what was kept, dropped and truncated to fit."""
        limit = min(window, self.model.context_window)
        memories = [a if isinstance(a, Recalled) else Recalled(a, a.text, self.item_tokens(a)) for a in activated]
        if flash is not None:  # the flash memory is in the prompt already: do not repeat it as related memory
            memories = [m for m in memories if m.item.id != flash.id]
        system = self.prompts.answer_system if instructions is None else instructions
        count = self.model.count_prompt_tokens

        kinds = [m.item.kind for m in memories]

        def render(texts: list[str], flash_text: str | None) -> list[Message]:
            body = ""
            if texts:
                body += self.prompts.memory_heading + "".join(
                    self.prompts.memory_item.format(number=i + 1, text=t, kind=kinds[i]) for i, t in enumerate(texts)
                )
            if flash_text:
                body += self.prompts.flash_heading + flash_text + "\n"
            body += self.prompts.question_heading + question + self.prompts.answer_cue
            messages: list[Message] = [{"role": "system", "content": system}] if system else []
            return messages + [{"role": "user", "content": body.lstrip("\n")}]

        bare = count(render([], None))
        if bare + max_new_tokens > limit:
            raise WindowTooSmall(
                f"the instructions and question need {bare} prompt tokens + {max_new_tokens} new tokens, "
                f"over the window of {limit}"
            )
        texts, flash_text = [m.text for m in memories], (flash.text if flash is not None else None)
        messages = render(texts, flash_text)
        tokens = count(messages)
        if tokens + max_new_tokens <= limit:
            return FusedPrompt(messages, tokens, tuple(memories), 0, False)

        # Over the window: fill the free tokens greedily, flash first, then memories best first, cutting the first
        # piece that does not fit whole. Piece sizes are estimates (tokens merge at joins), so re-count and shrink.
        free = limit - max_new_tokens - bare
        tok = self.tokenizer
        truncated = False
        if flash_text is not None:
            cost = tok.count(self.prompts.flash_heading + flash_text + "\n")
            if cost > free:
                flash_text = truncate_to_tokens(flash_text, tok, free - tok.count(self.prompts.flash_heading) - 2)
                truncated = True
                cost = tok.count(self.prompts.flash_heading + flash_text + "\n") if flash_text else 0
            free -= cost
        kept: list[str] = []
        free -= tok.count(self.prompts.memory_heading)
        for i, text in enumerate(texts):
            line = self.prompts.memory_item.format(number=i + 1, text=text, kind=kinds[i])
            cost = tok.count(line)
            if cost <= free:
                kept.append(text)
                free -= cost
                continue
            frame = tok.count(self.prompts.memory_item.format(number=i + 1, text="", kind=kinds[i])) + 2
            if free - frame >= 16:  # a useful piece still fits: cut this memory instead of dropping it
                kept.append(truncate_to_tokens(text, tok, free - frame))
                truncated = True
            break
        while True:
            messages = render(kept, flash_text)
            tokens = count(messages)
            if tokens + max_new_tokens <= limit:
                break
            excess = tokens + max_new_tokens - limit
            if kept:
                room = tok.count(kept[-1]) - excess - 1
                if room >= 16:
                    kept[-1] = truncate_to_tokens(kept[-1], tok, room)
                    truncated = True
                else:
                    kept.pop()
            elif flash_text:
                flash_text = truncate_to_tokens(flash_text, tok, tok.count(flash_text) - excess - 1) or None
                truncated = True
            else:  # cannot happen: the bare prompt fits; kept for safety against a miscounting backend
                raise WindowTooSmall(f"cannot fit the prompt in a window of {limit}")
        kept_memories = tuple(
            m if m.text == text else Recalled(m.item, text, tok.count(text), m.summarized, m.scored)
            for m, text in zip(memories, kept)
        )
        return FusedPrompt(messages, tokens, kept_memories, len(memories) - len(kept), truncated)

    # -- bookkeeping ----------------------------------------------------------------------------------

    def _limit(self) -> int:
        return min(w for w in (self.window, self.model.context_window) if w is not None)

    def _record(self, completion: Completion, max_new_tokens: int) -> None:
        self.calls.append(CallRecord.of("controller", None, completion, max_new_tokens))
