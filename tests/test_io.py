"""latticeq.io: atomic writes leave either the old file or the whole new one, never a temp."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from latticeq.io import (
    atomic_save_npy,
    atomic_savefig,
    atomic_torch_save,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def _umask() -> int:
    u = os.umask(0)
    os.umask(u)
    return u


def _perm(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_bytes_content_and_permissions(tmp_path):
    p = tmp_path / "a.bin"
    assert atomic_write_bytes(p, b"\x00\x01abc") == p
    assert p.read_bytes() == b"\x00\x01abc"
    assert _perm(p) == 0o666 & ~_umask()          # not mkstemp's 0600
    assert os.listdir(tmp_path) == ["a.bin"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert _perm(tmp_path / "private.txt") == 0o600


def test_overwrites_existing(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("old")
    atomic_write_text(p, "new ±")
    assert p.read_text(encoding="utf-8") == "new ±"
    assert os.listdir(tmp_path) == ["a.txt"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_target_and_no_temp(tmp_path, exc):
    p = tmp_path / "a.txt"
    p.write_text("old")

    def write(f):
        f.write("half of the new")
        raise exc("boom")

    with pytest.raises(exc, match="boom"):
        atomic_write(p, write, "w")
    assert p.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_failure_without_target_creates_nothing(tmp_path):
    def write(f):
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(tmp_path / "new.bin", write)
    assert os.listdir(tmp_path) == []


def test_parents_only_with_mkdir(tmp_path):
    p = tmp_path / "x" / "y" / "a.txt"
    with pytest.raises(FileNotFoundError):
        atomic_write_text(p, "hi")
    assert not (tmp_path / "x").exists()
    atomic_write_text(p, "hi", mkdir=True)
    assert p.read_text() == "hi"


def test_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        atomic_write(tmp_path / "a", lambda f: None, "a")
    assert os.listdir(tmp_path) == []


def test_json_formatting(tmp_path):
    obj = {"a": [1, 2.5], "b": {"c": None}}
    p = atomic_write_json(tmp_path / "a.json", obj)
    assert p.read_text() == json.dumps(obj, indent=2) + "\n"
    atomic_write_json(p, obj, indent=1, end="")
    assert p.read_text() == json.dumps(obj, indent=1)
    atomic_write_json(p, {"p": tmp_path}, default=str)
    assert json.loads(p.read_text()) == {"p": str(tmp_path)}


def test_json_unencodable_writes_nothing(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("{}")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert p.read_text() == "{}"
    assert os.listdir(tmp_path) == ["a.json"]


def test_npy_round_trip_keeps_name(tmp_path):
    a = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    p = atomic_save_npy(tmp_path / "W.npy", a)
    np.testing.assert_array_equal(np.load(p), a)
    q = atomic_save_npy(tmp_path / "no_suffix", a)    # np.save(path) would append .npy
    assert sorted(os.listdir(tmp_path)) == ["W.npy", "no_suffix"]
    np.testing.assert_array_equal(np.load(q), a)


def test_npy_refuses_pickles(tmp_path):
    with pytest.raises(ValueError):
        atomic_save_npy(tmp_path / "o.npy", np.array([object()], dtype=object))
    assert os.listdir(tmp_path) == []


def test_torch_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    obj = {"t": torch.arange(5), "n": 3}
    p = atomic_torch_save(tmp_path / "s.pt", obj)
    back = torch.load(p)
    assert back["n"] == 3 and torch.equal(back["t"], obj["t"])
    assert os.listdir(tmp_path) == ["s.pt"]


def test_savefig_format(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    try:
        png = atomic_savefig(tmp_path / "f.png", fig, dpi=50)
        svg = atomic_savefig(tmp_path / "f.svg", fig)
        forced = atomic_savefig(tmp_path / "g.svg", fig, format="png", dpi=50)
    finally:
        plt.close(fig)
    assert png.read_bytes().startswith(b"\x89PNG")
    assert b"<svg" in svg.read_bytes()[:2000]
    assert forced.read_bytes().startswith(b"\x89PNG")
    assert sorted(os.listdir(tmp_path)) == ["f.png", "f.svg", "g.svg"]
