"""``latticeq quantize``, ``latticeq eval``, ``latticeq report``: whole-model quantization."""

from __future__ import annotations

import click

from latticeq.cli.common import fail, grid_options, no_incoherence_option, quiet_transformers
from latticeq.nn.finetune import DEFAULT_FINETUNE_PARAMS  # a constant; the module imports torch on use only

_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, RuntimeError)


def _methods_help() -> str:
    from latticeq.nn.solvers import METHODS_HELP

    return METHODS_HELP


@click.command()
@click.argument("model")
@grid_options
@click.option("--method", default="gptq", show_default=True, help=f"Layer solver: {_methods_help()}.")
@click.option("--codebook", default="scalar", show_default=True,
              help="scalar (GPTQ grids, GPTQ checkpoint), e8p (2, 3 or 4 bits) or voronoi:NAME / voronoi:PATH.json: "
                   "lattice-coded layers (block Babai, one scale per row; --method gptq+refine adds block coordinate "
                   "descent) in a latticeq-vq checkpoint.")
@no_incoherence_option
@click.option("--calib", default=None, help="Calibration text file(s), comma-separated, or wikitext2/c4 "
              "(default: the shipped Austen novels except Pride and Prejudice).")
@click.option("--nsamples", default=128, show_default=True, type=click.IntRange(min=1), help="Calibration windows N.")
@click.option("--seqlen", default=512, show_default=True, type=click.IntRange(min=2), help="Tokens per window L (calibration and eval).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the calibration windows and solvers.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--eval", "eval_text", default=None,
              help="Evaluate perplexity after quantizing: a UTF-8 text file, or 'default' (Pride and Prejudice).")
@click.option("--eval-windows", type=int, default=None, help="Evaluate only the first K windows.")
@click.option("--damp", default=0.01, show_default=True, type=click.FloatRange(min=0), help="Relative Hessian damping (percdamp).")
@click.option("--format", "checkpoint_format", default="gptq", show_default=True,
              type=click.Choice(["gptq", "gptq_v2"]), help="checkpoint_format (gptq stores zeros minus one).")
@click.option("--out", required=True, type=click.Path(), help="Output checkpoint folder.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out after its last finished block.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--no-reuse", is_flag=True,
              help="Recompute every forward in full instead of keeping the results of a block's finished parts: "
                   "the same codes, about 3x the forward work, less memory.")
def quantize(model, bits, group_size, group_refresh, sym, mse, act_order, method, codebook, no_incoherence, calib,
             nsamples, seqlen, seed, device, eval_text, eval_windows, damp, checkpoint_format, out, resume, force,
             no_progress, no_reuse):
    """Quantize MODEL (smollm2, a .gguf file, a model folder or a hub id) into a GPTQ checkpoint, or with
    a lattice --codebook into a latticeq-vq checkpoint."""
    from latticeq.nn.pipeline import quantize_to_checkpoint

    if no_progress:
        quiet_transformers()
    texts = None
    if calib is not None:
        texts = calib if calib.lower() in ("wikitext2", "c4") else [t for t in calib.split(",") if t]
    if method.strip() == "rtn" and calib is not None:
        click.echo("note: rtn rounds the weights alone; --calib is not used", err=True)
    try:
        rec = quantize_to_checkpoint(
            model, out, bits=bits, method=method, group_size=group_size, sym=sym, mse=mse, act_order=act_order,
            calib=texts, nsamples=nsamples, seqlen=seqlen, seed=seed, device=device,
            eval_text=eval_text, eval_windows=eval_windows, percdamp=damp,
            checkpoint_format=checkpoint_format, resume=resume, force=force, progress=not no_progress,
            group_refresh=group_refresh, codebook=codebook, incoherence=not no_incoherence,
            reuse_outputs=not no_reuse,
        )
    except _USER_ERRORS as exc:
        fail(str(exc))
    ppl = "not evaluated" if rec["perplexity"] is None else f"perplexity {rec['perplexity']:.3f}"
    label = method if codebook == "scalar" else f"{codebook} ({rec['bits_per_weight']:.3f} bits/weight)"
    click.echo(f"{rec['model']} {bits}-bit {label}: {ppl}; quantized in {rec['quant_time_s']:.0f} s, "
               f"peak memory {rec['peak_memory_bytes'] / 2**20:.0f} MiB -> {out}")


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output checkpoint folder.")
@click.option("--teacher", default=None,
              help="The float model to match (default: the model the checkpoint's run record names).")
@click.option("--epochs", default=2, show_default=True, type=click.IntRange(min=1), help="Passes over the windows.")
@click.option("--lr", default=3e-3, show_default=True, type=click.FloatRange(min=0, min_open=True, max=1, max_open=True),
              help="Adam learning rate, relative to each tensor's RMS value (cosine decay to 0).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Windows per step.")
@click.option("--train", "params", default=",".join(DEFAULT_FINETUNE_PARAMS), show_default=True,
              help="What to train: scales (the lattice-coded layers' row scales), norms (normalization weights), "
                   "in_scales (a new float16 scale per input column of each lattice-coded layer: +16 bits per "
                   "column, counted in bits per weight).")
@click.option("--calib", default=None, help="Calibration text file(s), comma-separated (default: the shipped "
              "Austen novels except Pride and Prejudice, as in quantize).")
@click.option("--nsamples", default=None, type=click.IntRange(min=1),
              help="Training windows (default: the quantization run's).")
@click.option("--seqlen", default=None, type=click.IntRange(min=2), help="Tokens per window (default: the run's).")
@click.option("--seed", default=None, type=int, help="Seed of the windows and the batch order (default: the run's).")
@click.option("--heldout", default=16, show_default=True, type=click.IntRange(min=1),
              help="Held-out windows (no token shared with training windows) that choose the epoch kept.")
@click.option("--eval", "eval_text", default=None,
              help="Evaluate perplexity afterwards: a UTF-8 text file, or 'default' (Pride and Prejudice).")
@click.option("--eval-windows", type=click.IntRange(min=1), default=None, help="Evaluate only the first K windows.")
@click.option("--resume", is_flag=True, help="Continue an interrupted fine-tuning run in --out.")
@click.option("--force", is_flag=True, help="Replace an existing --out.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def finetune(checkpoint, out, teacher, epochs, lr, batch_size, params, calib, nsamples, seqlen, seed, heldout,
             eval_text, eval_windows, resume, force, no_progress):
    """Fine-tune a latticeq-vq CHECKPOINT's row scales and normalization weights toward its float model
    (KL distillation on calibration windows; codes and bits per weight unchanged) into a new checkpoint."""
    from latticeq.nn.finetune import finetune_checkpoint

    if no_progress:
        quiet_transformers()
    texts = None if calib is None else [t for t in calib.split(",") if t]
    try:
        rec = finetune_checkpoint(checkpoint, out, teacher=teacher, epochs=epochs, lr=lr, batch_size=batch_size,
                                  params=tuple(p.strip() for p in params.split(",") if p.strip()), calib=texts,
                                  nsamples=nsamples, seqlen=seqlen, seed=seed, heldout=heldout, eval_text=eval_text,
                                  eval_windows=eval_windows, resume=resume, force=force, progress=not no_progress)
    except _USER_ERRORS as exc:
        fail(str(exc))
    ft = rec["finetune"]
    kl = ft["heldout_kl"]
    ppl = "not evaluated" if rec["perplexity"] is None else f"perplexity {rec['perplexity']:.3f}"
    click.echo(f"{rec['model']} fine-tuned ({ft['trainable']} parameters, {ft['epochs']} epochs, kept epoch "
               f"{ft['best_epoch']}): held-out KL {kl[0]:.5f} -> {kl[ft['best_epoch']]:.5f} nats/token; {ppl}; "
               f"{ft['time_s']:.0f} s -> {out}")


@click.command(name="eval")
@click.argument("model")
@click.option("--text", default=None, type=click.Path(), help="UTF-8 text file (default: Pride and Prejudice).")
@click.option("--seqlen", default=512, show_default=True, type=int, help="Window length L.")
@click.option("--max-windows", type=int, default=None, help="Score only the first K windows.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--record", type=click.Path(dir_okay=False), default=None, help="Also write a run record (JSON) here.")
@click.option("--force", is_flag=True, help="Overwrite an existing --record.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def eval_(model, text, seqlen, max_windows, device, record, force, no_progress):
    """Perplexity of MODEL_OR_CHECKPOINT on non-overlapping windows (GPTQ's evaluation)."""
    import time

    from latticeq.io import check_output

    if max_windows is not None and max_windows < 1:
        raise click.BadParameter(f"must be a positive integer, got {max_windows}", param_hint="--max-windows")
    if record:
        check_output(record, force=force, what="--record")
    if no_progress:
        quiet_transformers()
    try:
        from latticeq.nn.evaluate import eval_windows, perplexity
        from latticeq.nn.model import load_model, load_tokenizer, resolve_model

        t0 = time.perf_counter()
        src = resolve_model(model)
        tok = load_tokenizer(model)
        windows, _ = eval_windows(tok, text, seqlen)  # the text is checked before the model loads
        net = load_model(model, device=device)
        res = perplexity(net, tok, text=text, seqlen=seqlen, max_windows=max_windows, progress=not no_progress,
                         windows=windows)
        if record:
            from latticeq.nn.records import make_record, write_record

            qc = getattr(net.config, "quantization_config", None)
            write_record(make_record(
                model=src.name, method="none", bits=None, group_size=None, sym=False, act_order=False,
                calibration=None, seed=None, perplexity=res.perplexity,
                eval=res.eval_info(),
                wall_time_s=time.perf_counter() - t0, quant_time_s=None, peak_memory_bytes=None, layers=[],
            ) if qc is None else _checkpoint_record(model, res, time.perf_counter() - t0), record)
    except _USER_ERRORS as exc:
        fail(str(exc))
    se = "" if res.windows < 2 else f" ± {res.stderr_nll:.4f}"
    click.echo(f"perplexity {res.perplexity:.4f} (mean NLL {res.nll:.4f}{se} nats) on {res.windows}/{res.total_windows} "
               f"windows of {res.seqlen} tokens of {res.text}")


def _checkpoint_record(folder, res, wall):
    """A checkpoint's own record with the new evaluation."""
    import json
    from pathlib import Path

    from latticeq.nn.pipeline import RECORD_NAME

    p = Path(folder) / RECORD_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{str(folder)!r} has no {RECORD_NAME} to update")
    rec = json.loads(p.read_text())
    rec["perplexity"] = res.perplexity
    rec["eval"] = res.eval_info()
    for key in ("codebook", "bits_per_weight", "transforms", "threads", "finetune"):  # records written before these keys
        rec.setdefault(key, None)
    return rec


@click.command()
@click.argument("results", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the Markdown table here (default: print).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Perplexity against bits, PNG/SVG.")
@click.option("--html", type=click.Path(dir_okay=False), default=None, help="Self-contained HTML report.")
@click.option("--force", is_flag=True, help="Overwrite existing --out, --plot and --html files.")
def report(results, out, plot, html, force):
    """Table (and plot) of run RESULTS: record JSON files or folders of them."""
    from pathlib import Path

    from latticeq.cli.common import atomic_write_bytes
    from latticeq.io import check_output
    from latticeq.nn.records import markdown_table, plot_records, read_records

    for opt, p in (("--out", out), ("--plot", plot), ("--html", html)):
        if p:
            check_output(p, force=force, what=opt)

    try:
        recs = read_records(results)
        table = markdown_table(recs)
        if out:
            atomic_write_bytes(out, lambda f: f.write(table.encode("utf-8")))
        else:
            click.echo(table, nl=False)
        if plot:
            plot_records(recs, plot)
        if html:
            from latticeq.draw.html import write_html_report

            clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in recs]
            write_html_report(html, records=clean, title="latticeq quantization report")
    except _USER_ERRORS as exc:
        fail(str(exc))
    for p in (out, plot, html):
        if p:
            click.echo(f"wrote {Path(p)}", err=True)


COMMANDS = [quantize, finetune, eval_, report]
