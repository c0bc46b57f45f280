"""Search campaigns: long searches over many dimensions, resumable across sessions and machines.

A campaign is an ordered list of tasks ``(dimension, method)``, each one
:func:`latticeq.design.search.run_search` with the campaign's preset, restarts, seed and
sample budget. Its state lives in one folder (default ``results/campaign``, meant to be
committed with the results, so that a fresh clone on another machine continues where the last
session stopped):

* ``campaign.json`` — the settings and, per task, its status (``done`` with the result file,
  NSM and standard error), written atomically after every task;
* ``checkpoints/n{N}-{method}/`` — the running search's checkpoints (optimizer state of every
  restart, saved every ``checkpoint_every`` seconds).

Tasks run concurrently, in dimension order, on one shared pool of ``workers`` processes (or on
Ray): the restarts of the next task queue behind those of the current one and take each core
it frees, so no core idles while a dimension's last restart finishes. ``campaign.json``
records when each task started and finished.

``resume=True`` skips finished tasks and continues the running one from its checkpoint; a
campaign resumed with other settings is refused, naming each difference. With
``budget_hours`` the campaign checkpoints and stops at the last chunk that fits the budget (a
later resume continues). Results go to ``{out}/n{N}-{method}.json``; a better earlier result there is
never overwritten (see :func:`latticeq.design.search.run_search`).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as _dt
import multiprocessing as mp
import os
import re
import sys
import threading
import time
from pathlib import Path

from latticeq.design.search import METHODS, PRESETS, SearchPaused, run_search, single_lattice_splice
from latticeq.io import atomic_write_json
from latticeq.progress import make_progress

__all__ = ["parse_dims", "run_campaign", "CAMPAIGN_FORMAT", "SETTINGS"]

CAMPAIGN_FORMAT = "latticeq.campaign/1"
#: settings that define a campaign: a resume must give the same ones
SETTINGS = ("dims", "methods", "preset", "restarts", "seed", "samples", "steps")


def parse_dims(spec) -> list[int]:
    """``"13-32"``, ``"25,27,30-32"`` or a list of ints → sorted unique dimensions in 2..64."""
    if isinstance(spec, str):
        dims: set[int] = set()
        for part in spec.split(","):
            part = part.strip()
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not m:
                raise ValueError(f"bad dimension list {spec!r}: expected e.g. '13-32' or '25,27,30-32'")
            a, b = int(m.group(1)), int(m.group(2) or m.group(1))
            if b < a:
                raise ValueError(f"bad dimension range {part!r}: the end is below the start")
            dims.update(range(a, b + 1))
    else:
        dims = set(int(d) for d in spec)
    if not dims:
        raise ValueError("no dimensions given")
    bad = sorted(d for d in dims if not 2 <= d <= 64)
    if bad:
        raise ValueError(f"dimensions must lie in 2..64, got {bad}")
    return sorted(dims)


def _log(msg: str) -> None:
    stamp = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {msg}", flush=True)


def run_campaign(dims, methods=("matrix-exp-free",), *, preset: str = "fast", restarts: int = 1,
                 seed: int = 0, samples: int = 10**6, steps: int | None = None,
                 out="results/lattices", state="results/campaign", resume: bool = False,
                 budget_hours: float | None = None, ray: str | None = None,
                 workers: int | None = None, checkpoint_every: float = 120.0,
                 progress: bool | None = None) -> dict:
    """Run (or continue) a campaign; returns the campaign record (settings and task states).

    Parameters
    ----------
    dims : dimensions (see :func:`parse_dims`).  methods : search methods, run in this order
        within each dimension (``sgd``, ``householder``, ``matrix-exp``, ``matrix-exp-free``).
    preset, restarts, seed : passed to every search.  samples : points of each final NSM
        estimate.  steps : overrides the preset's number of optimizer steps.
    out : result folder.  state : campaign folder (``campaign.json`` and ``checkpoints/``).
    resume : continue the campaign in ``state``; without it an existing campaign is an error.
    budget_hours : stop (checkpointed) within this much wall time: no chunk is started that
        would end past it; ``None`` runs to the end.
    ray : None (local processes) or ``"auto"`` / a Ray address: every restart is a Ray task and
        all tasks are submitted at once.
    workers : local processes shared by all tasks (default: every core); 1 runs one task at a
        time in this process.
    progress : rich progress bars (default: when stdout is a terminal; otherwise one plain
        line per checkpoint and per task).
    """
    dims = parse_dims(dims)
    methods = [methods] if isinstance(methods, str) else list(methods)
    if not methods:
        raise ValueError(f"no methods given; allowed: {', '.join(m for m in METHODS if m != 'splice')}")
    for m in methods:
        if m not in METHODS or m == "splice":
            raise ValueError(f"unknown campaign method {m!r}; allowed: "
                             f"{', '.join(x for x in METHODS if x != 'splice')}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; allowed: {', '.join(PRESETS)}")
    if "triangular" in methods:  # refused up front, not when the campaign reaches that dimension
        single = [f"{d} ({one})" for d in dims if (one := single_lattice_splice(d))]
        if single:
            raise ValueError("the triangular modification needs a product of at least two lattices, but the "
                             f"best splice is a single lattice in n = {', '.join(single)}; leave these out of dims")
    for name, v, lo in (("restarts", restarts, 1), ("samples", samples, 2)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if budget_hours is not None and not budget_hours > 0:
        raise ValueError(f"budget_hours must be positive, got {budget_hours!r}")
    if progress is None:
        progress = sys.stdout.isatty()

    state = Path(state)
    record_path = state / "campaign.json"
    settings = {"dims": dims, "methods": methods, "preset": preset, "restarts": restarts,
                "seed": seed, "samples": samples, "steps": steps}
    if record_path.exists():
        if not resume:
            raise FileExistsError(f"a campaign exists in {state}; pass --resume to continue it, "
                                  "or choose another --state folder")
        from latticeq.design.search import _read_json

        record = _read_json(record_path, "campaign record")
        if record.get("format") != CAMPAIGN_FORMAT:
            raise ValueError(f"{record_path} is not a latticeq campaign record "
                             f"(format {record.get('format')!r}, expected {CAMPAIGN_FORMAT!r})")
        diff = [f"{k}: campaign {record.get('settings', {}).get(k)!r}, now {settings[k]!r}"
                for k in SETTINGS if record.get("settings", {}).get(k) != settings[k]]
        if diff:
            raise ValueError(f"campaign {record_path} was started with other settings ("
                             + "; ".join(diff) + "); resume with the same settings")
    elif resume:
        raise FileNotFoundError(f"nothing to resume: no campaign in {state}")
    else:
        state.mkdir(parents=True, exist_ok=True)
        from latticeq import __version__

        record = {"format": CAMPAIGN_FORMAT, "settings": settings, "tasks": {},
                  "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                  "latticeq": __version__}
        atomic_write_json(record_path, record)

    t0 = time.time()
    deadline = None if budget_hours is None else t0 + budget_hours * 3600.0
    overrides = None if steps is None else {"steps": steps}
    tasks = [(d, m) for d in dims for m in methods]
    pending = [(i, d, m) for i, (d, m) in enumerate(tasks, 1)
               if record["tasks"].get(f"n{d}-{m}", {}).get("status") != "done"]
    lock = threading.Lock()  # guards `record` and its file
    failed: list[tuple[str, BaseException]] = []
    first = pending[0][0] if pending else None

    def save(key, entry):
        with lock:
            record["tasks"][key] = entry
            atomic_write_json(record_path, record)

    def run_task(j, i, d, m, turns, bar):
        try:
            _run_task(i, d, m, None if turns is None else turns.view(j), bar)
        finally:
            if turns is not None:
                turns.release(j)  # also when the task ended before submitting anything

    def _run_task(i, d, m, pool, bar):
        key = f"n{d}-{m}"
        if failed:
            return  # another task failed: start nothing new
        # every call works on at least one task, so that a resume always progresses
        if deadline is not None and time.time() >= deadline and i != first:
            _log(f"budget of {budget_hours:g} h reached before {key}; --resume continues")
            return
        ckdir = state / "checkpoints" / key
        again = ckdir.exists() and any(ckdir.iterdir())
        _log(f"task {i}/{len(tasks)}: {key} ({'resuming' if again else 'starting'}; preset {preset}, "
             f"{restarts} restart(s))")
        begun = _now()
        save(key, {"status": "running", "started": begun})
        try:
            res = run_search(d, m, preset=preset, restarts=restarts, seed=seed, out=out,
                             resume=again, ray=ray, workers=workers, final_samples=samples,
                             fusion_overrides=None if m == "sgd" else overrides,
                             sgd_overrides=overrides if m == "sgd" else None,
                             checkpoint_every=checkpoint_every, progress=progress,
                             checkpoints=state / "checkpoints", deadline=deadline,
                             log_lines=not progress, pool=pool, bar=bar)
        except SearchPaused as exc:
            _log(str(exc))
            save(key, {"status": "paused", "started": begun})
            return
        except BaseException as exc:
            _log(f"{key} failed: {type(exc).__name__}: {exc}")
            save(key, {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "started": begun})
            failed.append((key, exc))
            return
        save(key, {"status": "done", "result": str(res.path), "nsm": res.nsm, "stderr": res.stderr,
                   "samples": res.samples, "restart_nsms": res.restart_nsms,
                   "wall_time": res.wall_time, "started": begun, "finished": _now()})
        _log(f"{key}: NSM {res.nsm:.7f} ± {res.stderr:.7f} ({res.samples} samples, "
             f"{res.wall_time:.0f} s) -> {res.path}")

    nw = workers if workers is not None else (os.cpu_count() or 1)
    if ray is not None:
        import ray as _ray

        if not _ray.is_initialized():  # once, before the tasks' threads
            _ray.init(address=ray, ignore_reinit_error=True, log_to_driver=False)
    with contextlib.ExitStack() as stack:
        # one display and one process pool for the whole campaign: while the last restarts of a
        # dimension run, the first ones of the next take the free cores
        bar = stack.enter_context(make_progress(True)) if progress else None
        turns = None
        if ray is None and nw > 1:
            turns = _Turns(stack.enter_context(
                cf.ProcessPoolExecutor(max_workers=nw, mp_context=mp.get_context("spawn"))))
        threads = stack.enter_context(cf.ThreadPoolExecutor(max_workers=_in_flight(ray, nw, restarts, len(pending))))
        for job in [threads.submit(run_task, j, i, d, m, turns, bar) for j, (i, d, m) in enumerate(pending)]:
            job.result()
    if failed:
        key, exc = failed[0]
        raise exc
    return record


class _Turns:
    """The shared process pool, handed to the tasks' threads in task order: task ``j`` submits its
    restarts only after tasks ``0 … j−1`` have submitted theirs (or ended), so the pool's queue,
    which it serves first in first out, holds the restarts in dimension order whichever thread
    happens to get ready first."""

    def __init__(self, pool):
        self.pool = pool
        self.cv = threading.Condition()
        self.released: set[int] = set()

    def view(self, j: int) -> "_Turn":
        return _Turn(self, j)

    def wait(self, j: int) -> None:
        with self.cv:
            self.cv.wait_for(lambda: all(k in self.released for k in range(j)))

    def release(self, j: int) -> None:
        with self.cv:
            self.released.add(j)
            self.cv.notify_all()


class _Turn:
    """Task ``j``'s handle on the pool: ``submit`` waits for its turn; ``submitted()`` (called by
    :func:`latticeq.design.search.run_search` once all its restarts are queued) passes the turn on."""

    def __init__(self, turns: _Turns, j: int):
        self.turns, self.j = turns, j

    def submit(self, fn, *args, **kwargs):
        self.turns.wait(self.j)
        return self.turns.pool.submit(fn, *args, **kwargs)

    def submitted(self) -> None:
        self.turns.release(self.j)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _in_flight(ray, workers: int, restarts: int, tasks: int) -> int:
    """How many tasks run at once: enough that their restarts keep every worker busy (one task
    more than fills them, so the next dimension starts as the last restarts of one finish), all
    of them on Ray (its scheduler queues what the cluster cannot run yet), one on a single worker."""
    if ray is not None:
        return max(1, tasks)
    if workers <= 1:
        return 1
    return max(1, min(tasks, -(-workers // restarts) + 1))
