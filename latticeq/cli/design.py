"""``latticeq search | splice | compare | identify | study`` — designing lattice quantizers."""

from __future__ import annotations

from pathlib import Path

import click

from latticeq.cli.common import budget_deadline, exit_when_paused
from latticeq.design.search import METHODS, PRESETS


@click.command("search")
@click.option("--dim", "dim", type=int, required=True, help="Dimension n (2..64).")
@click.option("--method", type=click.Choice(METHODS), required=True,
              help="sgd (random start, or --init), fusion of the best splice (householder, matrix-exp, "
                   "matrix-exp-free), triangular (Agrell & Allen's triangular modification of the best "
                   "product: the baseline for fusion) or splice (the best product itself).")
@click.option("--preset", type=click.Choice(PRESETS), default="fast", show_default=True)
@click.option("--restarts", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="results/lattices", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the checkpointed search (in --checkpoints).")
@click.option("--checkpoints", type=click.Path(file_okay=False), default=None,
              help="Folder of the search's checkpoint folder [default: OUT/.checkpoints, git-ignored]; "
                   "a committed folder lets another machine resume the search.")
@click.option("--budget-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Checkpoint and stop (exit status 3) within this many hours: a chunk that would end past it is not started (each leg runs at least one); --resume continues.")
@click.option("--ray", "ray_address", default=None, help="Run restarts as Ray tasks: 'auto' or an address.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Local processes for the restarts, threads for the final estimate (default: min(restarts, cores)).")
@click.option("--samples", "final_samples", type=click.IntRange(min=2), default=10**7, show_default=True,
              help="Fresh points for the final NSM estimate.")
@click.option("--init", "init_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="SGD: start from this lattice JSON (e.g. the best fused lattice); fusion methods: "
                   "from this product, saved by 'latticeq splice --components … --out FILE'.")
@click.option("--name", default=None, help="Result name suffix instead of the method (e.g. sgd-fused).")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the preset's number of steps.")
@click.option("--mu0", type=float, default=None, help="SGD: override the initial step size.")
@click.option("--start-noise", type=click.FloatRange(min=0), default=None,
              help="Fusion: standard deviation of the random start of the mixing parameters "
                   "(default 0.01: M ≈ I). With triangular, a value near 1 starts each restart from "
                   "random glue (later components shifted by random combinations of the earlier "
                   "ones' basis vectors), so that restarts reach different local optima.")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=120.0, show_default=True, help="Seconds.")
@click.option("--no-progress", is_flag=True)
def search_cmd(dim, method, preset, restarts, seed, out, resume, checkpoints, budget_hours, ray_address,
               workers, final_samples, init_path, name, steps, mu0, start_noise, checkpoint_every, no_progress):
    """Search for a lattice quantizer; writes OUT/n{DIM}-{METHOD}.json."""
    from latticeq.design.search import run_search
    from latticeq.io import check_writable_folder

    check_writable_folder(out, what="--out")
    if checkpoints is not None:
        check_writable_folder(checkpoints, what="--checkpoints")
    init = None
    if init_path is not None:
        from latticeq.lattice import Lattice
        init = Lattice.from_json(init_path)
    if method in ("sgd", "splice") and start_noise is not None:
        raise click.UsageError(f"--start-noise applies to the fusion methods, not {method}")
    if method != "sgd" and mu0 is not None:
        raise click.UsageError("--mu0 applies to sgd only")
    fusion_over = sgd_over = None
    if method == "sgd":
        sgd_over = {k: v for k, v in (("steps", steps), ("mu0", mu0)) if v is not None} or None
    else:
        fusion_over = {k: v for k, v in (("steps", steps), ("noise", start_noise)) if v is not None} or None
    try:
        with exit_when_paused():
            res = run_search(dim, method, preset=preset, restarts=restarts, seed=seed, out=out,
                             resume=resume, ray=ray_address, workers=workers,
                             final_samples=final_samples, init=init, name=name,
                             fusion_overrides=fusion_over, sgd_overrides=sgd_over,
                             checkpoint_every=checkpoint_every, progress=not no_progress,
                             checkpoints=checkpoints, deadline=budget_deadline(budget_hours))
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"n={res.dim} {res.method}: NSM = {res.nsm:.7f} ± {res.stderr:.7f} "
               f"({res.samples} samples) -> {res.path}")


@click.command("campaign")
@click.option("--dims", required=True, help="Dimensions, e.g. '13-32' or '25,27,30-32'.")
@click.option("--methods", default="matrix-exp-free", show_default=True,
              help="Comma-separated search methods, run in this order in each dimension.")
@click.option("--preset", type=click.Choice(PRESETS), default="fast", show_default=True)
@click.option("--restarts", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the preset's number of steps.")
@click.option("--samples", type=click.IntRange(min=2), default=10**6, show_default=True,
              help="Fresh points for each final NSM estimate.")
@click.option("--budget-hours", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Checkpoint and stop within this many hours, as search does (--resume continues).")
@click.option("--out", type=click.Path(file_okay=False), default="results/lattices", show_default=True)
@click.option("--state", type=click.Path(file_okay=False), default="results/campaign", show_default=True,
              help="Campaign folder (settings, task states, checkpoints); commit it to resume elsewhere.")
@click.option("--resume", is_flag=True, help="Continue the campaign in --state.")
@click.option("--ray", "ray_address", default=None, help="Run restarts as Ray tasks: 'auto' or an address.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Local processes shared by all dimensions (default: every core; 1: one task at a time, in-process).")
@click.option("--checkpoint-every", type=click.FloatRange(min=0), default=120.0, show_default=True, help="Seconds.")
def campaign_cmd(dims, methods, preset, restarts, seed, steps, samples, budget_hours, out, state,
                 resume, ray_address, workers, checkpoint_every):
    """Long searches over many dimensions, checkpointed and resumable across sessions."""
    from latticeq.design.campaign import run_campaign
    from latticeq.io import check_writable_folder

    check_writable_folder(out, what="--out")
    check_writable_folder(state, what="--state")

    try:
        rec = run_campaign(dims, [m.strip() for m in methods.split(",") if m.strip()],
                           preset=preset, restarts=restarts, seed=seed, samples=samples,
                           steps=steps, out=out, state=state, resume=resume,
                           budget_hours=budget_hours, ray=ray_address, workers=workers,
                           checkpoint_every=checkpoint_every)
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    done = sum(t.get("status") == "done" for t in rec["tasks"].values())
    total = len(rec["settings"]["dims"]) * len(rec["settings"]["methods"])
    click.echo(f"campaign: {done}/{total} tasks done ({state}/campaign.json)")


@click.command("splice")
@click.option("--dim", "dim", type=int, default=None, help="Best splice in this dimension.")
@click.option("--components", default=None,
              help="Explicit product, e.g. 'K12,Z', or with saved results: 'results/lattices/n16-sgd.json,Z1' "
                   "(a file's NSM is its recorded estimate).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Save the lattice JSON.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
def splice_cmd(dim, components, out, force):
    """Best orthogonal splice of catalog lattices (or a given product) and its NSM."""
    from latticeq.design.splice import best_splice, splice
    from latticeq.io import check_output

    if out:
        check_output(out, force=force, what="--out")

    try:
        if components:
            from latticeq.lattice import Lattice

            parts = []
            for c in (c.strip() for c in components.split(",")):
                if c.lower().endswith(".json"):  # a saved lattice: splice uses its recorded NSM estimate
                    if not Path(c).is_file():
                        raise ValueError(f"no lattice file at {c}")
                    part = Lattice.from_json(c)
                    if part.nsm is None:
                        raise ValueError(f"{c} records no NSM estimate; estimate it first (latticeq nsm {c} --update)")
                    c = Lattice(part.generator, name=Path(c).stem, provenance=part.provenance, nsm=part.nsm)
                parts.append(c)
            L = splice(parts, n=dim)
            nsm, label = L.provenance["nsm"], L.name
        elif dim is not None:
            sp = best_splice(dim)
            L, nsm, label = sp.lattice(), sp.nsm, sp.label
        else:
            raise ValueError("give --dim or --components")
    except (ValueError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{label}: n={L.dim} NSM = {nsm:.7f}")
    if out:
        click.echo(f"saved {L.to_json(out)}")


@click.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--tol", type=float, default=1e-6, show_default=True,
              help="Relative tolerance of the isometry test (use ~5e-2 for numerically optimized "
                   "lattices, which are then also compared by their theta images, as identify does).")
def compare_cmd(a, b, tol):
    """Whether lattices A and B (catalog names or JSON files) are equal up to rotation and scale."""
    from latticeq.design.identify import compare, kissing_number, same_theta_shells

    if not (tol > 0 and tol < 1):
        raise click.BadParameter(f"must be between 0 and 1, got {tol}", param_hint="--tol")
    try:
        same, how = compare(a, b, tol=tol), "isometry"
        if not same and tol >= 1e-3:
            same, how = same_theta_shells(a, b, rtol=tol), "theta image"
        ka, kb = kissing_number(a, rtol=max(tol, 1e-9)), kissing_number(b, rtol=max(tol, 1e-9))
    except (ValueError, FileNotFoundError, KeyError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from None
    def kiss(k):
        return "no shells" if k is None else str(k)

    click.echo(f"kissing numbers (shell within tol): {a}: {kiss(ka)}, {b}: {kiss(kb)}")
    click.echo(f"{'SAME' if same else 'DIFFERENT'} up to rotation and scale (tol={tol:g}"
               f"{', by ' + how if same else ''})")


@click.command("identify")
@click.argument("lattice")
@click.option("--rtol", type=click.FloatRange(min=0, max=1, min_open=True), default=0.05, show_default=True)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write the theta image (PNG).")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot.")
def identify_cmd(lattice, rtol, plot_path, force):
    """Theta image, approximate kissing number and the catalog lattice it matches (if any)."""
    from latticeq.design.identify import identify, kissing_number, plot_theta_images, theta_image

    if plot_path:
        from latticeq.draw._io import check_output_path

        try:
            check_output_path(plot_path, formats=("png", "svg"), force=force)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None

    try:
        img = theta_image(lattice)
        name = identify(lattice, rtol=rtol)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise click.ClickException(str(exc)) from None
    first = img.first_shell(rtol)  # kissing_number(lattice, rtol) without a second theta image
    if first is None:
        exact = kissing_number(lattice, rtol=0)
        click.echo(f"no shell structure: the {len(img.norms)} vectors up to {img.max_ratio:.3g}× the minimum "
                   f"norm have no gap wider than rtol={rtol:g}; {exact} vectors of exactly minimal norm")
    else:
        shells = ", ".join(f"{v:.3f}:{c}" for v, c in img.shells(rtol)[:6])
        click.echo(f"kissing number ≈ {first[1]}; shells (norm/min : count) {shells}")
    click.echo(f"identified as {name}" if name else "not similar to any catalog lattice")
    if plot_path:
        plot_theta_images({lattice: lattice}, plot_path)
        click.echo(f"theta image -> {plot_path}")


@click.command("study")
@click.option("--dims", default="13-24", show_default=True)
@click.option("--results", type=click.Path(file_okay=False), default="results/lattices", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="results", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite existing OUT/study.{csv,md,png} and OUT/best.md.")
def study_cmd(dims, results, out, force):
    """Write OUT/study.{csv,md,png} and OUT/best.md from the finished results."""
    from pathlib import Path

    from latticeq.design.study import run_study
    from latticeq.io import check_output

    if not Path(out).is_dir():
        raise click.ClickException(f"--out {out!r} is not an existing folder")
    for name in ("study.csv", "study.md", "study.png", "best.md"):
        check_output(Path(out) / name, force=force, what="--out")

    try:
        rows = run_study(dims, results=results, out=out)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(rows)} dimensions -> {out}/study.csv, study.md, study.png, best.md")


COMMANDS = [search_cmd, campaign_cmd, splice_cmd, compare_cmd, identify_cmd, study_cmd]
