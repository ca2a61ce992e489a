"""Every prompt the Chain-of-Agents agents send, in one place, overridable by the user.

Adapted from Chain-of-Agents (Zhang et al., NeurIPS 2024, Appendix: worker and manager prompts), with two changes:
- the worker prompt puts the segment first ([system][segment][previous notes][question][task]) so the prefix
  that does not depend on the question can keep its KV cache across questions (DESIGN.md);
- a worker that finds nothing relevant answers a fixed marker, and the agent passes the previous notes on
  unchanged, instead of writing "I don't know" into the chain (a failure the paper reports).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

NOTHING_RELEVANT = "NOTHING RELEVANT"


@dataclass(frozen=True)
class Prompts:
    worker_system: str = (
        "You are a careful reader. You read one part of a long document at a time and keep notes that "
        "other readers will continue."
    )
    segment_heading: str = "Source text (part {number}):\n"
    previous_notes_heading: str = "\n\nNotes on the earlier parts:\n"
    no_notes_yet: str = "(none yet: this is the first part)"
    worker_query_task: str = (
        "Question: {question}\n\n"
        "Read the source text and the notes on the earlier parts. Rewrite the notes so that they keep every "
        "fact from both that helps answer the question, quoting names, numbers and key phrases exactly. "
        "Write only the notes. If the source text holds nothing relevant to the question, reply with exactly: "
        + NOTHING_RELEVANT
    )
    worker_summary_task: str = (
        "Read the source text and the notes on the earlier parts. Write a detailed summary that covers both: "
        "the events, people, places and ideas in order. Later readers will continue it, and the final summary "
        "of the whole document will be written from it alone. Write only the summary."
    )
    manager_system: str = (
        "You answer questions about a long document. The document was too long to read at once, so readers "
        "went through it in order and left notes; you have only their notes."
    )
    manager_query_task: str = (
        "Notes on the document:\n{notes}\n\nQuestion: {question}\n\n"
        "Answer the question from the notes. If the notes do not contain the answer, say so."
    )
    manager_summary_task: str = (
        "Notes on the document:\n{notes}\n\n"
        "Write a well-organised summary of the whole document from these notes."
    )
    nothing_relevant: str = NOTHING_RELEVANT

    def with_overrides(self, **changes: str) -> "Prompts":
        return replace(self, **changes)


DEFAULT_PROMPTS = Prompts()

# Phrases a worker writes when it found nothing, despite being asked for the marker (small models do this).
NOTHING_FOUND_PHRASES = (
    "nothing relevant",
    "no relevant information",
    "i don't know",
    "i do not know",
    "does not contain any information",
    "doesn't contain any information",
    "does not mention",
    "there is no information",
    "not enough information",
)
