"""Chain-of-Agents agents (Zhang et al., NeurIPS 2024): workers that read segments in order, and a manager."""

from .budget import Budget, Mode, default_window, plan_budget
from .manager import Manager, manager_messages
from .notes import CommunicationUnit, truncate_to_tokens
from .prompts import DEFAULT_PROMPTS, NOTHING_RELEVANT, Prompts
from .worker import Worker, WorkerStep, found_nothing, worker_messages

__all__ = [
    "Budget", "CommunicationUnit", "DEFAULT_PROMPTS", "Manager", "Mode", "NOTHING_RELEVANT", "Prompts", "Worker",
    "WorkerStep", "default_window", "found_nothing", "manager_messages", "plan_budget", "truncate_to_tokens",
    "worker_messages",
]
