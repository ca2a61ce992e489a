"""Needle-in-a-haystack cases: made-up facts hidden in a real book at chosen lengths and depths.

    longread eval needles --book moby_dick.txt --lengths 8000 32000 --depths 0 0.5 1 --seed 7 --out needles/

For each length, a stretch of the book (a seeded start, cut at sentence boundaries) is the haystack, measured in
tokens of tiktoken's o200k_base (the tokenizer is stated in every case's metadata); for each depth and kind one
document and one question are written:

- `single`: one fact ("... left a parcel in locker number 4471.") at the depth; the question asks for its value.
- `pair`: two facts that answer the question only together (A was born in the town T; the town T is known for
  its festival F; "what festival is the town where A was born known for?"). The first lies at the depth, the
  second half a document away (depth + 0.5, wrapped into 0..1), so the reader must carry the first to the second
  or the second back to the first.
- `distractor`: the single fact at the depth, and half a document away the same sentence with one identifying
  detail changed (another station, year or port) and so another value; the question names the true detail.
- `aggregate`: K facts of one template (K from `sizes`, 5 to 20 by default) spread evenly over the document, each
  with its own value ("One of the ships that ever sailed from Tharmouth was named the Drathel."); asked for all at
  once, as a list (`items`: scored by F1 of the values listed) and as a count (`count`: scored by exact count).
  A fixed retrieval budget cannot hold twenty of them: this is where reading every part must win. Depths do not
  apply (the facts go at (i + u)/K, u seeded in 0.15..0.85); one list and one count case per length and size.

Every name, number and word comes from the seed (invented syllables, random numbers), is checked not to occur in
the book, and cannot be guessed without reading the needle; the same seed gives the same files. Depth 0 puts a
needle before the first sentence and 1 after the last; others go to the sentence boundary nearest to that
fraction of the haystack's tokens. `metadata.depth` is the depth asked for, `metadata.needle_depths` where each
needle landed (the share of the haystack's tokens before it), `metadata.length` the length asked for and
`metadata.tokens` the document's real length.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .cases import Case, CaseError, write_cases

KINDS = ("single", "pair", "distractor")  # the default kinds
ALL_KINDS = (*KINDS, "aggregate")
AGGREGATE_SIZES = (5, 10, 20)
TOKENIZER = "o200k_base"

# A sentence ends at . ! ? and any closing quotes or brackets right after; the whitespace that follows is the gap.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s)")


# -- invented words -----------------------------------------------------------------------------------------------
_ONSETS = "b d f g h k l m n p r s t v z br dr gr kl tr th sh st".split()
_VOWELS = "a e i o u a e o ae ei ou".split()
_CODAS = ["", "", "n", "r", "l", "s", "m", "th", "x", "nd"]


def _syllable(rng: random.Random) -> str:
    return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(syllables))


class _Names:
    """Invented names, words and numbers, none of which occurs in the book or repeats within one case."""

    def __init__(self, rng: random.Random, book_lower: str):
        self.rng = rng
        self.book = book_lower
        self.used: set[str] = set()

    def _fresh(self, make) -> str:
        while True:
            value = make()
            key = value.lower()
            if key not in self.used and key not in self.book and len(key) >= 4:
                self.used.add(key)
                return value

    def person(self) -> str:
        return self._fresh(lambda: f"{_word(self.rng, 2).capitalize()} {_word(self.rng, 2).capitalize()}")

    def place(self) -> str:
        return self._fresh(lambda: _word(self.rng, 2).capitalize() + self.rng.choice(["by", "mouth", "wick", "ton", "ford"]))

    def word(self) -> str:
        return self._fresh(lambda: _word(self.rng, 3))

    def number(self, low: int = 1000, high: int = 9999) -> str:
        return self._fresh(lambda: str(self.rng.randint(low, high)))

    def name(self) -> str:
        return self._fresh(lambda: _word(self.rng, 2).capitalize())

    def year(self) -> str:
        return self._fresh(lambda: str(self.rng.randint(1701, 1849)))


# -- facts ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """One needle sentence, the question it answers, and which of its slots identify it (a distractor changes one
    of them) and which slot is the answer."""

    template: str
    sentence: str
    question: str
    slots: dict[str, str]
    keys: tuple[str, ...]
    answer: str  # the name of the answer slot

    @property
    def value(self) -> str:
        return self.slots[self.answer]


@dataclass(frozen=True)
class _Template:
    name: str
    sentence: str
    question: str
    slots: dict[str, str]  # slot -> the kind of name it takes
    keys: tuple[str, ...]
    answer: str

    def fill(self, names: _Names, given: dict[str, str] | None = None) -> Fact:
        slots = dict(given or {})
        for slot, kind in self.slots.items():
            if slot not in slots:
                slots[slot] = getattr(names, kind)()
        return Fact(self.name, self.sentence.format(**slots), self.question.format(**slots), slots, self.keys,
                    self.answer)


SINGLE_TEMPLATES = (
    _Template("locker", "The porter at {station} Station remembered long afterwards that {person} always left a parcel "
              "in locker number {number}.",
              "What locker number did {person} always leave a parcel in at {station} Station?",
              {"person": "person", "station": "place", "number": "number"}, ("person", "station"), "number"),
    _Template("orchard", "In the spring of {year}, {person} planted {number} pear trees on the hill above {village}.",
              "How many pear trees did {person} plant on the hill above {village} in the spring of {year}?",
              {"person": "person", "village": "place", "year": "year", "number": "number"},
              ("person", "village", "year"), "number"),
    _Template("chest", "Old {person} told only his nephew that the word which opened the iron chest in the cellar at "
              "{house} was {word}.",
              "According to old {person}, what word opened the iron chest in the cellar at {house}?",
              {"person": "person", "house": "place", "word": "word"}, ("person", "house"), "word"),
    _Template("barrels", "When the schooner {ship} sailed from {port}, she carried {number} barrels of oil in her hold.",
              "How many barrels of oil did the schooner {ship} carry when she sailed from {port}?",
              {"ship": "place", "port": "place", "number": "number"}, ("ship", "port"), "number"),
)


@dataclass(frozen=True)
class _PairTemplate:
    name: str
    first: str
    second: str
    question: str
    slots: dict[str, str]
    answer: str
    bridge: str  # the slot the two sentences share


PAIR_TEMPLATES = (
    _PairTemplate("festival", "{person} was born in the little town of {town}, though she seldom spoke of it.",
                  "The town of {town} is known far and wide for its yearly festival of {word}.",
                  "What yearly festival is the town where {person} was born known for?",
                  {"person": "person", "town": "place", "word": "word"}, "word", "town"),
    _PairTemplate("brig", "For many years {person} sailed aboard a brig called the {ship}.",
                  "The {ship} had been built at {port} in the year {year}.",
                  "In what year was the brig that {person} sailed aboard built?",
                  {"person": "person", "ship": "place", "port": "place", "year": "year"}, "year", "ship"),
    _PairTemplate("key", "{person} gave the little brass key to her cousin, {cousin}.",
                  "{cousin} lived alone in a narrow house at number {number} on {street} Lane.",
                  "At what house number did the cousin to whom {person} gave the little brass key live?",
                  {"person": "person", "cousin": "person", "number": "number", "street": "place"}, "number", "cousin"),
)


@dataclass(frozen=True)
class _AggregateTemplate:
    name: str
    sentence: str  # {where} and {value}
    list_question: str
    count_question: str
    where: str  # the kind of name the shared slot takes
    value: str  # "number" or "name"


AGGREGATE_TEMPLATES = (
    _AggregateTemplate("milestones", "A milestone on the old road to {where} was carved with the number {value}.",
                       "List every number carved on a milestone on the old road to {where}.",
                       "How many milestones on the old road to {where} were carved with a number?", "place", "number"),
    _AggregateTemplate("ships", "One of the ships that ever sailed from {where} was named the {value}.",
                       "List the names of all the ships that sailed from {where}.",
                       "How many ships sailed from {where}?", "place", "name"),
    _AggregateTemplate("hounds", "Among the hounds kept at {where} there was one called {value}.",
                       "List the names of every hound kept at {where}.",
                       "How many hounds were kept at {where}?", "place", "name"),
)


def aggregate_facts(rng: random.Random, names: _Names, size: int) -> tuple[_AggregateTemplate, str, list[str], list[str]]:
    """(template, the shared place, the K values, the K sentences)."""
    template = rng.choice(AGGREGATE_TEMPLATES)
    where = getattr(names, template.where)()
    # every value unique within the case and absent from the book
    values = [names.number() if template.value == "number" else names.name() for _ in range(size)]
    return template, where, values, [template.sentence.format(where=where, value=v) for v in values]


def single_fact(rng: random.Random, names: _Names) -> Fact:
    return rng.choice(SINGLE_TEMPLATES).fill(names)


def distractor_of(fact: Fact, rng: random.Random, names: _Names) -> Fact:
    """The same sentence with exactly one identifying slot changed, and so another value."""
    template = next(t for t in SINGLE_TEMPLATES if t.name == fact.template)
    changed = rng.choice(fact.keys)
    kept = {k: v for k, v in fact.slots.items() if k != changed and k != fact.answer}
    return template.fill(names, kept)


def pair_facts(rng: random.Random, names: _Names) -> tuple[str, str, str, str]:
    """(first sentence, second sentence, question, answer) of a two-needle fact."""
    template = rng.choice(PAIR_TEMPLATES)
    slots = {slot: getattr(names, kind)() for slot, kind in template.slots.items()}
    return (template.first.format(**slots), template.second.format(**slots), template.question.format(**slots),
            slots[template.answer])


# -- haystacks ----------------------------------------------------------------------------------------------------
class Book:
    """A book's text with its o200k token offsets and sentence ends, to cut token-exact stretches of it."""

    def __init__(self, text: str, name: str = "book"):
        from ..tokenizers import tiktoken_tokenizer

        self.text = text
        self.name = name
        self.lower = text.lower()
        self.tokenizer = tiktoken_tokenizer(TOKENIZER)
        self.starts = self.tokenizer.token_starts(text)
        self.tokens = len(self.starts)
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        self.sentence_ends = np.asarray(ends, dtype=np.int64)
        self.end_tokens = np.searchsorted(self.starts, self.sentence_ends)  # tokens before each sentence end

    def start(self, tokens: int, rng: random.Random) -> int:
        """A seeded sentence to start a stretch of `tokens` tokens after (-1: the book's start)."""
        if tokens >= self.tokens:
            raise CaseError(f"{self.name}: a length of {tokens:,} tokens needs a longer book (it has {self.tokens:,})")
        room = int(np.searchsorted(self.end_tokens, self.tokens - tokens))  # sentences that leave enough after them
        return rng.randrange(room) if room > 0 else -1

    def stretch(self, first: int, tokens: int) -> str:
        """The whole sentences after sentence `first` whose tokens come nearest to `tokens`."""
        start_char = int(self.sentence_ends[first]) if first >= 0 else 0
        start_token = int(self.end_tokens[first]) if first >= 0 else 0
        target = start_token + tokens
        i = int(np.searchsorted(self.end_tokens, target))
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self.end_tokens) and self.end_tokens[j] > start_token]
        if not candidates:
            return self.text[start_char:].strip()
        end = min(candidates, key=lambda j: abs(int(self.end_tokens[j]) - target))
        return self.text[start_char : int(self.sentence_ends[end])].strip()


def _insert(haystack: str, needles: Sequence[tuple[float, str]], tokenizer) -> tuple[str, list[float]]:
    """The haystack with each (depth, sentence) at the sentence boundary nearest to that share of its tokens;
    returns the text and each needle's real depth: the share of the haystack's tokens that lie before it."""
    starts = tokenizer.token_starts(haystack)
    total = max(1, len(starts))
    bounds = sorted({0, len(haystack), *(m.end() for m in _SENTENCE_END.finditer(haystack))})
    bound_tokens = np.searchsorted(starts, np.asarray(bounds, dtype=np.int64))
    chosen: list[tuple[int, int, str]] = []  # (boundary index, order, sentence)
    for order, (depth, sentence) in enumerate(needles):
        i = int(np.argmin(np.abs(bound_tokens - depth * total)))
        while i in {c[0] for c in chosen}:  # two needles never share a boundary
            i = i + 1 if i + 1 < len(bounds) else i - 1
        chosen.append((i, order, sentence))
    pieces, last = [], 0
    for i, _, sentence in sorted(chosen):
        position = bounds[i]
        pieces.append(haystack[last:position])
        # a sentence of its own: after the previous sentence's end, before the whitespace that follows it
        pieces.append(sentence + " " if position == 0 else " " + sentence)
        last = position
    pieces.append(haystack[last:])
    landed = {order: round(int(bound_tokens[i]) / total, 4) for i, order, _ in chosen}
    return "".join(pieces), [landed[o] for o in range(len(needles))]


def _depth_label(depth: float) -> str:
    return f"d{round(depth * 100):03d}"


def generate(book: Book, lengths: Iterable[int], depths: Iterable[float], seed: int, *, repeats: int = 1,
             kinds: Sequence[str] = KINDS, sizes: Sequence[int] = AGGREGATE_SIZES) -> list[tuple[Case, str]]:
    """(case, document text) for every length x depth x repeat x kind (aggregates: length x size x repeat, a list
    case and a count case each); the case's `path` is documents/<id>.txt."""
    lengths, depths = list(lengths), list(depths)
    for size in sizes:
        if not 1 <= size <= 200:
            raise CaseError(f"aggregate size {size} is outside 1..200")
    for depth in depths:
        if not 0.0 <= depth <= 1.0:
            raise CaseError(f"depth {depth} is outside 0..1")
    for length in lengths:
        if length < 200:
            raise CaseError(f"length {length} is too short for a haystack (at least 200 tokens)")
    unknown = set(kinds) - set(ALL_KINDS)
    if unknown:
        raise CaseError(f"unknown needle kind(s) {', '.join(sorted(unknown))} (known: {', '.join(ALL_KINDS)})")
    out: list[tuple[Case, str]] = []
    point_kinds = [k for k in kinds if k != "aggregate"]
    for length in lengths:
        first = book.start(length, random.Random(f"{seed}:haystack:{length}"))  # one stretch of the book per length
        if "aggregate" in kinds:
            for size in sizes:
                for repeat in range(repeats):
                    out += _aggregate_cases(book, length, size, repeat, seed, first)
        for depth in (depths if point_kinds else []):
            other = round((depth + 0.5) % 1.0, 6)  # where a second needle goes: half a document away
            for repeat in range(repeats):
                rng = random.Random(f"{seed}:fact:{length}:{depth}:{repeat}")
                names = _Names(rng, book.lower)
                fact = single_fact(rng, names)  # the same fact for the single and the distractor case
                for kind in point_kinds:
                    case, text = _case(book, kind, length, depth, other, repeat, seed, first, fact, names)
                    out.append((case, text))
    return out


def _case(book: Book, kind: str, length: int, depth: float, other: float, repeat: int, seed: int, first: int,
          fact: Fact, names: _Names) -> tuple[Case, str]:
    extra: dict[str, object] = {}
    if kind == "single":
        needles, question, answer = [(depth, fact.sentence)], fact.question, fact.value
        extra = {"template": fact.template}
    elif kind == "distractor":
        decoy = distractor_of(fact, random.Random(f"{seed}:decoy:{length}:{depth}:{repeat}"), names)
        needles, question, answer = [(depth, fact.sentence), (other, decoy.sentence)], fact.question, fact.value
        extra = {"template": fact.template, "distractor": decoy.sentence, "distractor_value": decoy.value}
    else:
        pair_rng = random.Random(f"{seed}:pair:{length}:{depth}:{repeat}")
        one, two, question, answer = pair_facts(pair_rng, _Names(pair_rng, book.lower))
        needles = [(depth, one), (other, two)]
    # The haystack leaves room for the needles (and the space before each), so the whole is `length` tokens.
    room = sum(book.tokenizer.count(" " + sentence) for _, sentence in needles)
    haystack = book.stretch(first, max(length - room, 50))
    text, landed = _insert(haystack, needles, book.tokenizer)
    case_id = f"needle-{kind}-{length}-{_depth_label(depth)}-{repeat}"
    metadata = {
        "kind": kind, "length": length, "depth": depth, "tokens": book.tokenizer.count(text),
        "needle_depths": landed, "needles": [s for _, s in needles], "tokenizer": TOKENIZER,
        "book": book.name, "seed": seed, "repeat": repeat, **extra,
    }
    case = Case(id=case_id, dataset=f"needle-{kind}", question=question, path=f"documents/{case_id}.txt",
                answers=(answer,), metadata=metadata)
    return case, text


def _aggregate_cases(book: Book, length: int, size: int, repeat: int, seed: int, first: int
                     ) -> list[tuple[Case, str]]:
    """One document with `size` facts of one template spread over it, and its list case and count case."""
    rng = random.Random(f"{seed}:aggregate:{length}:{size}:{repeat}")
    names = _Names(rng, book.lower)
    template, where, values, sentences = aggregate_facts(rng, names, size)
    needles = [((i + rng.uniform(0.15, 0.85)) / size, sentence) for i, sentence in enumerate(sentences)]
    room = sum(book.tokenizer.count(" " + sentence) for sentence in sentences)
    haystack = book.stretch(first, max(length - room, 50))
    text, landed = _insert(haystack, needles, book.tokenizer)
    out = []
    for ask in ("list", "count"):
        case_id = f"needle-aggregate-{ask}-{length}-k{size:02d}-{repeat}"
        metadata = {
            "kind": "aggregate", "ask": ask, "size": size, "length": length, "tokens": book.tokenizer.count(text),
            "needle_depths": landed, "needles": sentences, "template": template.name, "values": values,
            "tokenizer": TOKENIZER, "book": book.name, "seed": seed, "repeat": repeat,
        }
        question = (template.list_question if ask == "list" else template.count_question).format(where=where)
        gold = {"items": tuple(values)} if ask == "list" else {"count": size}
        # both cases read one document file: the list case's
        path = f"documents/needle-aggregate-{length}-k{size:02d}-{repeat}.txt"
        out.append((Case(id=case_id, dataset=f"needle-aggregate-{ask}", question=question, path=path,
                         metadata=metadata, **gold), text))  # type: ignore[arg-type]
    return out


def write_needles(book_path: str | Path, lengths: Iterable[int], depths: Iterable[float], seed: int,
                  out_dir: str | Path, *, repeats: int = 1, kinds: Sequence[str] = KINDS,
                  sizes: Sequence[int] = AGGREGATE_SIZES) -> tuple[Path, int]:
    """Writes OUT/documents/<id>.txt and OUT/cases.jsonl; returns (cases file, number of cases)."""
    from ..documents import load_document

    document = load_document(book_path)
    book = Book(document.text, Path(book_path).name)
    generated = generate(book, lengths, depths, seed, repeats=repeats, kinds=kinds, sizes=sizes)
    out = Path(out_dir)
    (out / "documents").mkdir(parents=True, exist_ok=True)
    for case, text in generated:
        (out / case.path).write_text(text, encoding="utf-8")  # type: ignore[operator]
    target = out / "cases.jsonl"
    write_cases(target, [case for case, _ in generated])
    return target, len(generated)
