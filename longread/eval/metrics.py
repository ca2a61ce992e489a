"""Scores of one answer, and bootstrap intervals of a mean.

- Short answers: `exact_match` and `contains_match` after SQuAD's normalisation (lower case, no punctuation, no
  articles, single spaces), and SQuAD's `token_f1`; each the best over the gold answers.
- Multiple choice: `choice_letter` reads the letter a reply chose ("The answer is (B)", "B)", "**B**",
  "Answer: b", "(B) the option's text", or the option's text quoted without a letter); `letter_accuracy`.
- True/false: `truth_value` reads "True"/"False" (also "yes"/"no" at the start).
- Summaries: `rouge_l`, ROUGE-L F1 by Google's `rouge-score` package (stemmed), the best over the references;
  beside it what ROUGE does not see: `repeated_sentences` (sentences that repeat an earlier one) and
  `repeated_3gram_share`, `unsupported_per_100_words` (names and numbers of the summary that the document lacks,
  per 100 words) and `coverage` (the share of the references' names and content words that the summary holds;
  the best reference).
- Aggregate questions: `list_f1` (F1 of the values a reply lists against every gold value) and `count_exact`
  (the reply's first number, in digits or words, equals the gold count).
- `score(case, answer)`: the case's main score (choice: letter, true/false: the value, short: contains, summary:
  ROUGE-L) and every metric that applies.
- `bootstrap_interval(values)`: the percentile bootstrap 95% interval of the mean (scipy), fixed seed.

The reading of letters and truth values is written here by hand: no library parses free-form replies for this.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from .cases import Case

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation + "‘’“”«»…–—")
_MARKUP = re.compile(r"[*_`#]+")


def normalize(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and articles removed, whitespace collapsed."""
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize(prediction)
    return float(any(pred == normalize(a) for a in answers))


def contains_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when some normalised gold answer occurs in the normalised reply as whole words."""
    pred = f" {normalize(prediction)} "
    return float(any(normalize(a) and f" {normalize(a)} " in pred for a in answers))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """SQuAD's token F1 of the normalised reply against each answer; the best."""
    pred = normalize(prediction).split()
    return max((_f1(pred, normalize(a).split()) for a in answers), default=0.0)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer  # heavy (nltk): only when a summary is scored

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F1 (rouge-score, Porter stemmer) against each reference; the best."""
    if not references:
        return 0.0
    return float(_rouge_scorer().score_multi(list(references), prediction)["rougeL"].fmeasure)


# -- multiple choice --------------------------------------------------------------------------------------------------
def choice_letter(reply: str, choices: Mapping[str, str]) -> str | None:
    """The letter of `choices` that `reply` chose, or None when it chose none (or several) recognisably.

    In order: an explicit "answer is (B)" / "Answer: b" / "option B"; a reply that starts with the letter ("B",
    "(B)", "B)", "B.", "**B**", "B: text"; a bare "A " only when the option's text follows, since "A" may be the
    article); a single distinct bracketed letter "(B)" anywhere; the text of exactly one option in the reply, or
    the reply inside exactly one option's text (3 words or more); the option whose words the reply shares most
    (token F1 at least 0.6, 0.15 ahead of the next); a single distinct capital letter standing alone ("..., B.").
    A lower-case letter counts only bracketed or before punctuation or the end ("answer is a man" is no "A").
    """
    letters = "".join(sorted(choices))
    if not letters or not reply.strip():
        return None
    text = _MARKUP.sub("", reply).strip()
    any_case = f"[{letters}{letters.lower()}]"
    # bracketed, either case | either case before punctuation or the end | a capital before a non-letter
    token = rf"(?:[(\[]\s*({any_case})\s*[)\]]|({any_case})(?=[).:,;]|\s*$)|([{letters}])(?![A-Za-z']))"
    explicit = re.search(
        rf"(?i:\b(?:answer|option|choice|letter)s?\b(?:\s+(?:is|would be|will be|should be))?\s*(?:[:=-]\s*)?"
        rf"(?:option\s+|choice\s+|letter\s+)?){token}",  # the words in any case, the letter as `token` says
        text,
    )
    if explicit:
        return _letter(explicit)
    leading = re.match(rf"[(\[]\s*({any_case})\s*[)\]]|({any_case})(?=[).:,;]|\s*$)|([{letters}])\s+(.+)", text,
                       re.DOTALL)
    if leading:
        if leading.group(1) or leading.group(2):
            return _letter(leading)
        letter, rest = leading.group(3), normalize(leading.group(4))
        option = normalize(choices[letter])
        if option and rest and (rest.startswith(option[:40]) or option.startswith(rest[:40])):
            return letter
    bracketed = {m.upper() for m in re.findall(rf"[(\[]\s*({any_case})\s*[)\]]", text)}
    if len(bracketed) == 1:
        return bracketed.pop()
    found = _by_option_text(text, choices)
    if found:
        return found
    # "A" followed by a word is the article; any other capital standing alone is a letter.
    alone = {m.group(1) for m in re.finditer(rf"(?<![A-Za-z'])([{letters}])(?![A-Za-z'])", text)
             if not (m.group(1) == "A" and re.match(r"\s+[a-z]", text[m.end():]))}
    return alone.pop() if len(alone) == 1 else None


def _letter(match: re.Match[str]) -> str:
    return next(g for g in match.groups()[:3] if g).upper()


def _by_option_text(text: str, choices: Mapping[str, str]) -> str | None:
    reply = normalize(text)
    options = {k: normalize(v) for k, v in choices.items()}
    quoted = [k for k, v in options.items() if v and f" {v} " in f" {reply} "]
    if quoted:  # one option's text may lie inside another's: the longest quoted one, if it is the only longest
        quoted.sort(key=lambda k: len(options[k]), reverse=True)
        if len(quoted) == 1 or len(options[quoted[0]]) > len(options[quoted[1]]):
            return quoted[0]
        return None
    if len(reply.split()) >= 3:
        inside = [k for k, v in options.items() if f" {reply} " in f" {v} "]
        if len(inside) == 1:
            return inside[0]
    scored = sorted(((_f1(reply.split(), v.split()), k) for k, v in options.items()), reverse=True)
    if scored and scored[0][0] >= 0.6 and (len(scored) == 1 or scored[0][0] - scored[1][0] >= 0.15):
        return scored[0][1]
    return None


def letter_accuracy(reply: str, choices: Mapping[str, str], gold: str) -> float:
    return float(choice_letter(reply, choices) == gold.upper())


# -- true / false -----------------------------------------------------------------------------------------------------
_TRUTH_WORDS = {"true": "True", "false": "False", "yes": "True", "no": "False"}


def truth_value(reply: str) -> str | None:
    """"True" or "False" as the reply says it: "the answer is false", a leading "True"/"Yes,"/"No.", else the
    first of the words true/false that occurs (None when neither does)."""
    text = _MARKUP.sub("", reply).lower()
    explicit = re.search(r"\b(?:answer|statement)\s+(?:is\s+)?(?:[:=-]\s*)?(true|false)\b", text)
    if explicit:
        return _TRUTH_WORDS[explicit.group(1)]
    # "yes"/"no" only as a word of its own ("No.", "Yes, ..."): "No one in the story" says nothing
    leading = re.match(r"\W*(?:(true|false)\b|(yes|no)(?=\s*[,.!;:]|\s*$))", text)
    if leading:
        return _TRUTH_WORDS[leading.group(1) or leading.group(2)]
    first = re.search(r"\b(true|false)\b", text)
    return _TRUTH_WORDS[first.group(1)] if first else None


def truth_accuracy(reply: str, answers: Sequence[str]) -> float:
    value = truth_value(reply)
    return float(value is not None and any(value.lower() == a.strip().lower() for a in answers))


# -- summaries beyond ROUGE --------------------------------------------------------------------------------------------
def summary_metrics(summary: str, references: Sequence[str], document: str | None = None) -> dict[str, Any]:
    """Repetition, unsupported entities (when the document is known) and coverage of a summary."""
    from .. import grounding

    words = len(summary.split())
    metrics: dict[str, Any] = {
        "repeated_sentences": len(grounding.repeated_sentences(summary)),
        "repeated_3gram_share": round(grounding.repeated_ngram_share(summary, 3), 4),
        "coverage": round(max((coverage(summary, r) for r in references), default=0.0), 4),
        "words": words,
    }
    if document is not None:
        missing = grounding.unsupported_entities(summary, document)
        metrics["unsupported"] = missing[:50]
        metrics["unsupported_per_100_words"] = round(100 * len(missing) / words, 3) if words else 0.0
    return metrics


def coverage(summary: str, reference: str) -> float:
    """The share of a reference's names and content words (stemmed) that the summary holds."""
    from .. import grounding

    wanted = {grounding.stem(w) for w in grounding.content_words(reference)} | grounding.names(reference)
    if not wanted:
        return 0.0
    held = grounding.stems(summary) | grounding.names(summary)
    return len(wanted & held) / len(wanted)


# -- aggregate questions -------------------------------------------------------------------------------------------------
_CITATION = re.compile(r"\((?:part|parts) \d+(?:, \d+)*\)", re.IGNORECASE)


def listed_values(reply: str, numeric: bool, question: str = "") -> set[str]:
    """The values a reply lists: its numbers (numeric gold), else its names; what the question itself says (its
    names, numbers and words: "Ships" opening the reply) does not count."""
    from .. import grounding

    asked = grounding.entities(question) | set(grounding.words(question))
    reply = _CITATION.sub("", reply)  # "(part 3)" says where an item was found; it lists no value
    found = grounding.numbers(reply) if numeric else grounding.names(reply)
    return {v for v in found if v not in asked}


def list_f1(reply: str, items: Sequence[str], question: str = "") -> tuple[float, float, float]:
    """(F1, precision, recall) of the values a reply lists against every gold value. A gold value counts as
    listed when it occurs in the reply as whole words (any case); precision's denominator is every distinct
    value the reply lists (`listed_values`), gold or not."""
    from .. import grounding

    if not items:
        return 0.0, 0.0, 0.0
    numeric = all(grounding.numbers(i) == {grounding.number_value(i)} for i in items)
    said = grounding.fold(reply).text
    if numeric:
        said_numbers = grounding.numbers(reply)
        found = {i for i in items if grounding.number_value(i) in said_numbers}
    else:
        found = {i for i in items if grounding.present(grounding.fold(i).text, said)}
    listed = listed_values(reply, numeric, question)
    gold_keys = {grounding.number_value(i) if numeric else grounding.fold(i).text for i in found}
    extra = {v for v in listed if v not in gold_keys and v not in {k.split()[0] for k in gold_keys if k}}
    predicted = len(found) + len(extra)
    recall = len(found) / len(items)
    precision = len(found) / predicted if predicted else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f1, precision, recall


_COUNT = re.compile(r"\b(\d+|" + "|".join(sorted(
    ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
     "seventeen eighteen nineteen twenty thirty forty fifty").split(), key=len, reverse=True)) + r")\b", re.I)
_COUNT_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"thirty": 30, "forty": 40, "fifty": 50}


def stated_count(reply: str, question: str = "") -> int | None:
    """The first number of a reply, in digits or words ("twelve"), that the question does not already hold."""
    asked = {m.group(1).lower() for m in _COUNT.finditer(question)}
    for match in _COUNT.finditer(reply):
        token = match.group(1).lower()
        if token in asked:
            continue
        return int(token) if token.isdigit() else _COUNT_WORDS[token]
    return None


# -- one case ---------------------------------------------------------------------------------------------------------
def score(case: "Case", answer: str, document: str | None = None) -> tuple[float, dict[str, Any]]:
    """(main score, every metric that applies) of an answer to a case; the main one is also in the dict.
    `document`: the case's text, for the metrics that check a summary against it."""
    task = case.task
    if task == "choice":
        letter = choice_letter(answer, case.choices or {})
        value = float(letter == case.answer)
        return value, {"letter_accuracy": value, "chosen": letter}
    if task == "truefalse":
        value = truth_accuracy(answer, case.answers)
        return value, {"truth_accuracy": value, "chosen": truth_value(answer)}
    if task == "summary":
        metrics = {"rouge_l": rouge_l(answer, case.references), "token_f1": token_f1(answer, case.references),
                   **summary_metrics(answer, case.references, document)}
        return metrics["rouge_l"], metrics
    if task == "list":
        f1, precision, recall = list_f1(answer, case.items, case.question or "")
        return f1, {"list_f1": f1, "precision": precision, "recall": recall}
    if task == "count":
        stated = stated_count(answer, case.question or "")
        value = float(stated == case.count)
        return value, {"count_exact": value, "stated": stated}
    metrics = {
        "contains": contains_match(answer, case.answers),
        "exact": exact_match(answer, case.answers),
        "token_f1": token_f1(answer, case.answers),
    }
    return metrics["contains"], metrics


MAIN_METRIC = {"choice": "letter_accuracy", "truefalse": "truth_accuracy", "summary": "rouge_l", "list": "list_f1",
               "count": "count_exact", "short": "contains"}


# -- intervals --------------------------------------------------------------------------------------------------------
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def bootstrap_interval(values: Sequence[float], *, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(mean, low, high): the percentile bootstrap interval of the mean, by scipy.stats.bootstrap with a fixed
    seed, so the same scores always give the same interval. Fewer than two values: (mean, nan, nan)."""
    data = [float(v) for v in values]
    if not data:
        return math.nan, math.nan, math.nan
    mean = sum(data) / len(data)
    if len(data) < 2:
        return mean, math.nan, math.nan
    if max(data) == min(data):  # every resample has the same mean
        return mean, mean, mean
    import numpy as np
    from scipy.stats import bootstrap

    result = bootstrap((np.asarray(data),), np.mean, confidence_level=level, n_resamples=resamples,
                       method="percentile", random_state=np.random.default_rng(seed), vectorized=True)
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)
