"""The reading agents: Chain-of-Agents workers and manager (Zhang et al., NeurIPS 2024), the multipath judge, and
the direct reader of the one-call strategies. Prompts live in prompts.py, the messages built from them in
messages.py, the window budgets in budget.py."""

from .budget import Budget, default_caps, default_window, plan_budget
from .direct import DirectReader
from .judge import Judge
from .manager import Manager
from .messages import Mode, judge_messages, lookback_text, manager_messages, reader_messages, worker_messages
from .notes import CommunicationUnit
from .prompts import DEFAULT_PROMPTS, NOT_FOUND_PHRASES, NOTHING_RELEVANT, Prompts
from .replies import after_marker, found_nothing
from .worker import Worker, WorkerStep

__all__ = [
    "Budget", "CommunicationUnit", "DEFAULT_PROMPTS", "DirectReader", "Judge", "Manager", "Mode",
    "NOTHING_RELEVANT", "NOT_FOUND_PHRASES", "Prompts", "Worker", "WorkerStep", "after_marker", "default_caps",
    "default_window", "found_nothing", "judge_messages", "lookback_text", "manager_messages", "plan_budget",
    "reader_messages", "worker_messages",
]
