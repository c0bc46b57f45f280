"""Core commands: ``nsm``, ``closest``, ``info``, ``demo``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from latticeq.cli.common import atomic_save_npy, budget_deadline, exit_when_paused, fail, load_array, load_lattice_arg


@click.command()
@click.argument("lattice")
@click.option("--samples", default=1_000_000, show_default=True, type=click.IntRange(min=100), help="Monte Carlo sample size.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the uniform points.")
@click.option("--target-stderr", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop early at this standard error.")
@click.option("--decoder", type=click.Choice(["latticeq", "fpylll"]), default="latticeq", show_default=True,
              help="Closest-point decoder; fpylll's CVP is an independent check (slow).")
@click.option("--update", is_flag=True,
              help="LATTICE is a saved result: record the new estimate in its file (the earlier one is kept "
                   "under provenance.previous_nsm; with --decoder fpylll it is recorded as provenance.crosscheck "
                   "instead). Checkpointed in .nsm-state/ beside the file; rerun to resume.")
@click.option("--pool", is_flag=True,
              help="With --update: add the new estimate to the file's (a re-estimate on another seed) instead of "
                   "replacing it; the file records their sample-weighted mean and its standard error, and keeps "
                   "each estimate under provenance.nsm_parts.")
@click.option("--budget-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --update: checkpoint and stop (exit status 3) within this many hours, leaving the "
                   "file as it was: a batch that would end past it is not started (at least one runs); the "
                   "same command continues the estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def nsm(lattice, samples, seed, target_stderr, decoder, update, pool, budget_hours, as_json, no_progress):
    """Estimate the normalized second moment of LATTICE (catalog name or saved JSON)."""
    from latticeq.design.nsm import estimate_nsm, reestimate, sphere_bound
    from latticeq.lattice import catalog

    L = load_lattice_arg(lattice)
    ref = catalog.reference_nsm(L.name, strict=False) if L.name else None
    if ref is None and L.nsm is not None:
        ref = L.nsm[0]
    if update and not Path(lattice).is_file():
        fail(f"--update needs a saved lattice file, got {lattice!r}")
    if pool and not update:
        fail("--pool adds to the estimate recorded in a file: use it with --update")
    if update and target_stderr is not None:
        fail("--update records a fixed-size estimate: drop --target-stderr")
    if budget_hours is not None and not update:
        fail("--budget-hours pauses into the checkpoint that --update keeps: use it with --update")
    try:
        with exit_when_paused():
            if update:
                r = reestimate(lattice, samples=samples, seed=seed, decoder=decoder, pool=pool,
                               progress=not (no_progress or as_json), deadline=budget_deadline(budget_hours))
            else:
                r = estimate_nsm(L, samples=samples, seed=seed, target_stderr=target_stderr,
                                 progress=not (no_progress or as_json), decoder=decoder)
    except ValueError as exc:
        fail(str(exc))
    out = {"lattice": L.name or lattice, **r.to_dict(), "reference": ref,
           "sigmas": r.sigmas_from(ref) if ref is not None else None, "sphere_bound": sphere_bound(L.dim)}
    if as_json:
        click.echo(json.dumps(out))
        return
    run_ = f"seed {seed}, {r.wall_time_s:.1f} s"
    click.echo(f"{out['lattice']} (n = {r.dim}): NSM = {r.nsm:.7f} ± {r.stderr:.1e}  "
               + (f"(pooled over {r.samples:,} samples; this run {samples:,}, {run_})" if pool
                  else f"({r.samples:,} samples, {run_})"))
    if ref is not None:
        click.echo(f"  reference {ref:.7f}: deviation {out['sigmas']:+.2f} standard errors")
    click.echo(f"  sphere bound {out['sphere_bound']:.7f}; tensor deviation from white {r.tensor_deviation:.3f}")


@click.command()
@click.argument("lattice")
@click.argument("points", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output .npy of closest lattice points.")
@click.option("--coords", type=click.Path(dir_okay=False), default=None, help="Also save integer coordinates here.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
def closest(lattice, points, out, coords, force):
    """Exact closest points of LATTICE to the rows of POINTS.npy."""
    import numpy as np

    L = load_lattice_arg(lattice)
    if not Path(points).exists():
        fail(f"no points file at {points}")
    X = load_array(points, "POINTS")
    from latticeq.io import check_output

    check_output(out, force=force, what="--out")
    if coords:
        check_output(coords, force=force, what="--coords")
    try:
        U = L.closest_coords(X)
    except ValueError as exc:
        fail(str(exc))
    P = U.astype(float) @ L.generator
    atomic_save_npy(out, P)
    if coords:
        atomic_save_npy(coords, U)
    click.echo(f"wrote {len(np.atleast_2d(P))} closest points of {L.name or lattice} to {out}")


@click.command()
@click.argument("lattice")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the generator).")
def info(lattice, as_json):
    """Dimension, volume, minimum norm, kissing number and packing density of LATTICE."""
    from latticeq.lattice import catalog

    L = load_lattice_arg(lattice)
    d = {"name": L.name or lattice, "dim": L.dim, "volume": L.volume, "determinant": L.determinant}
    try:
        d["minimum_norm"] = L.minimum_norm()
        d["kissing_number"] = L.kissing_number()
        d["packing_density"] = L.packing_density()
        d["center_density"] = d["packing_density"] / (math.pi ** (L.dim / 2) / math.gamma(L.dim / 2 + 1))
    except (ValueError, MemoryError) as exc:  # too many short vectors to enumerate
        d["minimum_norm"] = d["kissing_number"] = d["packing_density"] = None
        d["note"] = str(exc)
    d["reference_nsm"] = catalog.reference_nsm(L.name, strict=False) if L.name else None
    if d["reference_nsm"] is None and L.nsm is not None:  # a saved result: its own estimate
        d["reference_nsm"] = L.nsm[0]
    if as_json:
        d["generator"] = L.generator.tolist()
        click.echo(json.dumps(d))
        return
    for k, v in d.items():
        click.echo(f"{k:>16}: {v:.10g}" if isinstance(v, float) else f"{k:>16}: {v}")


@click.command()
@click.option("--samples", default=200_000, show_default=True, type=click.IntRange(min=100), help="NSM samples per lattice.")
@click.option("--seed", default=0, show_default=True, type=int)
def demo(samples, seed):
    """The main job on embedded defaults: NSM of catalog lattices and a closest-point benchmark."""
    from latticeq.demo import run_demo

    try:
        run_demo(samples=samples, seed=seed)
    except ValueError as exc:
        fail(str(exc))


COMMANDS = [nsm, closest, info, demo]
