"""Long jobs survive interruptions: searches, campaigns and quantization runs resume exactly,
refuse to resume under other settings (naming the difference), and a refused start leaves no
state behind that would block the next run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from latticeq.cli import main
from latticeq.design.campaign import run_campaign
from latticeq.design.search import SearchPaused, run_search
from model_helpers import tiny_model_folder

SMALL = dict(final_samples=2000, select_samples=1000, progress=False, workers=1)


def test_invalid_settings_write_no_checkpoint(tmp_path):
    for kw in ({"sgd_overrides": {"mu0": float("nan")}}, {"sgd_overrides": {"steps": 0}},
               {"sgd_overrides": {"mu0": -1.0}}, {"checkpoint_every": -1.0}):
        with pytest.raises(ValueError):
            run_search(4, "sgd", out=tmp_path, **SMALL, **kw)
    assert not any(tmp_path.rglob("*")), "a rejected search wrote files"
    run_search(4, "sgd", out=tmp_path, sgd_overrides={"steps": 500}, **SMALL)  # not blocked afterwards


def test_search_resume_refuses_other_settings_and_continues_exactly(tmp_path):
    kw = dict(sgd_overrides={"steps": 3000}, chunk=500, checkpoint_every=0.0, **SMALL)
    with pytest.raises(SearchPaused):
        run_search(5, "sgd", out=tmp_path / "a", deadline=0.0, **kw)  # pauses after the first chunk
    ck = tmp_path / "a" / ".checkpoints" / "n5-sgd"
    assert (ck / "r0.json").exists()
    with pytest.raises(ValueError, match="sgd_overrides: checkpoint \\{'steps': 3000\\}, now \\{'steps': 4000\\}"):
        run_search(5, "sgd", out=tmp_path / "a", resume=True, **{**kw, "sgd_overrides": {"steps": 4000}})
    with pytest.raises(ValueError, match="restarts: checkpoint 1, now 2"):
        run_search(5, "sgd", out=tmp_path / "a", resume=True, restarts=2, **kw)
    resumed = run_search(5, "sgd", out=tmp_path / "a", resume=True, **kw)
    straight = run_search(5, "sgd", out=tmp_path / "b", **kw)
    assert resumed.nsm == straight.nsm
    assert (resumed.generator == straight.generator).all()


def test_final_estimate_checkpoints_and_resumes_exactly(tmp_path):
    import numpy as np

    from latticeq.design.search import estimate_nsm_mc

    B = np.array([[1.0, 0, 0], [0.5, 0.9, 0], [0.3, 0.2, 1.1]])
    st = tmp_path / "final-nsm.json"
    straight = estimate_nsm_mc(B, 5000, seed=3, chunk=1000)
    with pytest.raises(SearchPaused, match="1000/5000 points"):
        estimate_nsm_mc(B, 5000, seed=3, chunk=1000, state=st, deadline=0.0)
    assert json.loads(st.read_text())["done"] == 1000
    with pytest.raises(ValueError, match="samples: checkpoint 5000, now 6000"):
        estimate_nsm_mc(B, 6000, seed=3, chunk=1000, state=st)
    with pytest.raises(ValueError, match="generator_sha256"):
        estimate_nsm_mc(B * 2, 5000, seed=3, chunk=1000, state=st)
    assert estimate_nsm_mc(B, 5000, seed=3, chunk=1000, state=st) == straight
    with pytest.raises(ValueError, match="deadline needs a state"):
        estimate_nsm_mc(B, 5000, deadline=0.0)


def test_search_paused_at_every_chance_equals_a_straight_run(tmp_path):
    """With a deadline already past, a search stops at every checkpoint, the final estimate's
    10⁵-point chunks included; resuming until done gives the straight run's lattice and NSM."""
    kw = dict(sgd_overrides={"steps": 1000}, chunk=500, checkpoint_every=0.0,
              **{**SMALL, "final_samples": 250_000})
    ck = tmp_path / "ck" / "n4-sgd"
    pauses, final_paused = 0, False
    while True:
        try:
            res = run_search(4, "sgd", out=tmp_path / "a", checkpoints=tmp_path / "ck", resume=pauses > 0,
                             deadline=0.0, **kw)
            break
        except SearchPaused:
            pauses += 1
            final_paused |= (ck / "final-nsm.json").exists()
            assert pauses < 20
    assert final_paused and not ck.exists()
    straight = run_search(4, "sgd", out=tmp_path / "b", **kw)
    assert res.nsm == straight.nsm and res.stderr == straight.stderr
    assert (res.generator == straight.generator).all()
    # provenance: the paused run says it was resumed; the estimate's seconds count over all legs
    prov = json.loads(res.path.read_text())["provenance"]
    prov0 = json.loads(straight.path.read_text())["provenance"]
    assert prov["resumed"] is True and prov0["resumed"] is False
    assert prov["nsm_seconds"] > 0 and prov0["nsm_seconds"] > 0


def test_cli_search_budget_pauses_with_status_3_and_resumes(tmp_path):
    args = ["search", "--dim", "4", "--method", "sgd", "--steps", "400", "--samples", "2000",
            "--workers", "1", "--out", str(tmp_path / "res"), "--checkpoints", str(tmp_path / "ck"),
            "--checkpoint-every", "0", "--no-progress"]
    r = CliRunner().invoke(main, [*args, "--budget-hours", "1e-12"])
    assert r.exit_code == 3 and "paused" in r.output and "--resume" in r.output, r.output
    assert (tmp_path / "ck" / "n4-sgd" / "manifest.json").exists()
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "pass --resume" in r.output
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "res" / "n4-sgd.json").exists() and not (tmp_path / "ck" / "n4-sgd").exists()


def test_campaign_pauses_resumes_and_refuses_other_settings(tmp_path):
    kw = dict(methods=["sgd"], steps=2000, samples=2000, out=tmp_path / "res", checkpoint_every=0.0,
              progress=False)
    rec = run_campaign("4-5", state=tmp_path / "c", budget_hours=1e-9, **kw)
    assert rec["tasks"]["n4-sgd"]["status"] == "paused"
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_campaign("4-5", state=tmp_path / "c", **kw)
    with pytest.raises(ValueError, match="steps: campaign 2000, now 3000"):
        run_campaign("4-5", state=tmp_path / "c", resume=True, **{**kw, "steps": 3000})
    with pytest.raises(ValueError, match="dims: campaign \\[4, 5\\], now \\[4, 5, 6\\]"):
        run_campaign("4-6", state=tmp_path / "c", resume=True, **kw)
    rec = run_campaign("4-5", state=tmp_path / "c", resume=True, **kw)
    assert all(t["status"] == "done" for t in rec["tasks"].values()) and len(rec["tasks"]) == 2
    saved = json.loads((tmp_path / "c" / "campaign.json").read_text())
    assert saved["tasks"]["n5-sgd"]["nsm"] == rec["tasks"]["n5-sgd"]["nsm"]
    # the same campaign run straight through gives the same lattices
    straight = run_campaign("4-5", state=tmp_path / "c2", **{**kw, "out": tmp_path / "res2"})
    for key in ("n4-sgd", "n5-sgd"):
        assert straight["tasks"][key]["nsm"] == rec["tasks"][key]["nsm"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("tiny"))


def _quantize(tiny, out, *extra):
    return CliRunner().invoke(main, ["quantize", str(tiny / "model"), "--bits", "3", "--method", "gptq",
                                     "--calib", str(tiny / "calib.txt"), "--nsamples", "4", "--seqlen", "32",
                                     "--out", str(out), "--no-progress", *extra])


def test_run_killed_before_its_first_block_can_be_resumed(tiny, tmp_path):
    from latticeq.nn.pipeline import STATE_DIR

    out = tmp_path / "q"
    (out / STATE_DIR).mkdir(parents=True)
    (out / STATE_DIR / "run.json").write_text("{}")  # what a kill during calibration leaves
    r = _quantize(tiny, out)
    assert r.exit_code == 2 and "unfinished run: pass --resume" in r.output
    r = _quantize(tiny, out, "--resume")
    assert r.exit_code == 0, r.output
    assert (out / "latticeq_record.json").is_file() and not (out / STATE_DIR).exists()


def test_force_replaces_a_checkpoint_but_nothing_else(tiny, tmp_path):
    out = tmp_path / "q"
    assert _quantize(tiny, out).exit_code == 0
    assert _quantize(tiny, out, "--force").exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    r = _quantize(tiny, tmp_path / "mine", "--force")
    assert r.exit_code == 2 and "did not write" in r.output
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_failed_device_leaves_no_folder_and_an_empty_folder_is_usable(tiny, tmp_path):
    out = tmp_path / "q"
    r = _quantize(tiny, out, "--device", "cuda:7")
    assert r.exit_code == 2
    assert not out.exists()
    out.mkdir()
    assert _quantize(tiny, out).exit_code == 0


def test_an_unreadable_earlier_result_is_kept_not_overwritten(tmp_path):
    bad = tmp_path / "n4-sgd.json"
    bad.write_text("{broken")
    with pytest.warns(UserWarning, match="not a readable lattice result"):
        res = run_search(4, "sgd", out=tmp_path, sgd_overrides={"steps": 500}, **SMALL)
    assert res.path.name == "n4-sgd.1.json" and bad.read_text() == "{broken"


def test_campaign_shares_one_pool_across_dimensions(tmp_path):
    """With two workers and one restart per dimension, dimension 5 starts while 4 still runs
    (one shared pool, not one search after another), and the lattices equal those of a
    one-task-at-a-time campaign."""
    kw = dict(methods=["sgd"], steps=20000, samples=2000, checkpoint_every=0.0, progress=False)
    pooled = run_campaign("4-5", state=tmp_path / "p", out=tmp_path / "rp", workers=2, **kw)
    serial = run_campaign("4-5", state=tmp_path / "s", out=tmp_path / "rs", workers=1, **kw)
    t, u = pooled["tasks"], serial["tasks"]
    assert t["n5-sgd"]["started"] < t["n4-sgd"]["finished"]
    assert u["n5-sgd"]["started"] >= u["n4-sgd"]["finished"]
    for key in ("n4-sgd", "n5-sgd"):
        assert pooled["tasks"][key]["nsm"] == serial["tasks"][key]["nsm"]


def test_campaign_tasks_queue_their_restarts_in_task_order():
    """Task 1's thread may be ready first; its restarts still queue after task 0's."""
    import threading

    from latticeq.design.campaign import _Turns

    order = []

    class Pool:
        def submit(self, fn, *args):
            order.append(fn(*args))

    turns = _Turns(Pool())
    late = threading.Thread(target=lambda: [turns.view(1).submit(lambda: "task 1"), turns.view(1).submitted()])
    late.start()
    late.join(timeout=0.3)
    assert late.is_alive() and order == []  # waiting for task 0
    turns.view(0).submit(lambda: "task 0, restart 0")
    turns.view(0).submit(lambda: "task 0, restart 1")
    turns.view(0).submitted()
    late.join(timeout=5)
    assert order == ["task 0, restart 0", "task 0, restart 1", "task 1"]


class _Clock:
    """A stand-in for the ``time`` module in ``latticeq.design.search`` and ``.nsm``: it moves only when a
    patched kernel says its chunk took 100 s, so pause decisions are deterministic."""

    def __init__(self):
        self.t = 1.0e6

    def time(self):
        return self.t

    monotonic = perf_counter = time


def _chunks_take_100_s(monkeypatch, owner, name):
    """Put the search and NSM modules on a :class:`_Clock` and make ``owner.name`` (called once a
    chunk or batch) take 100 s on it; returns the clock."""
    from latticeq.design import nsm, search

    clock, real = _Clock(), getattr(owner, name)

    def slow(*args):
        clock.t += 100.0
        return real(*args)

    for module in (search, nsm):
        monkeypatch.setattr(module, "time", clock)
    monkeypatch.setattr(owner, name, slow)
    return clock


def test_estimate_pauses_before_a_chunk_that_would_end_past_the_deadline(tmp_path, monkeypatch):
    """Chunks take 100 s and the budget is 250 s: the estimate stops after two chunks (the third
    would end at 300 s), not after the chunk that crosses the deadline; resuming gives the
    straight result."""
    import numpy as np

    from latticeq.design import search

    B = np.array([[1.0, 0, 0], [0.5, 0.9, 0], [0.3, 0.2, 1.1]])
    straight = search.estimate_nsm_mc(B, 5000, seed=3, chunk=1000)
    clock = _chunks_take_100_s(monkeypatch, search.K, "nsm_moments")
    st = tmp_path / "final-nsm.json"
    with pytest.raises(SearchPaused, match="2000/5000 points"):
        search.estimate_nsm_mc(B, 5000, seed=3, chunk=1000, state=st, deadline=clock.t + 250.0)
    assert clock.t - 1.0e6 == 200.0  # stopped inside the budget
    with pytest.raises(SearchPaused, match="3000/5000 points"):  # a leg runs at least one chunk
        search.estimate_nsm_mc(B, 5000, seed=3, chunk=1000, state=st, deadline=clock.t + 50.0)
    assert search.estimate_nsm_mc(B, 5000, seed=3, chunk=1000, state=st) == straight


def test_restart_pauses_before_a_chunk_that_would_end_past_the_deadline(tmp_path, monkeypatch):
    """The same for optimizer chunks: 500-step SGD chunks of 100 s and a 250 s budget stop a
    restart at step 1000 of 3000, and the resumed search equals a straight one."""
    from latticeq.design import sgd as S

    kw = dict(sgd_overrides={"steps": 3000}, chunk=500, checkpoint_every=1e9, **SMALL)
    straight = run_search(5, "sgd", out=tmp_path / "b", **kw)
    clock = _chunks_take_100_s(monkeypatch, S, "sgd_advance")
    with pytest.raises(SearchPaused, match="paused at step 1000 of 3000"):
        run_search(5, "sgd", out=tmp_path / "a", deadline=clock.t + 250.0, **kw)
    assert clock.t - 1.0e6 == 200.0
    rec = json.loads((tmp_path / "a" / ".checkpoints" / "n5-sgd" / "r0.json").read_text())
    assert rec["step"] == 1000 and rec["status"] == "running"
    resumed = run_search(5, "sgd", out=tmp_path / "a", resume=True, **kw)
    assert resumed.nsm == straight.nsm and (resumed.generator == straight.generator).all()


def test_reestimate_pauses_inside_its_budget_and_the_same_call_continues(tmp_path, monkeypatch):
    """``latticeq nsm FILE --update --budget-hours``: batches of 100 s and a 250 s budget stop the
    re-estimate after two batches with the file untouched and the checkpoint kept; the same call
    again (at least one batch per leg) finishes with the straight result, recorded in the file."""
    from latticeq.design import nsm
    from latticeq.lattice import Lattice, catalog

    def saved(name):
        path = tmp_path / name
        Lattice(catalog.get("D4").generator, name="mine").to_json(path)
        return path

    straight = nsm.reestimate(saved("n4-straight.json"), samples=6000, seed=3, progress=False)
    path = saved("n4-paused.json")
    before = path.read_bytes()
    clock = _chunks_take_100_s(monkeypatch, Lattice, "closest_point")
    # 6000 points come in batches of 6000 // 32 = 187
    with pytest.raises(SearchPaused, match="paused at 374/6000 points"):
        nsm.reestimate(path, samples=6000, seed=3, progress=False, deadline=clock.t + 250.0)
    assert clock.t - 1.0e6 == 200.0  # stopped inside the budget
    assert path.read_bytes() == before  # the file is written only with the finished estimate
    state = tmp_path / ".nsm-state" / "n4-paused-s3-n6000.json"
    assert json.loads(state.read_text())["done"] == 374
    with pytest.raises(SearchPaused, match="paused at 561/6000 points"):  # a leg runs at least one batch
        nsm.reestimate(path, samples=6000, seed=3, progress=False, deadline=clock.t + 50.0)
    r = nsm.reestimate(path, samples=6000, seed=3, progress=False)
    assert (r.nsm, r.stderr) == (straight.nsm, straight.stderr)
    assert json.loads(path.read_text())["nsm"]["value"] == straight.nsm and not state.exists()


def test_nsm_budget_hours_cli(tmp_path):
    """The CLI: --budget-hours needs --update (its checkpoint); a spent budget pauses with exit
    status 3 and leaves the file as it was; the same command without the budget finishes."""
    from latticeq.lattice import Lattice, catalog

    path = tmp_path / "n4-x.json"
    Lattice(catalog.get("D4").generator, name="mine").to_json(path)
    before = path.read_bytes()
    runner = CliRunner()
    r = runner.invoke(main, ["nsm", "D4", "--samples", "2000", "--budget-hours", "1"])
    assert r.exit_code != 0 and "use it with --update" in r.output
    r = runner.invoke(main, ["nsm", str(path), "--samples", "2000", "--seed", "4", "--update",
                             "--budget-hours", "1e-9", "--no-progress"])
    assert r.exit_code == 3 and "paused: NSM estimate paused at 62/2000 points" in r.output, r.output
    assert path.read_bytes() == before
    r = runner.invoke(main, ["nsm", str(path), "--samples", "2000", "--seed", "4", "--update", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(path.read_text())["provenance"]["nsm_samples"] == 2000
    assert not list((tmp_path / ".nsm-state").glob("*.json"))
