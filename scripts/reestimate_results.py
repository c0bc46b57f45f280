"""Re-estimate the NSM of committed search results on more fresh samples (issue 3: ≥ 10⁷).

    python scripts/reestimate_results.py results/lattices/n17-matrix-exp-free.json ... [--samples 10000000]

Each file keeps its generator; its ``nsm`` and the provenance fields ``nsm``, ``nsm_stderr`` and
``nsm_samples`` are replaced by the new estimate (core estimator, exact closest point), and the
earlier estimate is kept under ``provenance.previous_nsm``. Files are rewritten atomically.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

from latticeq import __version__
from latticeq.design.nsm import estimate_nsm
from latticeq.lattice import Lattice


def reestimate(path: Path, samples: int, seed: int) -> dict:
    d = json.loads(path.read_text())
    L = Lattice.from_dict(d)
    r = estimate_nsm(L, samples=samples, seed=seed, progress=False)
    prov = d.setdefault("provenance", {})
    prov["previous_nsm"] = {k: prov.get(k) for k in ("nsm", "nsm_stderr", "nsm_samples")}
    prov.update({"nsm": r.nsm, "nsm_stderr": r.stderr, "nsm_samples": r.samples, "nsm_seed": seed,
                 "nsm_estimator": f"latticeq.design.nsm.estimate_nsm (latticeq {__version__})",
                 "nsm_time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    d["nsm"] = {"value": r.nsm, "stderr": r.stderr}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(d, f, indent=1)
    os.replace(tmp, path)
    return {"file": str(path), "nsm": r.nsm, "stderr": r.stderr, "samples": r.samples, "seconds": r.wall_time_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    for p in args.files:
        if not p.exists():
            raise SystemExit(f"error: no result file at {p}")
    for p in args.files:
        print(json.dumps(reestimate(p, args.samples, args.seed)), flush=True)


if __name__ == "__main__":
    main()
