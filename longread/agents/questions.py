"""What kind of question a reader is asked: one whose answer is spread over the whole document (`aggregate_question`)
is read by the chain (auto routes it there), and its claims are all kept (no conflict between two list items)."""

from __future__ import annotations

import re

# An aggregate question asks for everything of a kind, a count of things, or a comparison across the document.
# "How many barrels did the schooner carry?" asks for one stated figure (a subject follows "did"); "How many ships
# sailed from Tharmouth?" counts things the document names one by one (the counted noun is the verb's subject).
_AGGREGATE_WORDS = re.compile(
    r"^\s*(?:list|enumerate|name (?:all|every|each)|count)\b|\b(?:list (?:all|every|each|the)|every|all the|each of|"
    r"all of the|in total|altogether|how many times|how often|how many (?:different|distinct|separate|kinds?)|"
    r"compare|contrast|throughout the|across the)\b", re.IGNORECASE)
_HOW_MANY = re.compile(r"\bhow many\b(.*)", re.IGNORECASE | re.DOTALL)
_AUXILIARY = {"did", "do", "does", "will", "would", "could", "can", "should", "has", "have", "had", "is", "are", "was",
              "were", "must", "might", "may"}
_DETERMINERS = {"the", "a", "an", "his", "her", "their", "its", "my", "our", "your", "this", "that", "these", "those",
                "he", "she", "they", "it", "we", "i", "you"}
_IRREGULAR_PAST = {"came", "went", "kept", "held", "made", "built", "found", "lost", "left", "met", "stood", "fought",
                   "sold", "bought", "ran", "flew", "sank", "won", "wrote", "gave", "took", "saw", "grew"}


def aggregate_question(question: str) -> bool:
    """Whether a question's answer is spread over the document (a list, a count of named things, a comparison),
    so that retrieval's few excerpts cannot hold it. A heuristic on the wording: docs/strategies.md."""
    if _AGGREGATE_WORDS.search(question):
        return True
    match = _HOW_MANY.search(question)
    if not match:
        return False
    words = [w.strip("?.,;:!\"'") for w in match.group(1).split()][:12]
    for i, word in enumerate(words):
        low = word.lower()
        if low in _AUXILIARY:
            following = words[i + 1] if i + 1 < len(words) else ""
            # "did the schooner carry", "did Kelo plant": one figure stated once; "were kept": things counted
            passive = following.lower().endswith(("ed", "en")) or following.lower() in _IRREGULAR_PAST
            return bool(following) and passive and following.lower() not in _DETERMINERS
        if i > 0 and (low.endswith("ed") or low in _IRREGULAR_PAST):
            return True  # "how many ships sailed from ...": the counted things are the verb's subject
    return False


_LIST_WORDS = re.compile(
    r"^\s*(?:list|enumerate|name)\b|\b(?:list|name) (?:all|every|each)\b|^\s*(?:which|what|who)\b.*\b(?:every|all the|"
    r"all of the)\b", re.IGNORECASE)
_TOTAL_WORDS = re.compile(r"\b(?:in total|altogether|combined|sum|on average|average)\b", re.IGNORECASE)


def items_asked(question: str) -> str | None:
    """"count" for a question that counts things the document names one by one, "list" for one that asks for all
    of them; None for anything else (a comparison, a total of figures, one fact), which the manager writes. The
    readers' checked claims are the items, so code lists and counts them (grounded.py `items_answer`): a small
    manager shown twelve items writes two."""
    if not aggregate_question(question) or _TOTAL_WORDS.search(question):
        return None
    if _HOW_MANY.search(question):
        return "count"
    return "list" if _LIST_WORDS.search(question) else None


def listing_question(question: str) -> str:
    """A count question as the list its readers must make: "How many hounds were kept at Thingumby?" -> "List
    every one of the hounds that were kept at Thingumby." (a reader asked "how many" of its part answers none)."""
    match = _HOW_MANY.search(question)
    if not match:
        return question
    words = match.group(1).strip().rstrip("?.!").split()
    for i, word in enumerate(words):
        low = word.lower().strip(",;:")
        if i > 0 and low in {"did", "do", "does"}:  # "... birds did Ada see": no "that" clause reads right
            return f"List every one of the {' '.join(words[:i])} meant by this question: {question.strip()}"
        if i > 0 and (low in _AUXILIARY or low.endswith("ed") or low in _IRREGULAR_PAST):
            return f"List every one of the {' '.join(words[:i])} that {' '.join(words[i:])}."
    return f"List every one of the {' '.join(words)}."
