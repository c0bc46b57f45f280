"""Commands ``quantize-layer`` and ``record-hessians``."""

from __future__ import annotations

import json
import os
import time

import click

from latticeq.cli.common import grid_options, no_incoherence_option

__all__ = ["COMMANDS", "quantize_layer", "record_hessians_cmd"]




@click.command("quantize-layer")
@click.argument("w_path", metavar="W.npy", type=click.Path(dir_okay=False))
@click.argument("h_path", metavar="H.npy", type=click.Path(dir_okay=False))
@grid_options
@click.option("--static-groups", is_flag=True, help="Group parameters from the original weights.")
@click.option("--method", default="gptq", show_default=True,
              help="rtn, gptq, babai, minpivot, lll, block, kbest; each optionally followed by +refine, +refit "
                   "or +refine+refit.")
@click.option("--percdamp", type=click.FloatRange(min=0), default=0.01, show_default=True, help="Damping fraction of mean(diag H).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--block", type=int, default=None, help="Block size b for --method block.")
@click.option("--max-nodes", type=int, default=None, help="Node budget per row and block for --method block.")
@click.option("--k", "k", type=int, default=None, help="Candidates per row for --method kbest.")
@click.option("--codebook", default="scalar", show_default=True,
              help="scalar, e8p (2, 3 or 4 bits), voronoi:NAME (D4, E8, BW16, Leech) or voronoi:PATH.json; with a "
                   "vector codebook --bits is bits per weight (per dimension) and the solver is block Babai with "
                   "least-squares scales.")
@no_incoherence_option
@click.option("--out", "out", type=click.Path(dir_okay=False), required=True, help="Output .npz.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out.")
def quantize_layer(w_path, h_path, bits, group_size, group_refresh, sym, mse, static_groups, act_order, method, percdamp, seed, block, max_nodes, k, codebook, no_incoherence, out, force):
    """Quantize one linear layer W (m×n) with proxy Hessian H (n×n) and write OUT.npz
    (codes, scales, zeros, g_idx, dequant, perm, error, relative_error, bits_per_weight, provenance;
    with a vector --codebook: codes, scales, dequant, perm, error, relative_error, bits_per_weight,
    provenance)."""
    import numpy as np
    import torch

    from latticeq import __version__
    from latticeq.nn.grid import Grid
    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers import solve

    from latticeq.cli.common import load_array
    from latticeq.io import atomic_write, check_output

    for p in (w_path, h_path):
        if not os.path.exists(p):
            raise click.BadParameter(f"file not found: {p}")
    check_output(out, force=force, what="--out")  # before any work
    from latticeq.lattice.codebook import parse_codebook

    try:
        cb = parse_codebook(codebook, bits)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--codebook") from None
    W = torch.from_numpy(load_array(w_path, "W.npy"))
    H = torch.from_numpy(load_array(h_path, "H.npy"))
    if cb is not None:
        given = [flag for flag, v in (("--group-size", group_size is not None), ("--sym", sym), ("--mse", mse),
                                      ("--static-groups", static_groups), ("--block", block is not None),
                                      ("--max-nodes", max_nodes is not None), ("--k", k is not None)) if v]
        if given:
            raise click.BadParameter(f"{', '.join(given)} cannot be used with a vector codebook (one least-squares "
                                     "scale per row, block Babai)", param_hint="--codebook")
        _vector_layer(W, H, cb, bits, method, act_order, percdamp, seed, not no_incoherence, out, w_path, h_path)
        return
    try:
        grid = Grid(bits=bits, group_size=group_size, sym=sym, mse=mse, static_groups=static_groups,
                    group_refresh=group_refresh)
        problem = LayerProblem(W, H)
        options = {kk: v for kk, v in {"block": block, "max_nodes": max_nodes, "k": k}.items() if v is not None}
        sol = solve(problem, grid, method, act_order=act_order, percdamp=percdamp, seed=seed, **options)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    provenance = {
        "method": method, "bits": bits, "group_size": group_size, "group_refresh": group_refresh,
        "sym": sym, "mse": mse,
        "static_groups": static_groups, "act_order": act_order, "percdamp": percdamp, "seed": seed,
        "options": options, "W": os.path.abspath(w_path), "H": os.path.abspath(h_path),
        "latticeq": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": sol.stats.get("seconds"),
    }
    m, n = sol.codes.shape
    groups = sol.scales.shape[1]
    # everything the GPTQ format stores: codes, fp16 scales and bits-wide zeros per group, int32 g_idx
    bpw = (bits * m * n + groups * m * (16 + bits) + 32 * n) / (m * n)
    arrays = dict(
        bits_per_weight=np.float64(bpw),
        codes=sol.codes.cpu().numpy(),
        scales=sol.scales.cpu().numpy(),
        zeros=sol.zeros.cpu().numpy(),
        g_idx=sol.g_idx.cpu().numpy(),
        dequant=sol.dequant.cpu().numpy(),
        perm=sol.perm.cpu().numpy(),
        error=np.float64(sol.error),
        relative_error=np.float64(sol.relative_error),
        provenance=json.dumps(provenance),
    )
    # a unique temp file beside OUT, renamed into place: concurrent writers never collide
    atomic_write(out, lambda f: np.savez(f, **arrays))
    click.echo(f"{method}: error {sol.error:.6g}, relative error {sol.relative_error:.6g}, {bpw:.3f} bits/weight, "
               f"{sol.stats.get('seconds', 0):.3f} s -> {out}")


def _vector_layer(W, H, cb, bits, method, act_order, percdamp, seed, incoherence, out, w_path, h_path):
    """``quantize-layer --codebook e8p|voronoi:…``: block Babai with the codebook, ``--method
    gptq+refine`` adding block coordinate descent (latticeq.nn.solvers.vq)."""
    import numpy as np

    from latticeq import __version__
    from latticeq.io import atomic_write
    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers.vq import vq_refine_passes, vq_solve

    try:
        passes = vq_refine_passes(method)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--method") from None
    try:
        sol = vq_solve(LayerProblem(W, H), cb, act_order=act_order, percdamp=percdamp, seed=seed,
                       incoherence=incoherence, refine_passes=passes)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    provenance = {"codebook": cb.spec(), "method": method, "bits_per_dimension": bits, "act_order": act_order,
                  "percdamp": percdamp,
                  "seed": seed, "transforms": sol.transforms, "W": os.path.abspath(w_path), "H": os.path.abspath(h_path),
                  "latticeq": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "seconds": sol.stats["seconds"]}
    arrays = dict(dequant=sol.dequant.numpy(), codes=sol.codes, scales=sol.scales.numpy(),
                  perm=sol.perm.numpy(), error=np.float64(sol.error), relative_error=np.float64(sol.relative_error),
                  bits_per_weight=np.float64(sol.bits_per_weight), provenance=json.dumps(provenance))
    atomic_write(out, lambda f: np.savez(f, **arrays))
    click.echo(f"{cb.spec()['kind']} d={cb.dim}: error {sol.error:.6g}, relative error {sol.relative_error:.6g}, "
               f"{sol.bits_per_weight:.3f} bits/weight, {sol.stats['seconds']:.2f} s -> {out}")


@click.command("record-hessians")
@click.option("--model", default="smollm2", show_default=True, help="Model spec (see latticeq.nn.model).")
@click.option("--blocks", default="0,15,29", show_default=True, help="Comma-separated block indices.")
@click.option("--kinds", default="q,k,v,o,gate,up,down", show_default=True, help="Comma-separated layer kinds.")
@click.option("--nsamples", type=int, default=64, show_default=True)
@click.option("--seqlen", type=int, default=512, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out-dir", type=click.Path(file_okay=False), default=None, help="Default ~/.cache/latticeq/hessians/...")
@click.option("--progress/--no-progress", default=True)
def record_hessians_cmd(model, blocks, kinds, nsamples, seqlen, seed, out_dir, progress):
    """Record (W, H) of real linear layers from calibration text (Austen, P&P held out)."""
    if not progress:
        from latticeq.cli.common import quiet_transformers

        quiet_transformers()
    from latticeq.nn.hessians import record_hessians

    try:
        block_list = [int(b) for b in blocks.split(",") if b.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"--blocks must be comma-separated integers, got {blocks!r}") from exc
    try:
        out = record_hessians(model, blocks=block_list, kinds=tuple(k.strip() for k in kinds.split(",") if k.strip()),
                              nsamples=nsamples, seqlen=seqlen, seed=seed, out_dir=out_dir, progress=progress)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(out))


COMMANDS = [quantize_layer, record_hessians_cmd]
