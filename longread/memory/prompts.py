"""Every prompt the memory controller sends, in one place; override any with dataclasses.replace.

Adapted from SCM (Wang et al., arXiv:2304.13343; prompts in the paper's appendix and in its SCM4LLMs code):
- activation: SCM's yes/no question on whether a command needs earlier information, extended to the document
  read so far, answered with the words yes / no (small models follow that more reliably than the letters A / B,
  which are accepted too);
- summary: SCM summarises each long memory item once, keeping its key information;
- answer: SCM's fused prompt, [related memory][previous (flash) memory][question], with memory numbered so an
  answer can point at what it used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryPrompts:
    activation: str = (
        "Given a user command, determine whether carrying it out requires historical or previous information: "
        "recalling earlier parts of the conversation, or of the document read so far. "
        "Answer only yes or no, without explaining.\n\nCommand: {question}\n\nAnswer (yes or no):"
    )
    summary_system: str = "You summarise notes faithfully and briefly."
    summary: str = (
        "Summarise the following memory in at most {words} words. Keep names, numbers, quotations and key facts "
        "exactly; leave out everything else. Write only the summary.\n\nMemory:\n{text}\n\nSummary:"
    )
    answer_system: str = (
        "You are a careful assistant in a long conversation about documents. Answer the current question from "
        "the related memory and the most recent memory when they help; say so when they do not hold the answer."
    )
    memory_heading: str = "Related memory (most relevant first):\n"
    memory_item: str = "[{number}] {text}\n"  # may use {kind} too (note, question, answer, turn, summary)
    flash_heading: str = "\nMost recent memory:\n"
    question_heading: str = "\n###\n\nQuestion: "
    answer_cue: str = "\n\nAnswer:"
    # Answering a question from memory, before (or instead of) reading the document again.
    insufficient: str = "INSUFFICIENT"
    memory_answer_system: str = (
        "You answer questions about a long document from memory: notes that readers wrote while reading it, and "
        "earlier questions and answers. Answer briefly from the memory, quoting names and numbers exactly. "
        "If the memory does not contain the answer, reply with exactly: INSUFFICIENT"
    )
    # Archived notes recalled for a chain's manager.
    recalled_note: str = "Earlier notes (part {part}): {text}"
    recalled_summary: str = "An earlier summary of the whole document: {text}"
    # A summary has no question to rank notes by; this query finds the notes that tell the story.
    summary_recall_query: str = "the main events, people, places and ideas of the whole document"


DEFAULT_MEMORY_PROMPTS = MemoryPrompts()
