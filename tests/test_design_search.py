import json
import re

import numpy as np
import pytest

from latticeq.design import fusion as F
from latticeq.design.search import estimate_nsm_mc, run_search
from latticeq.lattice import Lattice

SMALL = dict(fusion_overrides={"steps": 30, "batch": 128}, final_samples=20_000,
             select_samples=5_000, progress=False, workers=1)


def test_estimate_nsm_mc_known_values():
    g, se = estimate_nsm_mc(np.eye(3) * 2.0, 200_000, seed=0)
    assert abs(g - 1 / 12) < 4 * se
    from latticeq.lattice import catalog
    g, se = estimate_nsm_mc(catalog.get("D4").generator, 200_000, seed=1)
    assert abs(g - 13 / (120 * np.sqrt(2))) < 4 * se
    with pytest.raises(ValueError, match="square"):
        estimate_nsm_mc(np.ones((2, 3)))


def test_estimate_nsm_mc_threads_give_the_same_result_bit_for_bit(tmp_path):
    from latticeq.design.search import SearchPaused
    from latticeq.lattice import catalog

    B = catalog.get("E8").generator
    straight = estimate_nsm_mc(B, 23_000, seed=7, chunk=2_000)  # 12 chunks, the last one short
    assert estimate_nsm_mc(B, 23_000, seed=7, chunk=2_000, threads=5) == straight
    assert abs(straight[0] - 0.0716821) < 4 * straight[1]
    # paused by one thread count and resumed by another: still the same result
    state = tmp_path / "state.json"
    with pytest.raises(SearchPaused):
        estimate_nsm_mc(B, 23_000, seed=7, chunk=2_000, threads=3, state=state, deadline=0.0)
    assert json.loads(state.read_text())["chunks"] == 3
    assert estimate_nsm_mc(B, 23_000, seed=7, chunk=2_000, threads=2, state=state) == straight
    with pytest.raises(ValueError, match="threads"):
        estimate_nsm_mc(B, 1000, threads=0)


def test_search_writes_result_with_provenance(tmp_path):
    res = run_search(4, "matrix-exp", restarts=2, seed=3, out=tmp_path, **SMALL)
    assert res.path == tmp_path / "n4-matrix-exp.json"
    d = json.loads(res.path.read_text())
    p = d["provenance"]
    for key in ("method", "seed", "steps", "nsm", "nsm_stderr", "wall_time", "restart_nsms", "latticeq"):
        assert key in p
    assert p["method"] == "matrix-exp" and p["nsm_samples"] == 20_000 and len(p["restart_nsms"]) == 2
    L = Lattice.from_json(res.path)
    assert L.volume == pytest.approx(1.0) and L.nsm[0] == pytest.approx(res.nsm)
    assert not (tmp_path / ".checkpoints" / "n4-matrix-exp").exists()


def test_splice_method_is_exact(tmp_path):
    res = run_search(13, "splice", out=tmp_path, progress=False)
    assert res.nsm == pytest.approx(0.0710346, abs=1e-7) and res.stderr == 0.0
    assert Lattice.from_json(res.path).dim == 13


def test_interrupted_search_resumes_without_losing_finished_restarts(tmp_path, monkeypatch):
    real = F.fusion_advance
    calls = {"n": 0}

    def dying(state, max_steps):  # a kill in the middle of the second restart
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(state, max_steps)

    monkeypatch.setattr(F, "fusion_advance", dying)
    kw = dict(SMALL, fusion_overrides={"steps": 30, "batch": 128}, checkpoint_every=0.0, chunk=10)
    with pytest.raises(KeyboardInterrupt):
        run_search(3, "householder", restarts=2, seed=1, out=tmp_path,
                   **{k: v for k, v in kw.items()})
    ck = tmp_path / ".checkpoints" / "n3-householder"
    r0 = json.loads((ck / "r0.json").read_text())
    r1 = json.loads((ck / "r1.json").read_text())
    assert r0["status"] == "done" and r1["status"] == "running" and 0 < r1["step"] < 30
    with pytest.raises(FileExistsError, match="--resume"):
        run_search(3, "householder", restarts=2, seed=1, out=tmp_path, **kw)
    monkeypatch.setattr(F, "fusion_advance", real)
    res = run_search(3, "householder", restarts=2, seed=1, out=tmp_path, resume=True, **kw)
    assert res.restart_nsms[0] == [r0["quick_nsm"], r0["quick_stderr"]]  # kept, not rerun
    # the resumed restart ends exactly where an uninterrupted one does
    fresh = run_search(3, "householder", restarts=2, seed=1, out=tmp_path / "fresh", **kw)
    assert fresh.restart_nsms == res.restart_nsms


def test_corrupt_and_foreign_checkpoints(tmp_path):
    ck = tmp_path / ".checkpoints" / "n4-sgd"
    ck.mkdir(parents=True)
    (ck / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt checkpoint manifest"):
        run_search(4, "sgd", out=tmp_path, resume=True, progress=False)
    (ck / "manifest.json").write_text(json.dumps({"format": "someone.else"}))
    with pytest.raises(ValueError, match="foreign checkpoint"):
        run_search(4, "sgd", out=tmp_path, resume=True, progress=False)
    (ck / "manifest.json").write_text(json.dumps({"format": "latticeq.search-checkpoint", "dim": 5,
                                                  "method": "sgd", "preset": "fast", "seed": 0}))
    with pytest.raises(ValueError, match="other settings \\(dim: checkpoint 5, now 4"):
        run_search(4, "sgd", out=tmp_path, resume=True, progress=False)
    (ck / "manifest.json").write_text(json.dumps({"format": "latticeq.search-checkpoint", "dim": 4,
                                                  "method": "sgd", "preset": "fast", "seed": 0,
                                                  "restarts": 1, "select_samples": 200_000, "init": None,
                                                  "fusion_overrides": None, "sgd_overrides": None}))
    (ck / "r0.json").write_text("garbage")
    with pytest.raises(ValueError, match="corrupt restart checkpoint"):
        run_search(4, "sgd", out=tmp_path, resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        run_search(5, "sgd", out=tmp_path, resume=True, progress=False)


def test_never_overwrites_a_better_result(tmp_path):
    better = Lattice(np.eye(4), nsm=(0.01, 0.0))
    better.to_json(tmp_path / "n4-matrix-exp.json")
    res = run_search(4, "matrix-exp", out=tmp_path, **SMALL)
    assert res.path.name == "n4-matrix-exp.1.json"
    assert Lattice.from_json(tmp_path / "n4-matrix-exp.json").nsm[0] == 0.01


@pytest.mark.parametrize("kw, match", [
    (dict(dim=1, method="sgd"), "2..64"), (dict(dim=65, method="sgd"), "2..64"),
    (dict(dim=8, method="annealing"), "unknown method 'annealing'"),
    (dict(dim=8, method="sgd", preset="turbo"), "unknown preset 'turbo'"),
    (dict(dim=8, method="sgd", restarts=0), "restarts"),
    (dict(dim=8, method="householder", init=np.eye(8)), "fusion starts from a splice"),
    (dict(dim=8, method="sgd", init=np.eye(7)), r"expected \(8, 8\)"),
    (dict(dim=13, method="splice", fusion_overrides={"steps": 5}), "takes no steps"),
    (dict(dim=13, method="splice", restarts=3), "takes no restarts"),
    (dict(dim=13, method="splice", init=np.eye(13)), "takes no init"),
    (dict(dim=8, method="sgd", fusion_overrides={"noise": 1.0}), "apply to the fusion methods"),
    (dict(dim=8, method="householder", sgd_overrides={"mu0": 1e-3}), "apply to sgd, not householder"),
])
def test_search_bad_input(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        run_search(out=tmp_path, progress=False, **kw)


def test_sgd_search_from_init(tmp_path):
    from latticeq.lattice import catalog
    res = run_search(4, "sgd", init=catalog.get("D4"), name="sgd-fused", out=tmp_path,
                     sgd_overrides={"steps": 2000, "mu0": 1e-4}, final_samples=50_000,
                     progress=False, workers=1)
    assert res.path.name == "n4-sgd-fused.json"
    assert abs(res.nsm - 13 / (120 * np.sqrt(2))) < 5 * res.stderr + 2e-4  # stays at D4
    assert json.loads(res.path.read_text())["provenance"]["init_from"] == "lattice D4"
    res = run_search(4, "sgd", init=np.eye(4), name="sgd-z4", out=tmp_path,
                     sgd_overrides={"steps": 200, "mu0": 1e-4}, final_samples=2000, progress=False, workers=1)
    assert json.loads(res.path.read_text())["provenance"]["init_from"] == "given generator"


def test_fusion_search_from_a_given_splice(tmp_path):
    from latticeq.design.splice import splice
    S = splice(["D4", "Z1"])  # not the best 5-dimensional splice (that is D5*)
    res = run_search(5, "matrix-exp-free", init=S, name="mef-d4z1", out=tmp_path, **SMALL)
    p = json.loads(res.path.read_text())["provenance"]
    assert p["components"] == ["D4", "Z1"] and p["init_from"] == "splice D4×Z1"
    assert p["splice_nsm"] == pytest.approx(S.provenance["nsm"])


@pytest.mark.slow
def test_restarts_in_local_processes(tmp_path):
    res = run_search(3, "matrix-exp-free", restarts=2, workers=2, out=tmp_path,
                     **{k: v for k, v in SMALL.items() if k != "workers"})
    assert len(res.restart_nsms) == 2


@pytest.mark.slow
def test_restarts_as_ray_tasks(tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        res = run_search(3, "householder", restarts=2, ray="auto", out=tmp_path,
                         **{k: v for k, v in SMALL.items() if k != "workers"})
        assert len(res.restart_nsms) == 2 and res.path.exists()
    finally:
        ray.shutdown()


def test_log_lines_report_progress_rate_and_eta(tmp_path, capfd):
    run_search(4, "sgd", out=tmp_path, sgd_overrides={"steps": 4000}, final_samples=2000,
               checkpoint_every=0.0, chunk=1000, progress=False, log_lines=True, workers=1)
    lines = [ln for ln in capfd.readouterr().out.splitlines() if "restart 0: step" in ln]
    assert lines, "no progress line was printed"
    assert re.search(r"step 1000/4000 \(25\.0%\), running NSM 0\.\d{6}, \d+ s, [\d,]+ steps/s, ETA \d+:\d\d",
                     lines[0]), lines[0]
