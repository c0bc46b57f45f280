"""Progress of long jobs, shared by every one of them in latticeq.

``make_progress(enabled)`` gives, with the same small interface (``add_task``, ``update``,
``advance``, ``note``):

* a rich progress bar (bar, counts, elapsed, ETA) when stdout is a terminal;
* plain lines when it is not (batch jobs, CI, ``nohup … > log``), where a rich bar shows
  nothing: one line per task when it starts and finishes, and at most one progress line every
  ``interval`` seconds in between (description, count, elapsed, ETA);
* nothing at all when disabled.

``note(text)`` prints one line in every enabled mode (above the bar on a terminal): jobs use it
for milestones, e.g. the pipeline's one line per finished block.
"""

from __future__ import annotations

import contextlib
import sys
import time


class _NullProgress:
    def add_task(self, *args, **kwargs):
        return 0

    def update(self, *args, **kwargs):
        pass

    def advance(self, *args, **kwargs):
        pass

    def log(self, *args, **kwargs):
        pass

    def note(self, text: str) -> None:
        pass


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """Plain-text progress for output that is not a terminal (see the module docstring)."""

    def __init__(self, stream=None, interval: float = 30.0):
        self.stream = stream if stream is not None else sys.stdout
        self.interval = float(interval)
        self.tasks: dict[int, dict] = {}

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def add_task(self, description: str, total=None, completed: float = 0, **kwargs) -> int:
        tid = len(self.tasks)
        now = time.monotonic()
        self.tasks[tid] = {"description": description, "total": total, "completed": completed,
                           "start": now, "start_completed": completed, "last": now, "done": False}
        count = f" ({completed:g}/{total:g})" if total else ""
        self._print(f"{description}: started{count}")
        return tid

    def _line(self, t: dict) -> str:
        now = time.monotonic()
        elapsed = now - t["start"]
        parts = [t["description"]]
        if t["total"]:
            parts.append(f"{t['completed']:g}/{t['total']:g} ({100 * t['completed'] / t['total']:.0f}%)")
        parts.append(f"elapsed {format_duration(elapsed)}")
        rate_done = t["completed"] - t["start_completed"]
        if t["total"] and rate_done > 0 and t["completed"] < t["total"]:
            parts.append(f"ETA {format_duration(elapsed / rate_done * (t['total'] - t['completed']))}")
        return ", ".join(parts)

    def update(self, task: int, *, completed=None, advance=None, description=None, total=None, **kwargs) -> None:
        t = self.tasks[task]
        if description is not None:
            t["description"] = description
        if total is not None:
            t["total"] = total
        if completed is not None:
            t["completed"] = completed
        if advance is not None:
            t["completed"] += advance
        now = time.monotonic()
        finished = bool(t["total"]) and t["completed"] >= t["total"]
        if finished and not t["done"]:
            t["done"] = True
            self._print(self._line(t) + " — done")
            t["last"] = now
        elif not finished and now - t["last"] >= self.interval:
            self._print(self._line(t))
            t["last"] = now

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def log(self, *objects, **kwargs) -> None:
        self._print(" ".join(str(o) for o in objects))

    def note(self, text: str) -> None:
        self._print(text)


@contextlib.contextmanager
def make_progress(enabled: bool = True, transient: bool = False, interval: float = 30.0):
    """Progress display for a long job (rich bar on a terminal, plain lines otherwise, nothing
    when disabled); see the module docstring."""
    if not enabled:
        yield _NullProgress()
        return
    if not sys.stdout.isatty():
        yield LineProgress(interval=interval)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=transient,
    ) as bar:
        bar.note = lambda text: bar.console.print(text, highlight=False, markup=False)
        yield bar
