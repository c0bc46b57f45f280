"""``latticeq draw``: pictures of lattices and algorithms (voronoi, theta, babai, gptq, study, quant)."""

from __future__ import annotations

from pathlib import Path

import click

from latticeq.cli.common import fail, load_lattice_arg

_OUT = click.option("--out", required=True, type=click.Path(dir_okay=False),
                    help="Output image, .png or .svg.")
_FORCE = click.option("--force", is_flag=True, help="Overwrite an existing --out.")
_USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)


def _reference_nsm(name):
    try:
        from latticeq.lattice import catalog

        return catalog.reference_nsm(name) if name else None
    except (ImportError, AttributeError, KeyError, ValueError):
        return None


@click.group()
def draw():
    """Draw a picture: voronoi, theta, babai, gptq, study, quant (PNG or SVG, no display needed)."""


@draw.command()
@click.argument("lattice")
@_OUT
@_FORCE
@click.option("--samples", default=60, show_default=True, type=click.IntRange(min=0), help="Random points whose errors are drawn.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random points.")
@click.option("--extent", default=2.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Half-width of the window (unit-volume units).")
@click.option("--no-normalize", is_flag=True, help="Draw the lattice at its own scale, not at unit volume.")
def voronoi(lattice, out, samples, seed, extent, no_normalize, force):
    """Voronoi cell of a 2-D or 3-D LATTICE (catalog name or saved JSON), with sample errors and the NSM."""
    from latticeq.draw._io import check_output_path
    from latticeq.draw.voronoi import plot_voronoi, voronoi_picture

    try:
        check_output_path(out, force=force)
        L = load_lattice_arg(lattice)
        pic = voronoi_picture(L, samples=samples, extent=extent, seed=seed, normalize=not no_normalize)
        path = plot_voronoi(pic, out, reference_nsm=_reference_nsm(L.name))
    except _USER_ERRORS as exc:
        fail(str(exc))
    c = pic.cell
    click.echo(f"{pic.name}: {len(c.relevant)} relevant vectors, {len(c.vertices)} vertices, "
               f"cell volume {c.volume:.6g}, NSM {c.nsm:.7f} -> {path}")


@draw.command()
@click.argument("lattices", nargs=-1, required=True)
@_OUT
@_FORCE
@click.option("--max-norm2", type=click.FloatRange(min=0, min_open=True), default=None, help="Enumerate up to this squared norm (after scaling).")
@click.option("--no-normalize", is_flag=True, help="Do not scale the lattices to unit volume.")
def theta(lattices, out, max_norm2, no_normalize, force):
    """Theta image of one or more LATTICES overlaid (vectors by squared norm, per shell and cumulative)."""
    from latticeq.draw._io import check_output_path
    from latticeq.draw.theta import plot_theta, theta_curves

    try:
        check_output_path(out, force=force)
        lats = [load_lattice_arg(x) for x in lattices]
        curves = theta_curves(lats, max_norm2=max_norm2, normalize=not no_normalize)
        path = plot_theta(curves, out)
    except _USER_ERRORS as exc:
        fail(str(exc))
    for c in curves:
        shells = ", ".join(f"{r:.4g}:{k}" for r, k in zip(c.norms[1:6], c.counts[1:6]))
        click.echo(f"{c.name}: {c.cumulative[-1]} vectors up to {c.norms[-1]:.4g}; first shells {shells}")
    click.echo(f"-> {path}")


def _steps_options(f):
    f = click.option("--x", "x_path", type=click.Path(dir_okay=False), default=None,
                     help="Calibration inputs X (k × n, n = 2 or 3) as .npy; random if omitted.")(f)
    f = click.option("--w", "w_path", type=click.Path(dir_okay=False), default=None,
                     help="Weight row w (n,) as .npy; random if omitted.")(f)
    f = click.option("--dim", default=2, show_default=True, type=click.IntRange(2, 3), help="n for random X and w.")(f)
    f = click.option("--k", "k", default=None, type=click.IntRange(min=1), help="Rows of random X (default n + 1).")(f)
    f = click.option("--seed", default=0, show_default=True, type=int, help="Seed of random X and w.")(f)
    f = click.option("--bits", default=4, show_default=True, type=click.IntRange(1, 8), help="Grid bits (codes 0..2^bits-1).")(f)
    f = click.option("--step", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True), help="Grid step s.")(f)
    f = click.option("--percdamp", default=0.0, show_default=True, type=click.FloatRange(min=0), help="GPTQ damping fraction.")(f)
    return f


def _steps(x_path, w_path, dim, k, seed, bits=4, step=1.0, percdamp=0.0):
    import numpy as np

    from latticeq.draw.steps import example_problem, steps_picture

    for p in (x_path, w_path):
        if p and not Path(p).is_file():
            raise FileNotFoundError(f"no such .npy file: {p}")
    X = np.load(x_path, allow_pickle=False) if x_path else None
    w = np.load(w_path, allow_pickle=False) if w_path else None
    X, w = example_problem(X=X, w=w, dim=dim, k=k, seed=seed, bits=bits, step=step)
    return steps_picture(X, w, bits=bits, step=step, percdamp=percdamp)


def _draw_steps(plot, out, force, *steps_args):
    """Solve the small layer once (:func:`_steps`), draw it with ``plot`` to ``out`` (refusing to
    overwrite without ``force``) and report each solver's codes and error."""
    from latticeq.draw._io import check_output_path

    try:
        check_output_path(out, force=force)
        pic = _steps(*steps_args)
        path = plot(pic, out)
    except _USER_ERRORS as exc:
        fail(str(exc))
    for name, run in (("GPTQ", pic.gptq), ("Babai", pic.babai), ("LLL + Babai", pic.lll)):
        click.echo(f"{name:12s} codes {run.codes.tolist()}  output error ||X(w-q)||^2 = {run.error:.5g}  "
                   f"Babai bound {run.babai_bound:.4g}")
    click.echo(f"-> {path}")


@draw.command()
@_OUT
@_FORCE
@_steps_options
def babai(out, x_path, w_path, dim, k, seed, bits, step, percdamp, force):
    """Babai's nearest planes in data space, before and after LLL, from the real solvers (2-D or 3-D)."""
    from latticeq.draw.steps import plot_babai

    _draw_steps(plot_babai, out, force, x_path, w_path, dim, k, seed, bits, step, percdamp)


@draw.command()
@_OUT
@_FORCE
@_steps_options
def gptq(out, x_path, w_path, dim, k, seed, bits, step, percdamp, force):
    """GPTQ's moving target in parameter space beside the same steps in data space (2-D or 3-D)."""
    from latticeq.draw.steps import plot_gptq

    _draw_steps(plot_gptq, out, force, x_path, w_path, dim, k, seed, bits, step, percdamp)


@draw.command()
@click.argument("csv_path", metavar="STUDY_CSV", default="results/study.csv", type=click.Path(dir_okay=False))
@_OUT
@_FORCE
@click.option("--relative", is_flag=True, help="Plot dB above the sphere bound instead of the NSM.")
def study(csv_path, out, relative, force):
    """NSM against dimension from the study CSV (default results/study.csv), with the sphere bound."""
    from latticeq.draw._io import check_output_path
    from latticeq.draw.results import load_study, plot_study

    try:
        check_output_path(out, force=force)
        s = load_study(csv_path)
        path = plot_study(s, out, relative=relative)
    except _USER_ERRORS as exc:
        fail(str(exc))
    click.echo(f"{len(s.dim)} dimensions ({s.dim.min()}..{s.dim.max()}), methods {', '.join(s.methods_present())} -> {path}")


@draw.command()
@click.argument("records", nargs=-1, required=True, type=click.Path())
@_OUT
@_FORCE
@click.option("--linear", is_flag=True, help="Linear perplexity axis (default log).")
def quant(records, out, linear, force):
    """Perplexity against bits per method from run RECORDS (JSON files or directories of them)."""
    from latticeq.draw._io import check_output_path
    from latticeq.draw.results import plot_quant, quant_series

    try:
        check_output_path(out, force=force)
        qs = quant_series(list(records))
        path = plot_quant(qs, out, log=not linear)
    except _USER_ERRORS as exc:
        fail(str(exc))
    base = f"; unquantized perplexity {qs.baseline:.4g}" if qs.baseline is not None else ""
    click.echo(f"{len(qs.series)} quantized series ({', '.join(qs.series) or 'none yet'}){base} -> {path}")


COMMANDS = [draw]
