"""A rich progress bar that can be switched off, shared by every long-running job in latticeq."""

from __future__ import annotations

import contextlib


class _NullProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass

    def log(self, *args, **kwargs):
        pass


@contextlib.contextmanager
def make_progress(enabled: bool = True, transient: bool = False):
    """``rich.progress.Progress`` with bar, counts, elapsed and ETA; a no-op when disabled."""
    if not enabled:
        yield _NullProgress()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=transient,
    ) as bar:
        yield bar
