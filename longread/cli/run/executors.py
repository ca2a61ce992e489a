"""Which executor reads a run's documents (runner.run takes it): Ray tasks with `--ray`, else threads (`--jobs`).

Chosen here, above the runner, so that the runner imports neither: cluster.py builds on the runner.
"""

from __future__ import annotations

from ..settings import Settings
from .parallel import in_threads
from .runner import Executor


def executor_for(settings: Settings) -> Executor:
    """`--ray` (not with --dry-run, which calls nothing): the documents as Ray tasks; else threads."""
    if settings.ray and not settings.dry_run:
        from .cluster import on_ray  # imports Ray only when a run starts it

        return on_ray(settings.ray)
    return in_threads
