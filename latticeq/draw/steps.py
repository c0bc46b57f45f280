"""GPTQ and Babai step by step, in the two spaces of Birnick (arXiv 2508.01077, figures 1-3).

One weight row ``w`` (n = 2 or 3 columns) of a layer with calibration inputs ``X`` (k × n) is
quantized on a uniform grid with step ``s`` and zero ``z`` (codes ``0..2^b-1``). Two spaces are
at play:

* **parameter space** R^n, where the grid ``s(Z^n - z)`` lives and GPTQ works: it rounds
  ``w_0``, which restricts ``v`` to the hyperplane ``v_0 = q_0``, and moves the remaining
  target along ``H^{-1}`` — a projection that is *not* orthogonal in R^n;
* **data space**, the span of X in R^k, where ``X`` maps the grid to a lattice and Babai's
  nearest-plane algorithm works: it picks the plane parallel to the sublattice of the later
  columns nearest to the target ``Xw``, subtracts that multiple of the column and recurses.
  GPTQ's moved target is the *orthogonal* projection of ``Xw`` onto that plane
  (Birnick 2025, Theorem 1; Chen et al. 2025, arXiv 2507.18553).

Data space is drawn in the isometric coordinates of the solvers, ``x ↦ x B`` with
``B Bᵀ = H_d = XᵀX + λI`` (upper-triangular ``B``; ``λ = 0`` by default), so distances are
output errors: ``‖X(w − q)‖² = ‖(w − q)B‖²``.

Every number drawn comes from the project's solvers (:func:`latticeq.nn.solvers.solve` with
``trace=True`` for ``gptq`` and ``babai``): the GPTQ moving target is the solver's trace, the
Babai planes are the trace's indices and centres. LLL (:func:`latticeq.nn.solvers.lll.lll_babai_codes`)
records no trace, so its codes are written in the same reduced basis
(:func:`latticeq.lattice.reduce.lll`, reduced at unit volume as the solver does) and drawn level
by level; every level is checked to be a nearest-plane choice (away from exact ties a free replay
picks the same planes — the tests check it), and a violation raises instead of drawing something
the solver did not do.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field

import numpy as np

from latticeq.draw._io import save_figure


@functools.lru_cache(maxsize=None)
def _fixed_step_grid_class():
    from latticeq.nn.grid import Grid

    @dataclass(frozen=True)
    class FixedStepGrid(Grid):
        """A symmetric grid with a given step instead of a min-max step (for pictures):
        scale ``step``, zero ``(maxq+1)/2``, codes ``0..maxq``."""

        step: float = 1.0

        def find_params(self, x):
            import torch

            m = x.shape[0]
            return (torch.full((m,), float(self.step), dtype=x.dtype, device=x.device),
                    torch.full((m,), (self.maxq + 1) / 2, dtype=x.dtype, device=x.device))

    return FixedStepGrid


def example_problem(X=None, w=None, *, dim: int = 2, k: int | None = None, seed: int = 0, spread: float = 2.5,
                    bits: int = 4, step: float = 1.0):
    """A small example layer: given or random calibration inputs X (k × n) and weight row w (n,).

    Random X is Gaussian times the integer shear ``I + 2 e_0 e_1ᵀ`` (a skewed basis, so that the
    GPTQ step visibly differs from the Euclidean projection and LLL has work to do); random
    ``w`` is uniform in ``[-spread, spread]^n`` grid steps of size ``step``, kept half a step
    inside the range of the ``bits``-bit grid.

    Raises ValueError for shapes other than (k, n) with n in {2, 3}, k >= n, full column rank,
    and w of shape (n,).
    """
    rng = np.random.default_rng(seed)
    if X is None:
        if dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3 for a picture; got {dim}")
        k = dim + 1 if k is None else int(k)
        if k < dim:
            raise ValueError(f"X needs at least n = {dim} rows; got k = {k}")
        shear = np.eye(dim)
        shear[0, 1] = 2.0
        X = rng.standard_normal((k, dim)) @ shear
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] not in (2, 3):
        raise ValueError(f"X must be a k × n matrix with n = 2 or 3 columns (a picture); got shape {X.shape}")
    n = X.shape[1]
    if X.shape[0] < n or np.linalg.matrix_rank(X) < n:
        raise ValueError(f"X (shape {X.shape}) must have full column rank n = {n}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    if w is None:
        maxq = 2 ** int(bits) - 1
        zero = (maxq + 1) / 2
        lo, hi = max(-spread, -zero + 0.5), min(spread, maxq - zero - 0.5)
        w = step * rng.uniform(lo, hi, size=n)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"w must have n = {n} entries to match X; got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("w contains NaN or infinite values")
    return X, w


@dataclass
class PlaneStep:
    """One level of nearest-plane decoding, in data space.

    Attributes
    ----------
    level : decision position (0 first).
    vector : (n,) the basis vector whose multiple is decided.
    span : (n - level - 1, n) basis vectors spanning the planes (the later levels).
    partial : (n,) lattice point decided before this level (origin of the plane family).
    target : (n,) projection of the target onto ``partial + span(vector, span)``.
    center : continuous index of the target between the planes (code units).
    index : the integer index chosen (the code of this level).
    projection : (n,) orthogonal projection of the target onto the chosen plane.
    """

    level: int
    vector: np.ndarray
    span: np.ndarray
    partial: np.ndarray
    target: np.ndarray
    center: float
    index: int
    projection: np.ndarray


@dataclass
class SolverRun:
    """One solver's run on the example, as drawn.

    Attributes
    ----------
    method : "gptq", "babai" or "lll".
    codes : (n,) integer codes (column order = processing order, natural here).
    q : (n,) dequantized weights s(codes - z).
    point : (n,) the lattice point in data space, q B.
    error : output error ‖X(w - q)‖² (undamped H), as reported by the solver.
    basis : (n, n) data-space basis vectors in decision order.
    steps : list of :class:`PlaneStep` (Babai runs) — empty for GPTQ.
    moving : (n + 1, n) GPTQ's moving target in parameter space (row k: before column k;
        last row: q) — empty for Babai runs.
    babai_bound : ¼ Σ_k ‖b*_k‖², Babai's bound on the unclipped error with this basis.
    final_codes, final_error : for ``lll``, the solver's codes and error after its box repair
        (the better of clamped LLL-Babai and GPTQ per row); None/nan otherwise.
    """

    method: str
    codes: np.ndarray
    q: np.ndarray
    point: np.ndarray
    error: float
    basis: np.ndarray
    steps: list = field(default_factory=list)
    moving: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    babai_bound: float = float("nan")
    final_codes: np.ndarray | None = None
    final_error: float = float("nan")


@dataclass
class StepsPicture:
    """Everything drawn by :func:`plot_gptq` and :func:`plot_babai`.

    Attributes
    ----------
    X, w : the example layer.
    B : (n, n) upper-triangular data-space factor, B Bᵀ = XᵀX + λI.
    step, zero, maxq : the grid (value of code c is step·(c − zero)).
    damping : λ.
    target : (n,) w B, the target in data space.
    gptq, babai, lll : :class:`SolverRun` of each solver.
    """

    X: np.ndarray
    w: np.ndarray
    B: np.ndarray
    step: float
    zero: float
    maxq: int
    damping: float
    target: np.ndarray
    gptq: SolverRun
    babai: SolverRun
    lll: SolverRun

    @property
    def dim(self) -> int:
        return len(self.w)

    def lattice_points(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """Grid codes in the box ``[0, maxq]^n`` whose data-space points lie in [lo, hi]:
        returns (codes (p, n), data points (p, n))."""
        n = self.dim
        C = np.array(list(itertools.product(range(self.maxq + 1), repeat=n)), dtype=float)
        P = self.step * (C - self.zero) @ self.B
        keep = ((P >= lo) & (P <= hi)).all(axis=1)
        return C[keep], P[keep]

    def grid_points(self, lo, hi) -> np.ndarray:
        """Grid values in parameter space within [lo, hi]."""
        n = self.dim
        C = np.array(list(itertools.product(range(self.maxq + 1), repeat=n)), dtype=float)
        V = self.step * (C - self.zero)
        return V[((V >= lo) & (V <= hi)).all(axis=1)]


def _gs_decision(D: np.ndarray) -> np.ndarray:
    """g[j] = component of D[j] orthogonal to span(D[j+1:]) (nearest-plane directions)."""
    n = len(D)
    g = np.zeros_like(D)
    for j in range(n - 1, -1, -1):
        v = D[j].copy()
        for i in range(j + 1, n):
            v -= (v @ g[i]) / (g[i] @ g[i]) * g[i]
        g[j] = v
    return g


def _project_affine(x, origin, span):
    """Orthogonal projection of x onto origin + span(rows of span)."""
    if len(span) == 0:
        return origin.copy()
    A = np.asarray(span).T
    coef, *_ = np.linalg.lstsq(A, x - origin, rcond=None)
    return origin + A @ coef


def nearest_plane_steps(D, target, *, origin=None, indices=None, lo=None, hi=None) -> list:
    """Nearest-plane decoding of ``target`` in the lattice ``origin + Z·D``, level by level.

    ``D`` holds the basis vectors in decision order (row 0 decided first, planes parallel to
    ``span(D[1:])``). If ``indices`` is given, those integer choices are used (a solver's trace)
    instead of rounding; ``lo``/``hi`` clamp the rounded index (grid box).

    At level j with residual ``x`` and ``g_j = D_j`` minus its projection on ``span(D[j+1:])``:
    ``c_j = <x, g_j>/<g_j, g_j>``, ``v_j = round(c_j)``, ``x ← x − v_j D_j`` (Babai 1986).
    """
    D = np.asarray(D, dtype=np.float64)
    n = len(D)
    origin = np.zeros(D.shape[1]) if origin is None else np.asarray(origin, dtype=np.float64)
    g = _gs_decision(D)
    partial = origin.copy()
    t = np.asarray(target, dtype=np.float64)
    steps = []
    for j in range(n):
        x = t - partial
        c = float(x @ g[j] / (g[j] @ g[j]))
        if indices is None:
            v = np.rint(c)
            if lo is not None:
                v = min(max(v, lo), hi)
        else:
            v = float(indices[j])
        span = D[j + 1:]
        tgt = _project_affine(t, partial, D[j:])
        newp = partial + v * D[j]
        proj = _project_affine(t, newp, span)
        steps.append(PlaneStep(level=j, vector=D[j].copy(), span=span.copy(), partial=partial.copy(), target=tgt,
                               center=c, index=int(v), projection=proj))
        partial = newp
    return steps


def steps_picture(X, w, *, bits: int = 4, step: float = 1.0, percdamp: float = 0.0, delta: float = 0.99) -> StepsPicture:
    """Run GPTQ, Babai and LLL+Babai on the one-row layer (w, H = XᵀX) and collect their steps.

    Parameters
    ----------
    X : (k, n) calibration inputs, n in {2, 3}.
    w : (n,) weight row.
    bits : grid bits (codes 0..2^bits − 1, zero 2^(bits−1)).
    step : grid step s (a fixed-step symmetric grid, so the picture's scale is chosen, not w's range).
    percdamp : GPTQ damping (λ = percdamp · mean diag H); 0 draws the undamped lattice of X.
    delta : LLL parameter.

    Raises
    ------
    ValueError
        Bad shapes, w outside the grid's range, bits not in 2..8.
    RuntimeError
        If the replayed steps disagree with the solvers' codes (should never happen).
    """
    import torch

    from latticeq.lattice.reduce import lll
    from latticeq.nn.layer import LayerProblem
    from latticeq.nn.solvers import solve
    from latticeq.nn.solvers._base import prepare
    from latticeq.nn.solvers.lll import lll_babai_codes

    X, w = example_problem(X, w)
    n = len(w)
    if not step > 0:
        raise ValueError(f"step must be > 0; got {step}")
    grid = _fixed_step_grid_class()(bits=bits, step=float(step))
    maxq, zero = grid.maxq, (grid.maxq + 1) / 2
    lo_v, hi_v = -zero * step, (maxq - zero) * step
    if (w < lo_v).any() or (w > hi_v).any():
        raise ValueError(f"w = {w.tolist()} leaves the {bits}-bit grid's range [{lo_v:g}, {hi_v:g}] "
                         "(raise --bits or the step)")
    H = X.T @ X
    problem = LayerProblem(torch.tensor(w[None, :]), torch.tensor(H))
    sg = solve(problem, grid, "gptq", percdamp=percdamp, trace=True)
    sb = solve(problem, grid, "babai", percdamp=percdamp, trace=True)
    sl = solve(problem, grid, "lll", percdamp=percdamp, delta=delta)
    prep = prepare(problem, grid, order="natural", percdamp=percdamp)
    if not (prep.perm.numpy() == np.arange(n)).all():
        raise RuntimeError("expected the natural column order")
    B = prep.B.numpy().copy()
    lam = float(prep.lam)
    t = w @ B
    origin = -step * zero * B.sum(axis=0)

    def err(q):
        return float((q - w) @ H @ (q - w))

    # --- GPTQ: the moving target in parameter space, straight from the solver's trace
    tr = sg.stats["trace"]
    gcodes = sg.codes.numpy()[0].astype(int)
    gq = step * (gcodes - zero)
    moving = np.vstack([tr["weights"][0], gq[None, :]])
    if not (tr["codes"][0].astype(int) == gcodes).all():
        raise RuntimeError("GPTQ trace codes differ from the solver's codes")
    gptq = SolverRun("gptq", gcodes, gq, gq @ B, err(gq), step * B, moving=moving,
                     babai_bound=float(0.25 * np.sum((step * np.diag(B)) ** 2)))

    # --- Babai: nearest planes in data space, indices from the solver's trace
    bt = sb.stats["trace"]
    bcodes = sb.codes.numpy()[0].astype(int)
    bq = step * (bcodes - zero)
    idx = bt["index"][0].astype(int)
    # planes of the shifted lattice: point = origin + Σ_j v_j s B_j
    bsteps = nearest_plane_steps(step * B, t, origin=origin, indices=idx)
    # each index the solver chose must be a nearest plane to the projected target (within the box);
    # exact ties (w on a half-step) may go either way
    for st in bsteps:
        if abs(st.index - min(max(st.center, 0), maxq)) > 0.5 + 1e-9:
            raise RuntimeError(f"solver's Babai index {st.index} at level {st.level} is not a nearest plane "
                               f"(centre {st.center:.6g})")
    if not (idx == bcodes).all():
        raise RuntimeError(f"Babai trace indices {idx.tolist()} differ from the solver's codes {bcodes.tolist()}")
    if not np.allclose([s.center for s in bsteps], bt["center"][0], atol=1e-8 * (1 + maxq)):
        raise RuntimeError("Babai plane centres differ from the solver's trace")
    babai = SolverRun("babai", bcodes, bq, bq @ B, err(bq), step * B, steps=bsteps,
                      babai_bound=float(0.25 * np.sum((step * np.diag(B)) ** 2)))

    # --- LLL + Babai: replay on the solver's reduced basis, check against the solver's codes
    ucodes = lll_babai_codes(prep, delta=delta)[0][0].astype(int)      # unclamped LLL-Babai codes
    L = np.ascontiguousarray(B[::-1, ::-1])
    unit = float(np.exp(-np.mean(np.log(np.abs(np.diag(L))))))   # as the solver: reduce at unit volume
    Lr, U = lll(L * unit, delta=delta)
    Lr = Lr / unit
    Br = Lr[:, ::-1]                    # reduced basis vectors in B-coordinates (code units)
    D = step * Br[::-1]                 # decision order: Lr_{n-1} first
    # the solver's codes as coefficients a of the reduced basis (v reversed = a @ U), in decision order
    a_coef = np.rint(ucodes[::-1].astype(float) @ np.linalg.inv(U.astype(float)))
    lsteps = nearest_plane_steps(D, t, origin=origin, indices=a_coef[::-1])
    for st in lsteps:                      # each a nearest plane (exact ties may go either way)
        if abs(st.index - st.center) > 0.5 + 1e-9:
            replay = [x.index for x in nearest_plane_steps(D, t, origin=origin)]
            raise RuntimeError(f"the LLL solver's codes {ucodes.tolist()} are not nearest-plane choices on the "
                               f"reduced basis (replay gives coefficients {replay})")
    lcodes = ucodes.copy()
    lq = step * (lcodes - zero)
    final_codes = sl.codes.numpy()[0].astype(int)
    g_lll = _gs_decision(D)
    lll_run = SolverRun("lll", lcodes, lq, lq @ B, err(lq), D, steps=lsteps,
                        babai_bound=float(0.25 * np.sum(g_lll ** 2)),
                        final_codes=final_codes, final_error=float(sl.error))
    return StepsPicture(X=X, w=w, B=B, step=float(step), zero=zero, maxq=maxq, damping=lam, target=t,
                        gptq=gptq, babai=babai, lll=lll_run)


# ----------------------------------------------------------------------------- drawing

_C_GPTQ, _C_BABAI, _C_LLL, _C_T = "tab:blue", "tab:green", "tab:purple", "tab:red"


def _window(points, margin):
    P = np.atleast_2d(np.asarray(points, dtype=float))
    c = 0.5 * (P.min(axis=0) + P.max(axis=0))
    r = 0.5 * (P.max(axis=0) - P.min(axis=0)).max() + margin
    return c - r, c + r


def _margin(points, basis):
    """Room around the points of interest: the moves, and at least most of a short basis vector."""
    P = np.atleast_2d(points)
    spread = np.linalg.norm(P[:, None, :] - P[None, :, :], axis=2).max()
    return max(0.6 * spread, 0.9 * np.linalg.norm(basis, axis=1).min())


def _arrow(ax, a, b, color, lw=1.6, ls="-", label=None, dim=2):
    a, b = np.asarray(a), np.asarray(b)
    if dim == 2:
        ax.annotate("", xy=b, xytext=a, arrowprops=dict(arrowstyle="-|>", color=color, lw=lw, ls=ls,
                                                        shrinkA=0, shrinkB=0))
        if label:
            ax.plot([], [], color=color, lw=lw, ls=ls, label=label)
    else:
        d = b - a
        ax.quiver(*a, *d, color=color, lw=lw, linestyle=ls, arrow_length_ratio=0.12, label=label)


def _segment(ax, a, b, dim, **kw):
    a, b = np.asarray(a), np.asarray(b)
    if dim == 2:
        return ax.plot([a[0], b[0]], [a[1], b[1]], **kw)
    return ax.plot([a[0], b[0]], [a[1], b[1]], [a[2], b[2]], **kw)


def _scatter(ax, P, dim, **kw):
    P = np.atleast_2d(P)
    if len(P) == 0:
        return
    if dim == 2:
        ax.plot(P[:, 0], P[:, 1], ls="none", **kw)
    else:
        ax.plot(P[:, 0], P[:, 1], P[:, 2], ls="none", **kw)


def _plane_patch(ax, center, span, half, color, alpha, dim):
    """Draw the affine set center + span (a line in 2-D; a line or a plane in 3-D)."""
    span = np.atleast_2d(span)
    if len(span) == 1:
        d = span[0] / np.linalg.norm(span[0])
        _segment(ax, center - half * d, center + half * d, dim, color=color, alpha=alpha, lw=1.2)
    elif len(span) == 2 and dim == 3:
        from mpl_toolkits.mplot3d.art3d import Poly3DCollection

        e1 = span[0] / np.linalg.norm(span[0])
        e2 = span[1] - (span[1] @ e1) * e1
        e2 /= np.linalg.norm(e2)
        quad = [center + half * (a * e1 + b * e2) for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
        ax.add_collection3d(Poly3DCollection([quad], facecolor=color, alpha=alpha * 0.35, edgecolor=color, lw=0.6))


def _right_angle(ax, corner, toward, along, size, color):
    """Mark the right angle at ``corner`` between the drop toward ``toward`` and the direction ``along`` (2-D)."""
    u = np.asarray(toward, float) - corner
    if np.linalg.norm(u) < 1e-12:
        return
    u /= np.linalg.norm(u)
    v = np.asarray(along, float) / np.linalg.norm(along)
    pts = np.array([corner + size * u, corner + size * (u + v), corner + size * v])
    ax.plot(pts[:, 0], pts[:, 1], color=color, lw=0.9)


def _setup_axes(fig, pos, dim, lo, hi, title, xlabel, ylabel):
    if dim == 2:
        ax = fig.add_subplot(*pos)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
    else:
        ax = fig.add_subplot(*pos, projection="3d")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect((1, 1, 1))
    ax.set_title(title, fontsize=9.5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    return ax


def _describe(pic, what) -> str:
    return (f"draw {what}: X={np.round(pic.X, 6).tolist()} w={np.round(pic.w, 6).tolist()} step={pic.step} "
            f"maxq={pic.maxq} damping={pic.damping}; codes gptq={pic.gptq.codes.tolist()} "
            f"babai={pic.babai.codes.tolist()} lll={pic.lll.codes.tolist()}")


def _codes(c) -> str:
    return "(" + ", ".join(str(int(x)) for x in c) + ")"


def _draw_babai_panel(fig, pos, pic: StepsPicture, run: SolverRun, title: str, color: str):
    dim = pic.dim
    t, Q = pic.target, run.point
    interest = [t, Q] + [s.projection for s in run.steps]
    lo, hi = _window(interest, _margin(interest, run.basis))
    ax = _setup_axes(fig, pos, dim, lo, hi, title, "data space (span of X), coordinate 1", "coordinate 2")
    _, P = pic.lattice_points(lo, hi)
    _scatter(ax, P, dim, marker="o", ms=3.2, color="0.25", label="lattice points X·grid")
    half = (2.0 if dim == 2 else 0.5) * (hi - lo).max()
    s0 = run.steps[0]
    # the plane family of the first level: parallel to span(later vectors), spaced by g0
    g0 = s0.vector - (_project_affine(s0.vector, np.zeros(dim), s0.span) if len(s0.span) else 0)
    for dc in range(-4, 5):
        if dc == 0:
            _plane_patch(ax, s0.projection, s0.span, half, color, 0.95, dim)
        elif dim == 2:
            _plane_patch(ax, s0.projection + dc * g0, s0.span, half, "0.6", 0.7, dim)
    if dim == 2:
        ax.plot([], [], color="0.6", lw=1.2, label="planes ∥ sublattice of later columns")
    ax.plot([], [], color=color, lw=1.2, label="nearest plane (chosen by the solver)")
    if dim == 3 and len(run.steps) > 1:
        s1 = run.steps[1]
        _plane_patch(ax, s1.projection, s1.span, half, color, 0.95, dim)
    # the target, its projections level by level, the decoded point and the residual
    _scatter(ax, t, dim, marker="*", ms=13, color=_C_T, label="target Xw")
    prev = t
    for s in run.steps[:-1]:
        _arrow(ax, prev, s.projection, color, lw=1.4, dim=dim)
        prev = s.projection
    _arrow(ax, prev, Q, color, lw=1.4, dim=dim, label="orthogonal projections, level by level")
    if dim == 2:
        _right_angle(ax, s0.projection, t, s0.span[0], 0.035 * (hi - lo).max(), color)
    _scatter(ax, Q, dim, marker="s", ms=8, mfc="none", mec="k", mew=1.6, label=f"decoded point, codes {_codes(run.codes)}")
    _segment(ax, Q, t, dim, color=_C_T, lw=1.0, ls=":")
    # basis vectors at the decoded point
    for j, b in enumerate(run.basis):
        _arrow(ax, Q, Q + b, "tab:orange", lw=1.2, dim=dim, label="basis (decision order)" if j == 0 else None)
    txt = (f"output error ‖X(w−q)‖² = {run.error:.4g}\n"
           f"Babai bound ¼Σ‖b*‖² = {run.babai_bound:.4g}")
    if dim == 2:
        ax.text(0.02, 0.02, txt, transform=ax.transAxes, fontsize=8, va="bottom",
                bbox=dict(fc="white", ec="0.7", alpha=0.9))
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    else:
        ax.set_title(ax.get_title() + "\n" + txt.replace("\n", ", "), fontsize=9)
        ax.legend(fontsize=6, loc="upper left")
    return ax


def plot_babai(pic: StepsPicture, out, *, title: str | None = None):
    """Babai's nearest planes in data space with the original basis (GPTQ's) and after LLL.

    Left: the lattice X·grid, the family of planes parallel to the sublattice of the later
    columns, the nearest plane chosen by the solver, the orthogonal projections of the target
    level by level, the decoded point and its residual. Right: the same after LLL reduction
    (basis vectors in orange). Output errors and Babai's bound are annotated.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    dim = pic.dim
    fig = plt.figure(figsize=(12.5, 7.4) if dim == 2 else (13, 7.0))
    _draw_babai_panel(fig, (1, 2, 1), pic, pic.babai,
                      f"Babai nearest plane, original basis = GPTQ\ncodes {_codes(pic.babai.codes)} "
                      f"(GPTQ {_codes(pic.gptq.codes)})", _C_BABAI)
    fin = pic.lll.final_codes if pic.lll.final_codes is not None else pic.lll.codes
    _draw_babai_panel(fig, (1, 2, 2), pic, pic.lll,
                      f"after LLL reduction + Babai\ncodes {_codes(pic.lll.codes)}"
                      f" (solver's final, box-repaired: {_codes(fin)})", _C_LLL)
    ratio = pic.lll.error / pic.babai.error if pic.babai.error > 0 else float("nan")
    fig.suptitle(title or f"Babai's nearest-plane algorithm in data space, before and after LLL "
                          f"(error ratio LLL/Babai = {ratio:.3f})", fontsize=11)
    return save_figure(fig, out, description=_describe(pic, "babai"))


def plot_gptq(pic: StepsPicture, out, *, title: str | None = None):
    """GPTQ's moving target in parameter space beside the same steps in data space.

    Left (parameter space R^n): the grid, the weights w, GPTQ's steps from the solver's trace
    (solid) and, for contrast, the Euclidean projection onto the same hyperplane (dashed), the
    hyperplane ``v_0 = q_0`` and the final q. Right (data space): the same points mapped by X;
    GPTQ's step is the orthogonal projection of Xw onto the nearest plane — Babai's step.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    dim = pic.dim
    run = pic.gptq
    M = run.moving                        # (n+1, n): before each column, then q
    q = run.q
    eucl = [np.where(np.arange(dim) == k, q[k], M[k]) for k in range(dim - 1)]
    fig = plt.figure(figsize=(12.5, 7.4) if dim == 2 else (13, 7.0))

    # ---- parameter space
    lo, hi = _window(np.vstack([M] + eucl), 1.6 * pic.step)
    ax = _setup_axes(fig, (1, 2, 1), dim, lo, hi,
                     f"parameter space: GPTQ moves the target (codes {_codes(run.codes)})", "w₁", "w₂")
    _scatter(ax, pic.grid_points(lo, hi), dim, marker="o", ms=3.2, color="0.25", label=f"grid s·(Zⁿ − z), s = {pic.step:g}")
    half = (2.0 if dim == 2 else 0.5) * (hi - lo).max()
    normal_span = np.eye(dim)[1:]
    _plane_patch(ax, np.where(np.arange(dim) == 0, q[0], M[0]), normal_span, half, _C_GPTQ, 0.9, dim)
    ax.plot([], [], color=_C_GPTQ, lw=1.2, label="hyperplane v₁ = q₁ (first column rounded)")
    _scatter(ax, M[0], dim, marker="*", ms=13, color=_C_T, label="weights w")
    for k in range(dim):
        _arrow(ax, M[k], M[k + 1], _C_GPTQ, lw=1.6, dim=dim,
               label="GPTQ step (trace): orthogonal in data space" if k == 0 else None)
    for k, e in enumerate(eucl):
        _arrow(ax, M[k], e, "0.45", lw=1.2, ls="--", dim=dim,
               label="Euclidean projection (not what GPTQ does)" if k == 0 else None)
    _scatter(ax, q, dim, marker="s", ms=8, mfc="none", mec="k", mew=1.6, label=f"q, codes {_codes(run.codes)}")
    if dim == 2:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    else:
        ax.legend(fontsize=6, loc="upper left")

    # ---- data space
    B = pic.B
    T = M @ B
    E = [e @ B for e in eucl]
    lo2, hi2 = _window(np.vstack([T] + E), _margin(np.vstack([T] + E), pic.step * B))
    ax2 = _setup_axes(fig, (1, 2, 2), dim, lo2, hi2, "data space: the same steps are Babai's orthogonal projections",
                      "coordinate 1", "coordinate 2")
    _, P = pic.lattice_points(lo2, hi2)
    _scatter(ax2, P, dim, marker="o", ms=3.2, color="0.25", label="lattice X·grid")
    s0 = pic.babai.steps[0]
    _plane_patch(ax2, s0.projection, s0.span, (2.0 if dim == 2 else 0.5) * (hi2 - lo2).max(), _C_GPTQ, 0.9, dim)
    ax2.plot([], [], color=_C_GPTQ, lw=1.2, label="image of the hyperplane = Babai's nearest plane")
    _scatter(ax2, T[0], dim, marker="*", ms=13, color=_C_T, label="Xw")
    for k in range(dim):
        _arrow(ax2, T[k], T[k + 1], _C_GPTQ, lw=1.6, dim=dim, label="GPTQ steps mapped by X" if k == 0 else None)
    for k, e in enumerate(E):
        _arrow(ax2, T[k], e, "0.45", lw=1.2, ls="--", dim=dim, label="Euclidean projection mapped" if k == 0 else None)
    _scatter(ax2, T[-1], dim, marker="s", ms=8, mfc="none", mec="k", mew=1.6, label="Xq")
    if dim == 2:
        _right_angle(ax2, T[1], T[0], s0.span[0], 0.035 * (hi2 - lo2).max(), _C_GPTQ)
    _segment(ax2, T[-1], T[0], dim, color=_C_T, lw=1.0, ls=":")
    txt = f"‖X(w−q)‖² = {run.error:.4g}  (Babai: {pic.babai.error:.4g}, same codes)"
    if dim == 2:
        ax2.text(0.02, 0.02, txt, transform=ax2.transAxes, fontsize=8, bbox=dict(fc="white", ec="0.7", alpha=0.9))
        ax2.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, frameon=False)
    else:
        ax2.set_title(ax2.get_title() + "\n" + txt, fontsize=9)
        ax2.legend(fontsize=6, loc="upper left")
    fig.suptitle(title or "Two spaces: GPTQ in parameter space, Babai in data space (Birnick 2025)", fontsize=11)
    return save_figure(fig, out, description=_describe(pic, "gptq"))
