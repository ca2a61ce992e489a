"""Every prompt the reading agents send, in one place, overridable by the user (`DEFAULT_PROMPTS.with_overrides`).

Adapted from Chain-of-Agents (Zhang et al., NeurIPS 2024, Appendix: worker and manager prompts), with changes
that docs/quality.md measures:
- the worker prompt puts the segment first ([system][segment][previous notes][question][task]) so the prefix
  that does not depend on the question can keep its KV cache across questions (docs/architecture.md);
- a worker that finds nothing relevant answers a fixed marker, and the agent passes the previous notes on
  unchanged, instead of writing "I don't know" into the chain (a failure the paper reports); only a reply that is
  the marker alone counts (see replies.py);
- evidence notes (`worker_evidence_task`, `worker_map_task`, chain option `notes=evidence|map`): the worker
  answers from its part with a quote and has no escape to take; code keeps the reply only if it is grounded in
  the part and appends it as an item naming the part (LLM x MapReduce's structured information);
- the manager given no notes says the document does not hold the answer, without a model call that could
  invent one (`not_found_answer`);
- the judge of multipath reading (the paper's section 5) compares the answers of several reading orders with
  their evidence; the reader prompt serves the one-call strategies (rag, truncate, full).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

NOTHING_RELEVANT = "NOTHING RELEVANT"


@dataclass(frozen=True)
class Prompts:
    # -- worker -------------------------------------------------------------------------------------------------
    worker_system: str = (
        "You are a careful reader. You read one part of a long document at a time and keep notes that "
        "other readers will continue."
    )
    segment_heading: str = "Source text (part {number}):\n"
    previous_notes_heading: str = "\n\nNotes on the earlier parts:\n"
    no_notes_yet: str = "(none yet: this is the first part)"
    # A guided chain shows each worker the passages of its part closest to the question, after the part.
    focus_heading: str = "\n\nThe passages of this part closest to the question:\n"
    focus_passage: str = "\"{text}\"\n"
    worker_query_task: str = (
        "Question: {question}\n\n"
        "Read the source text and the notes on the earlier parts. Rewrite the notes so that they keep every "
        "fact from both that helps answer the question, quoting names, numbers and key phrases exactly. "
        "Write only the notes. If the source text holds nothing relevant to the question, reply with exactly: "
        + NOTHING_RELEVANT
    )
    # Evidence notes (ChainStrategy(notes="evidence")): no escape to take; the reply is grounded in code.
    worker_evidence_task: str = (
        "Question: {question}\n\n"
        "Answer the question as well as the source text above allows, using the notes on the earlier parts if "
        "they help. Then copy, word for word in quotes, the sentence of the source text that your answer comes "
        "from. Write exactly two lines:\nAnswer: ...\nEvidence: \"...\""
    )
    worker_map_task: str = (
        "Question: {question}\n\n"
        "Answer the question as well as the source text above allows. Then copy, word for word in quotes, the "
        "sentence of the source text that your answer comes from. Write exactly two lines:\nAnswer: ...\n"
        "Evidence: \"...\""
    )
    worker_summary_task: str = (
        "Read the source text and the notes on the earlier parts. Write a detailed summary that covers both: "
        "the events, people, places and ideas in order. Later readers will continue it, and the final summary "
        "of the whole document will be written from it alone. Write only the summary."
    )
    nothing_relevant: str = NOTHING_RELEVANT
    # Grounded claims (ChainStrategy(notes="claims"), agents/claims.py): a worker lists claims, each with the exact
    # words of its part that show it; code checks every claim before it travels.
    claims_notes_heading: str = "\n\nChecked claims from the earlier parts:\n"
    no_claims_yet: str = "(none yet: this is the first part)"
    worker_claims_task: str = (
        "Question: {question}\n\n"
        "Find what the source text above says that helps answer the question, or that connects to a checked claim "
        "from the earlier parts. Write each finding as two lines: first \"Claim:\" and one short sentence, with "
        "names and numbers exactly as the source text writes them; then \"Quote:\" and the sentence of the source "
        "text that shows it, copied word for word. Write nothing else. If the source text says nothing that helps, "
        "write only: Claim: none"
    )
    worker_claims_map_task: str = (
        "Question: {question}\n\n"
        "Find what the source text above says that helps answer the question. Write each finding as two lines: "
        "first \"Claim:\" and one short sentence, with names and numbers exactly as the source text writes them; "
        "then \"Quote:\" and the sentence of the source text that shows it, copied word for word. Write nothing "
        "else. If the source text says nothing that helps, write only: Claim: none"
    )
    # An aggregate question (agents/questions.py): one claim per item, never a count of the part's own.
    worker_claims_list_task: str = (
        "Question: {question}\n\n"
        "The question asks about every one of many things spread over the document. List every one that the "
        "source text above mentions (there may be several), one finding each: first \"Claim:\" and one short sentence naming it exactly as the "
        "source text does; then \"Quote:\" and the sentence of the source text that mentions it, copied word for "
        "word. Do not count or sum them up. Write nothing else. If the source text mentions none, write only: "
        "Claim: none"
    )
    worker_claims_summary_task: str = (
        "List what happens in the source text above, in order: the events, who takes part, where, and every turn "
        "of the story. Write each as two lines: first \"Claim:\" and one sentence, with names exactly as the "
        "source text writes them; then \"Quote:\" and the sentence of the source text that shows it, copied word "
        "for word. Write nothing else."
    )
    # -- manager ------------------------------------------------------------------------------------------------
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
    # The manager over checked claims (agents/resolve.py ranks them and settles clear conflicts first).
    manager_claims_task: str = (
        "Claims found in the document, each checked against the source sentence under it:\n{notes}\n\n"
        "Question: {question}\n\n"
        "Answer the question from these claims only. Where claims disagree, trust the one whose source names the "
        "same people, places and dates as the question. If the claims do not answer the question, say that the "
        "document does not say. Write only the answer."
    )
    claims_conflict_note: str = "\n\nThese claims disagree; decide from their sources: {pairs}"
    # A list or a count question's answer, written by code from the checked claims (grounded.py `items_answer`).
    items_count_head: str = "{count}: the readers found and checked {count} in the {parts} parts of the document:"
    items_list_head: str = "Every one the readers found and checked in the document:"
    items_line: str = "- {item} (part {parts})"
    claims_count_note: str = "\n\n({count} checked claims in all, each found once.)"
    claims_missing_note: str = " (its source does not name {names})"
    manager_claims_summary_task: str = (
        "Notes on the document, in order, each checked against the text:\n{notes}\n\n"
        "Write a summary of the whole document from these notes: who the main people are, what happens to them "
        "in order, and how it ends. Use only names and facts that are in the notes. Never repeat a sentence. "
        "Write only the summary."
    )
    summary_fix_task: str = (
        "Summary:\n{summary}\n\nThe summary above names {items}, which the document does not contain. Rewrite the "
        "summary without them, keeping everything else. Write only the summary."
    )
    # The collapse stage (LLM x MapReduce): claims or notes that do not fit the manager's window are merged in
    # groups that fit, as often as needed.
    collapse_claims_task: str = (
        "Claims found in parts {first} to {last} of the document, each with the source sentence it was checked "
        "against:\n{notes}\n\nQuestion: {question}\n\n"
        "Keep every claim that helps answer the question; merge claims that say the same thing. Write each as two "
        "lines: first \"Claim:\" and one short sentence, with names and numbers exactly as written; then "
        "\"Quote:\" and its source sentence, copied word for word. Write nothing else."
    )
    collapse_summary_task: str = (
        "Notes on parts {first} to {last} of the document, in order:\n{notes}\n\n"
        "Write a summary of these parts from the notes: who takes part and what happens, in order. Use only names "
        "and facts that are in the notes. Never repeat a sentence. Write only the summary."
    )
    # Lookback (ReadAgent's page lookup): the manager also sees source passages the notes cite.
    lookback_heading: str = "Passages of the document that the notes cite:\n"
    lookback_passage: str = "[part {number}] {text}\n\n"
    # The answer when no reader found anything: written without a call, so nothing can be invented.
    not_found_answer: str = "The document does not say: none of its {parts} parts held information about this question."
    # A summary whose readers' claims all failed their checks: said plainly, without a call that could invent.
    nothing_to_summarize: str = "No summary: none of the claims the readers wrote about its {parts} parts passed its check."
    # -- judge (multipath) --------------------------------------------------------------------------------------
    judge_system: str = (
        "You compare answers to a question about a long document. Each answer was written by readers who went "
        "through the document in a different order; each comes with the notes it was based on."
    )
    judge_candidate: str = "Answer {number}:\n{answer}\nNotes behind answer {number}:\n{notes}\n\n"
    judge_query_task: str = (
        "{candidates}Question: {question}\n\n"
        "Give the best answer to the question: the one the notes support best, or a merge of the answers where "
        "they agree. Prefer exact names and numbers found in the notes. Write only the answer."
    )
    judge_summary_task: str = (
        "{candidates}Each answer above is a summary of the same document. Write one well-organised summary of the "
        "whole document that keeps what the summaries agree on and every important event they report."
    )
    # -- reader (one call over the text itself: rag, truncate, full) --------------------------------------------
    reader_system: str = "You answer questions about a document from its text."
    reader_query_task: str = (
        "{text}\n\nQuestion: {question}\n\nAnswer the question from the text above. If the text does not contain "
        "the answer, say that it does not."
    )
    reader_summary_task: str = "{text}\n\nWrite a well-organised summary of the document above."
    # Self-Route's first step (auto): answer from retrieved excerpts, or say they do not hold the answer (replies.py
    # reads the paraphrases). Asking for an exact UNANSWERABLE marker made the 0.5B model take it on needles it
    # could answer (docs/quality.md), so the wording is the reader's own.
    unanswerable: str = "UNANSWERABLE"
    route_query_task: str = (
        "{text}\n\nQuestion: {question}\n\nAnswer the question from the text above. If the text does not contain "
        "the answer, say that it does not."
    )
    excerpt_heading: str = "Excerpts of the document, in order:\n\n"
    excerpt: str = "[excerpt {number}] {text}\n\n"
    omitted: str = "\n\n[... {tokens} tokens of the document left out ...]\n\n"

    def with_overrides(self, **changes: str) -> "Prompts":
        return replace(self, **changes)


DEFAULT_PROMPTS = Prompts()

# Phrases a reply carries when it found nothing, whatever marker it was asked for (small models paraphrase).
NOT_FOUND_PHRASES = (
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
NOTHING_FOUND_PHRASES = NOT_FOUND_PHRASES  # the name of earlier releases
