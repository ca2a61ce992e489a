"""Checks of model text against source text, by code: where a quote lies in its source, which names, numbers and
rare words a sentence commits to, and which of them a source does not hold.

Used by the reading agents (a worker's claims are kept only when their quotes are in the part and their specifics
are in the quotes: agents/claims.py; a summary's names and numbers must be in the document) and by the evaluation
(the summary metrics). Pure text, no model: the one place these rules live.

Written by hand: quote-finding with position mapping and OCR-like tolerance, and the "specifics" of a sentence,
are small and tied to how our agents write; difflib (the standard library) does the fuzzy part.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Sequence

# -- normalisation with a map back to the source ------------------------------------------------------------------
_QUOTES = str.maketrans({"‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"',
                         "´": "'", "`": "'", "–": "-", "—": "-", "‐": "-", "‑": "-", "\u00ad": ""})


@dataclass(frozen=True)
class Folded:
    """A text folded for matching (lower case, letters and digits, one space between words), and for each of its
    characters the index of the source character it came from."""

    text: str
    index: tuple[int, ...]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The source span of folded[start:end]."""
        return self.index[start], self.index[end - 1] + 1


def fold(text: str) -> Folded:
    """Lower case, quote marks and dashes unified, a word broken by a hyphen at a line end joined, every run of
    other characters one space. Keeps where each character came from."""
    out: list[str] = []
    index: list[int] = []
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        # "light-\nhouse" (a word broken at a line end) reads as "lighthouse"
        if ch in "-\u00ad" and out and out[-1] != " ":
            j = i + 1
            while j < n and text[j] in " \t\r":
                j += 1
            if j < n and text[j] == "\n":
                j += 1
                while j < n and text[j] in " \t":
                    j += 1
                if j < n and text[j].isalpha():
                    i = j
                    continue
        folded = unicodedata.normalize("NFKC", ch).translate(_QUOTES).lower()
        for c in folded:
            if c.isalnum():
                out.append(c)
                index.append(i)
            elif out and out[-1] != " ":
                out.append(" ")
                index.append(i)
        i += 1
    while out and out[-1] == " ":
        out.pop()
        index.pop()
    return Folded("".join(out), tuple(index))


# -- finding a quote -------------------------------------------------------------------------------------------------
MIN_QUOTE_WORDS = 3  # a shorter quote supports nothing by itself ("the", "he said")
FUZZY_RATIO = 0.88  # character similarity of a quote to its best window in the source: OCR-like slips pass
_ELLIPSIS = re.compile(r"\s*(?:\.\s*\.\s*\.|…|\[\.\.\.\])\s*")


def _find_exact(needle: str, folded: Folded) -> tuple[int, int] | None:
    hay = folded.text
    start = hay.find(needle)
    while start >= 0:
        end = start + len(needle)
        if (start == 0 or hay[start - 1] == " ") and (end == len(hay) or hay[end] == " "):
            return start, end
        start = hay.find(needle, start + 1)
    return None


def _find_fuzzy(needle: str, folded: Folded) -> tuple[int, int] | None:
    """The window of the source most like the needle, when it is like enough. Candidate windows are anchored on the
    needle's longest words (their positions in the source), so the cost is a few difflib comparisons."""
    hay = folded.text
    words = needle.split()
    anchors = sorted(set(words), key=len, reverse=True)[:3]
    best: tuple[float, int, int] | None = None
    offsets = {w: needle.find(w) for w in anchors}
    for word in anchors:
        if len(word) < 3:
            continue
        pos = hay.find(word)
        seen = 0
        while pos >= 0 and seen < 40:
            seen += 1
            start = max(0, pos - offsets[word] - 8)
            window = hay[start : start + len(needle) + 16]
            matcher = difflib.SequenceMatcher(None, needle, window, autojunk=False)
            blocks = [b for b in matcher.get_matching_blocks() if b.size]
            if blocks:
                matched = sum(b.size for b in blocks)
                ratio = matched / len(needle)
                if best is None or ratio > best[0]:
                    lo = start + blocks[0].b
                    hi = start + blocks[-1].b + blocks[-1].size
                    best = (ratio, lo, hi)
            pos = hay.find(word, pos + 1)
    if best is None or best[0] < FUZZY_RATIO:
        return None
    _, lo, hi = best
    # widen to whole words
    while lo > 0 and hay[lo - 1] != " ":
        lo -= 1
    while hi < len(hay) and hay[hi] != " ":
        hi += 1
    return lo, hi


def find_quote(quote: str, source: str | Folded) -> tuple[int, int] | None:
    """The (start, end) character span of `quote` in `source`, or None when it is not there.

    Tolerant of case, quote marks, dashes, whitespace, line-end hyphenation and small OCR-like differences (a
    character or two per phrase). A quote with an ellipsis ("The porter ... locker number 4471") is found when each
    piece is found, in order; the span covers them all. A quote of fewer than MIN_QUOTE_WORDS words is refused.
    """
    folded = source if isinstance(source, Folded) else fold(source)
    pieces = [fold(p).text for p in _ELLIPSIS.split(quote)]
    pieces = [p for p in pieces if p]
    if sum(len(p.split()) for p in pieces) < MIN_QUOTE_WORDS:
        return None
    spans = []
    cursor = 0
    for piece in pieces:
        if len(piece.split()) < 2 and len(pieces) > 1:
            continue  # a one-word fragment between ellipses says nothing on its own
        rest = Folded(folded.text[cursor:], folded.index[cursor:])
        hit = _find_exact(piece, rest) or _find_fuzzy(piece, rest)
        if hit is None or not numbers(piece) <= _folded_numbers(rest.text[hit[0] : hit[1]]):
            return None  # a slip of a letter passes; another number never does
        spans.append((hit[0] + cursor, hit[1] + cursor))
        cursor = hit[1] + cursor
    if not spans:
        return None
    return folded.span(spans[0][0], spans[-1][1])


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+|\n\s*\n")


def sentence_around(text: str, start: int, end: int, limit: int = 400) -> tuple[int, int]:
    """The span of the whole sentence(s) of `text` holding text[start:end], at most `limit` characters more than
    the span itself (so a manager reads a quote in its own words, not a worker's cut of it)."""
    lo = max(0, start - limit // 2)
    hi = min(len(text), end + limit // 2)
    head = text[lo:start]
    breaks = list(_SENTENCE_BREAK.finditer(head))
    new_start = lo + breaks[-1].end() if breaks else (0 if lo == 0 else start)
    tail = text[end:hi]
    after = _SENTENCE_BREAK.search(tail)
    new_end = end + after.start() if after else (len(text) if hi == len(text) else end)
    new_end = min(len(text), new_end)
    while new_end < len(text) and text[new_end - 1] not in ".!?" and text[new_end] in "\"'”’)]":
        new_end += 1
    return new_start, max(new_end, end)


# -- specifics: the names, numbers and rare words a sentence commits to ---------------------------------------------
# A compact list of English function and very common words: a claim's words outside it (and outside the question)
# are what it says that is new. No library ships one offline here (nltk's lists are a download).
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before being below between
    both but by can could did do does doing done down during each either else even ever every few for from further
    had has have having he her here hers herself him himself his how however i if in into is it its itself just
    least less like made make many may me might more most much must my myself neither no nor not now of off often on
    once one only or other others our ours ourselves out over own part per perhaps quite rather said same say says
    see seen she should since so some such than that the their theirs them themselves then there these they this
    those though through thus to too under until up upon us very was we were what whatever when where whether which
    while who whom whose why will with within without would yes yet you your yours yourself yourselves
    text source quote claim according called named answer question document story passage mentioned mentions
    states stated says tells told""".split()
)
# Words that start sentences in capitals without naming anything.
_SENTENCE_STARTERS = frozenset(
    """the a an he she it they we i you his her their its this that these those there here then when while after
    before during later finally eventually meanwhile however although though because since so but and or yet also
    in on at by for from with without into upon as if once one two three some many most all each every no not
    mr mrs ms dr sir miss lady lord saint st chapter part""".split()
)

_TITLES = frozenset("mr mrs ms dr sir madam miss lady lord captain st".split())
_TOKEN = re.compile(r"[A-Za-z][A-Za-z'’\-]*|\d[\d,]*(?:\.\d+)?")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"“(]\s*)$")
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}


_QUANTITY_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split()) if i >= 2} | {"thirty": "30", "forty": "40", "fifty": "50",
                                                                "sixty": "60", "seventy": "70", "eighty": "80",
                                                                "ninety": "90", "hundred": "100"}


def quantities(text: str) -> set[str]:
    """Numbers in digits and in words from two up ("two hounds" states 2; "one" is left out: it is as often a
    pronoun or an article as a number)."""
    return numbers(text) | {_QUANTITY_WORDS[w] for w in words(text) if w in _QUANTITY_WORDS}


def number_value(text: str) -> str:
    """A number's canonical form: `7,465` and `7465` are one number, so are `12.` and `12`."""
    return text.replace(",", "").rstrip(".")


def numbers(text: str) -> set[str]:
    return {number_value(n) for n in _NUMBER.findall(text)}


def words(text: str) -> list[str]:
    """Lower-case words of letters and digits."""
    return fold(text).text.split()


@lru_cache(maxsize=4096)
def stem(word: str) -> str:
    """A crude stem (the first six letters, common endings off), so 'planted' and 'plants' meet. Good enough to
    tell whether a claim's words come from its quote; no stemmer is needed for that."""
    for suffix in ("ings", "ing", "edly", "ed", "es", "s", "ly"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]  # "leave" and "leaves", "carve" and "carved" meet
    return word[:6]


def stems(text: str) -> set[str]:
    return {stem(w) for w in words(text)}


def content_words(text: str) -> list[str]:
    """Words that carry meaning: not a stopword, at least three characters (or a number)."""
    return [w for w in words(text) if (w.isdigit() or len(w) >= 3) and w not in STOPWORDS]


def names(text: str) -> set[str]:
    """Capitalised words that name something, folded to lower case: every capitalised word that does not start a
    sentence, and one that does when it is not a common sentence opener. Possessives are cut ("Ada's" -> "ada")."""
    found: set[str] = set()
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if not token[0].isupper():
            continue
        word = re.sub(r"['’]s$", "", token).strip("'’-").lower()
        if len(word) < 2:  # "I", and an option's letter: no name
            continue
        at_start = bool(_SENTENCE_START.search(text[max(0, match.start() - 3) : match.start()])) or match.start() == 0
        if at_start and (word in _SENTENCE_STARTERS or word in STOPWORDS):
            continue
        if word in STOPWORDS or word in _TITLES:
            continue
        found.add(word)
    return found


def entities(text: str) -> set[str]:
    """The names and numbers of a text (what a reader can check against a source)."""
    return names(text) | numbers(text)


def present(word: str, folded_source: str) -> bool:
    """Whether a folded word or phrase occurs in folded source text as a whole word (or words)."""
    return not word or f" {word} " in f" {folded_source} "


def unsupported(items: Iterable[str], source: str | Folded) -> list[str]:
    """The items (names, words or numbers) that the source does not hold. Numbers are compared by value, so
    `7,465` in the source supports `7465`."""
    folded = source.text if isinstance(source, Folded) else fold(source).text
    source_numbers = None if isinstance(source, Folded) else numbers(source)
    out = []
    for item in sorted(set(items)):
        if _NUMBER.fullmatch(item):
            known = source_numbers if source_numbers is not None else _folded_numbers(folded)
            if number_value(item) not in known:
                out.append(item)
        elif not present(" ".join(fold(item).text.split()), folded):
            out.append(item)
    return out


def _folded_numbers(folded: str) -> set[str]:
    """Numbers of folded text, where "7,465" became "7 465": digit groups of three after a number join it."""
    found: set[str] = set(folded.split())
    for match in re.finditer(r"\b\d{1,3}(?: \d{3})+\b", folded):
        found.add(match.group(0).replace(" ", ""))
    return {number_value(n) for n in found if n[:1].isdigit()}


LIST_MARKER = re.compile(r"^[ \t]*(?:\d{1,3}[.)]|[-*\u2022])[ \t]+", re.MULTILINE)  # "1. ", "2) ", "- " opening a line


def unsupported_entities(text: str, source: str | Folded) -> list[str]:
    """The names and numbers of `text` that `source` lacks (a summary's inventions). A list's item numbers ("1.",
    "2)") are its layout, not numbers it states."""
    return unsupported(entities(LIST_MARKER.sub("", text)), source)


# -- sentences and repetition -----------------------------------------------------------------------------------------
_SPLIT_SENTENCES = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|\n+")


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) character spans of a text's sentences (paragraph breaks end one too)."""
    spans, start = [], 0
    for match in _SPLIT_SENTENCES.finditer(text):
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return [(lo + len(text[lo:hi]) - len(text[lo:hi].lstrip()), hi) for lo, hi in spans]


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SPLIT_SENTENCES.split(text) if s and s.strip()]


def sentence_key(sentence: str) -> str:
    return " ".join(words(sentence))


def repeated_sentences(text: str) -> list[str]:
    """Sentences that occur more than once (folded), each listed once per extra occurrence."""
    seen: set[str] = set()
    repeats = []
    for sentence in sentences(text):
        key = sentence_key(sentence)
        if len(key.split()) < 3:
            continue
        if key in seen:
            repeats.append(sentence)
        seen.add(key)
    return repeats


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """The share of a text's word n-grams that repeat an earlier n-gram of the same text (0: none)."""
    tokens = words(text)
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        if gram in seen:
            repeats += 1
        seen.add(gram)
    return repeats / len(grams)


def without_repeats(text: str) -> tuple[str, list[str]]:
    """The text with every sentence that repeats an earlier one (folded) removed, and the removed sentences.
    Paragraph and line breaks are kept (a list stays a list)."""
    seen: set[str] = set()
    removed: list[str] = []
    paragraphs = []
    for paragraph in re.split(r"\n\s*\n", text):
        lines = []
        for line in paragraph.split("\n"):
            kept = []
            for sentence in sentences(line):
                key = sentence_key(sentence)
                if len(key.split()) >= 3 and key in seen:
                    removed.append(sentence)
                    continue
                seen.add(key)
                kept.append(sentence)
            if kept:
                lines.append(" ".join(kept))
        if lines:
            paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs), removed


def overlap(text: str, source: Sequence[str] | str) -> float:
    """The share of `text`'s content words (stemmed) found in `source`'s."""
    mine = {stem(w) for w in content_words(text)}
    if not mine:
        return 0.0
    theirs = stems(source if isinstance(source, str) else " ".join(source))
    return len(mine & theirs) / len(mine)
