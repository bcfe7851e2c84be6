r"""Stability of linearised peer-to-peer gradient descent, and the DGD fixed point.

Write the kernel Gram matrix of the training points as :math:`K = F F^\top`
(:math:`F = U_r \Lambda_r^{1/2}`, :math:`r = \mathrm{rank}\,K`,
:func:`p2pntk.geometry.row_space_factor`) and :math:`z_q = F^\top a_q \in \mathbb R^r` —
the coordinates of agent q's displacement :math:`\theta_q - \theta_0 = J^\top a_q` in
the row space of :math:`J` (:math:`\|J^\top a\| = \|F^\top a\|`). In these coordinates
the operations of :mod:`p2pntk.algorithms` are

- *mix*: :math:`z \mapsto (W\otimes I_r)\, z`;
- *local gradient*: :math:`z_q \mapsto G_q z_q + F^\top D_q (f_0 - y)`, with
  :math:`G_q = F^\top D_q F` (:math:`\lambda_{\max}(G_q) = \lambda_{\max}(K_{qq})/N_q`,
  :math:`K_{qq}` the local Gram matrix);
- *average*: :math:`z \mapsto \mathbf 1\otimes \tfrac1Q\sum_q z_q`,

so one step of any algorithm is an affine map :math:`Z^+ = M Z + c` of its stacked
state variables (:func:`affine_map`; :math:`M` is obtained by applying the algorithm's
own step to a basis, so it is the iteration matrix of the same definition that trains).
Its size is the rank of :math:`K` per agent and variable; for centralised GD it is
restricted to the consensus subspace (size r). For example

- DGD: :math:`M = W\otimes I - \eta\,\mathrm{blkdiag}(G_q)` (symmetric);
- ATC: :math:`M = (W\otimes I)(I - \eta G)`; CTA: :math:`M = (I-\eta G)(W\otimes I)`
  (same spectrum);
- centralised: :math:`M = I - \eta \bar G`, :math:`\bar G = \frac1Q\sum_q G_q`.

The linearised iterates converge iff the spectral radius :math:`\rho(M) < 1`.

Beyond the threshold. Above the critical step size (:func:`critical_step_size`,
:func:`dgd_critical_step_size`) the closed form is still the exact trajectory of the
*linearised* network, and it grows like :math:`\rho(M)^k` without end; the actual network
follows it only while it stays in the lazy regime, and may recover where the closed form
explodes (the catapult: its outputs grow, its kernel shrinks until the step is stable
again, and the loss falls; chapter *Stability*). So beyond the threshold the prediction
describes only the *onset* of divergence — which directions grow, how fast, and about
when the outputs leave their initial scale — not the outcome.
:func:`p2pntk.dynamics.linearized_sweep` marks such configurations as diverged.

Cost. The exact thresholds are dense eigenvalue problems of the size of the iteration
matrix, :math:`S` = (state variables) × Q × rank K (:func:`iteration_size`; rank K is up
to NC for an output-resolved kernel), i.e. :math:`O(S^3)` each: :func:`dgd_critical_step_size`
solves one, :func:`critical_step_size` one per step size it tries (a scan and a bisection,
a few dozen). Measured on 2 shared cores (load 5–10, 2026-12-01; a full-rank resolved
kernel, C = 2, DGD on a random geometric graph): N = 64, Q = 8 (S = 1024):
:func:`dgd_critical_step_size` 4.8 s, ``critical_step_size("dgd")`` 42 s (scan from
:math:`10^{-2}/L`); N = 160, Q = 10 (S = 3200): :func:`dgd_critical_step_size` 43 s. The
sufficient bounds (:func:`step_size_bound`) need only the largest eigenvalue of each
agent's local block and are cheap.
"""
from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import numpy as np
import scipy.linalg

from . import algorithms
from .coefficients import CoefficientSystem
from .geometry import row_space_factor


def _system(W, K, owner, f0=None, y=None):
    K = np.asarray(K, dtype=np.float64)
    N = K.shape[0]
    C = K.shape[1] if K.ndim == 4 else 1
    zeros = np.zeros((N, C))
    return CoefficientSystem([W], K, owner, zeros if f0 is None else f0, zeros if y is None else y)


def local_blocks(system):
    r"""The local blocks :math:`G_q = F^\top D_q F` of every agent, (Q, r, r), and ``(F, F_pinv_T)``."""
    F, Finv = row_space_factor(system.Kmat)
    G = np.stack([F.T @ (system.d[q][:, None] * F) for q in range(system.Q)])
    return G, F, Finv


class _RowSpaceOps:
    """The operations of :mod:`p2pntk.algorithms` on row-space states (Q, r, B)."""

    def __init__(self, W, G, g0, lr):
        self.W, self.G, self.g0, self.lr = W, G, g0, lr

    def mix(self, Z, k):
        return np.tensordot(self.W, Z, axes=1)

    def grad(self, Z, k):
        return self.G @ Z + self.g0

    @staticmethod
    def average(Z):
        return Z.mean(axis=0, keepdims=True)


class AffineMap(NamedTuple):
    """One step of an algorithm in row-space coordinates, :math:`Z^+ = M Z + c` (:func:`affine_map`)."""
    M: np.ndarray
    c: np.ndarray | None
    F: np.ndarray
    F_pinv_T: np.ndarray
    names: list
    initial: np.ndarray | None = None


def affine_map(algorithm, W, system, lr, *, offset: bool = True, initial: bool = False, blocks=None) -> AffineMap:
    r"""One step of ``algorithm`` as the affine map :math:`Z^+ = M Z + c` in row-space coordinates.

    :math:`M` is the algorithm's own step (the recursion, not a different first update)
    applied, with no data offset, to the columns of the identity (the stacked state
    variables, in the order ``init`` lists them, each (Q, r)); :math:`c` is the step applied
    to the zero state with the offsets :math:`F^\top D_q (f_0 - y)` (only when ``offset``;
    given for the iterate). With ``initial``, ``initial`` holds the affine part of the step
    for every state variable as a linear function of the data offsets
    :math:`g_0\in\mathbb R^{Q r}` (the columns of an (S, Q·r) matrix, :math:`C g_0`): what
    :func:`restricted_radius` needs to tell conserved quantities from drifting ones.

    Args:
        algorithm: a name of :data:`p2pntk.algorithms.ALGORITHMS` or an :class:`~p2pntk.algorithms.Algorithm`.
        W: (Q, Q) mixing matrix.
        system: the :class:`~p2pntk.coefficients.CoefficientSystem` (kernel, agents, data).
        lr: step size.
        blocks: :func:`local_blocks` of ``system``, if already computed (they do not depend
            on ``W`` or ``lr``: a scan over step sizes computes them once).

    Returns:
        :class:`AffineMap`: M (S, S) with S = (number of state variables)·Q·r, or (r, r) for a
        consensus algorithm; c (Q·r, m) or (r, m); the row-space factor; the names of the
        state variables; C (or ``None``).
    """
    alg = algorithms.get(algorithm)
    G, F, Finv = local_blocks(system) if blocks is None else blocks
    Q, r = G.shape[:2]
    zero = _RowSpaceOps(W, G, 0.0, lr)
    cached = dict(alg.cached)                      # gradient caches: functions of other variables
    names = [nm for nm in alg.init(zero, np.zeros((Q, r, 1))) if nm not in cached]

    def full(ops, state, k):
        """The free variables with every gradient cache filled in: g = grad(its source)."""
        return {**state, **{g: ops.grad(state[x], k) for g, x in cached.items()}}

    if alg.consensus:                              # every agent holds the same state: one agent's coordinates
        S = len(names) * r
        eye = np.eye(S)
        basis = {nm: np.broadcast_to(eye[i * r:(i + 1) * r], (Q, r, S)).copy() for i, nm in enumerate(names)}
        out = alg.step(zero, full(zero, basis, 1), 1)
        M = np.concatenate([np.broadcast_to(out[nm], (Q, r, S))[0] for nm in names])
    else:
        S = len(names) * Q * r
        eye = np.eye(S)
        basis = {nm: eye[i * Q * r:(i + 1) * Q * r].reshape(Q, r, S) for i, nm in enumerate(names)}
        out = alg.step(zero, full(zero, basis, 1), 1)
        M = np.concatenate([np.broadcast_to(out[nm], (Q, r, S)).reshape(Q * r, S) for nm in names])
    c = B = None
    if offset:
        m = system.resid0.shape[1]
        g0 = np.stack([F.T @ (system.d[q][:, None] * system.resid0) for q in range(Q)])     # (Q, r, m)
        ops = _RowSpaceOps(W, G, g0, lr)
        state = {nm: np.zeros((Q, r, m)) for nm in names}
        x = np.broadcast_to(alg.step(ops, full(ops, state, 1), 1)["x"], (Q, r, m))
        c = x[0] if alg.consensus else x.reshape(Q * r, m)
    if initial and not alg.consensus:
        ops = _RowSpaceOps(W, G, np.eye(Q * r).reshape(Q, r, Q * r), lr)
        state = {nm: np.zeros((Q, r, Q * r)) for nm in names}
        out = alg.step(ops, full(ops, state, 1), 1)
        B = np.concatenate([np.broadcast_to(out[nm], (Q, r, Q * r)).reshape(Q * r, Q * r) for nm in names])
    return AffineMap(M, c, F, Finv, names, B)


def _conserved(M, C, tol):
    r"""Orthonormal basis of the unit left eigenvectors :math:`\ell` of ``M`` with :math:`\ell^\top C = 0`, (S, n_c)."""
    scale = max(1.0, float(np.abs(M).max()))
    _, sv, Vt = np.linalg.svd((M - np.eye(len(M))).T)
    L = Vt[sv <= tol * scale * len(M)].T                                  # left eigenvectors for eigenvalue 1
    proj = L.T @ C
    _, ps, pVt = np.linalg.svd(proj.T, full_matrices=True)               # combinations with l^T C = 0
    rank = int(np.sum(ps > tol * max(1.0, float(np.abs(C).max())) * C.shape[1]))
    return L @ pVt[rank:].T


def restricted_radius(M, offsets=None, tol: float = 1e-9, n_conserved: int | None = None) -> float:
    r"""Spectral radius of ``M`` without the unit eigenvalues of conserved quantities.

    Exact-convergence methods (EXTRA, exact diffusion, NIDS, gradient tracking, ...) conserve
    quantities :math:`\ell^\top Z` along :math:`Z^+ = M Z + C g_0`: :math:`\ell^\top M = \ell^\top`
    and :math:`\ell^\top C = 0` (e.g. :math:`\sum_q y_q - \sum_q \nabla L_q(x_q)` for a gradient
    tracker), so :math:`M` has the eigenvalue 1 at every step size. The value the
    initialisation gives them (:math:`y^0 = \nabla f(x^0)` sets the tracker's to 0) selects
    the fixed point :math:`Z^*` the iterates go to; the error :math:`Z - Z^*` stays in the
    invariant subspace :math:`V = \{E : \ell^\top E = 0\}`, so the radius that decides
    convergence is that of :math:`M|_V`, whose spectrum is that of :math:`M` without those
    unit eigenvalues. A unit left eigenvector with :math:`\ell^\top C \neq 0` is kept (its
    quantity drifts linearly: no convergence). ``offsets`` is :math:`C` (an array or a
    function returning it, called only when ``M`` has eigenvalues within ``tol`` of 1);
    without it this is :func:`radius`. ``n_conserved``, if known (it does not depend on the
    step size), skips their computation: the ``n_conserved`` eigenvalues nearest to 1 are left out.
    """
    ev = np.linalg.eigvalsh(M) if is_symmetric(M) else np.linalg.eigvals(M)
    scale = max(1.0, float(np.abs(M).max()))
    if (offsets is None and n_conserved is None) or not np.any(np.abs(ev - 1) <= tol * scale):
        return float(np.abs(ev).max())
    if n_conserved is None:
        Lc = _conserved(M, offsets() if callable(offsets) else offsets, tol)
        if Lc.shape[1] == 0:
            return float(np.abs(ev).max())
        U, _, _ = np.linalg.svd(Lc, full_matrices=True)
        V = U[:, Lc.shape[1]:]                                             # orthonormal basis of {E : Lc^T E = 0}
        return float(np.abs(np.linalg.eigvals(V.T @ M @ V)).max())
    keep = np.argsort(np.abs(ev - 1))[n_conserved:]
    return float(np.abs(ev[keep]).max()) if len(keep) else 0.0


def conserved_count(algorithm, W, system, lr, tol: float = 1e-9, blocks=None) -> int:
    """Number of conserved quantities of ``algorithm`` (unit eigenvalues excluded by :func:`restricted_radius`)."""
    alg = algorithms.get(algorithm)
    a = affine_map(alg, W, system, lr, offset=False, initial=not alg.consensus, blocks=blocks)
    if a.initial is None:
        return 0
    return int(_conserved(a.M, a.initial, tol).shape[1])


def is_symmetric(M, rtol: float = 1e-12) -> bool:
    """Whether ``M`` equals its transpose up to ``rtol`` times its largest entry (round-off of a symmetric product)."""
    return bool(np.allclose(M, M.T, rtol=0, atol=rtol * max(np.abs(M).max(), 1e-300)))


def local_lmax(system) -> float:
    r""":math:`\max_q \lambda_{\max}(K_{qq})/N_q`, the largest local curvature (independent of W)."""
    out = 0.0
    for q in range(system.Q):
        idx = np.flatnonzero(system.d[q])
        out = max(out, np.linalg.eigvalsh(system.Kmat[np.ix_(idx, idx)])[-1] * system.d[q, idx[0]])
    return out


def local_curvature(K, owner) -> float:
    r""":math:`L = \max_q \lambda_{\max}(K_{qq})/N_q` of a kernel and a split (:func:`local_lmax`).

    Example:
        >>> local_curvature(np.eye(4), [0, 0, 1, 1])
        0.5
    """
    owner = np.asarray(owner)
    Q = int(owner.max()) + 1
    return float(local_lmax(_system(np.full((Q, Q), 1.0 / Q), K, owner)))


def central_lmax(system) -> float:
    r""":math:`\lambda_{\max}(\bar D^{1/2} K \bar D^{1/2})`, the curvature of the centralised loss."""
    dbar = np.sqrt(system.d.mean(axis=0))
    return float(np.linalg.eigvalsh(dbar[:, None] * system.Kmat * dbar)[-1])


class Curvatures:
    """The W-independent constants of the sufficient bounds, computed when first read:
    ``local`` (:func:`local_lmax`) and ``central`` (:func:`central_lmax`)."""

    def __init__(self, system):
        self.system = system

    @functools.cached_property
    def local(self) -> float:
        return local_lmax(self.system)

    @functools.cached_property
    def central(self) -> float:
        return central_lmax(self.system)


def _bound(algorithm, W, system, curvatures=None) -> float | None:
    alg = algorithms.get(algorithm)
    if alg.bound is None:
        return None
    return alg.bound(W, curvatures if curvatures is not None else Curvatures(system))


def dgd_step_size_bound(W, K, owner) -> float:
    r"""Sufficient step size for stable linearised DGD: :math:`\eta < \frac{1 + \lambda_{\min}(W)}{L}` for a
    symmetric ``W``, :math:`\eta < \frac{2\min_q W_{qq}}{L}` otherwise, :math:`L = \max_q \lambda_{\max}(K_{qq})/N_q`.

    Args:
        W: (Q, Q) doubly stochastic mixing matrix (:func:`p2pntk.graphs.check_mixing_matrix`).
        K: (N, N) or (N, C, N, C) NTK Gram matrix of the training points.
        owner: (N,) agent of each training point.

    Example:
        >>> dgd_step_size_bound(np.eye(2) * 0.5 + 0.25, np.eye(4), [0, 0, 1, 1])
        3.0
    """
    return step_size_bound("dgd", W, K, owner)


def step_size_bound(algorithm, W, K, owner) -> float:
    r"""Sufficient stable step size of each algorithm on the linearised model (its ``bound``).

    DGD: :func:`dgd_step_size_bound`. ATC and CTA:
    :math:`2 / \max_q \lambda_{\max}(K_{qq})/N_q` (independent of :math:`W`, since
    :math:`\|W\|_2 \le 1` for every doubly stochastic W). Centralised: :math:`2/\lambda_{\max}(\bar G)`.
    EXTRA and NIDS: the literature's bounds, proved for a symmetric W only.
    """
    alg = algorithms.get(algorithm)
    system = _system(W, K, owner)
    bound = _bound(alg, system.W, system)
    if bound is None:
        raise ValueError(f"algorithm {alg.name!r} has no sufficient step-size bound"
                         + ("" if alg.bound is None else " for a non-symmetric W")
                         + "; compute the exact threshold with critical_step_size instead")
    return bound


def iteration_matrix(algorithm, W, K, owner, lr, momentum: float = 0.0) -> np.ndarray:
    r"""Iteration matrix :math:`M` of the linearised algorithm in the coordinates :math:`z = F^\top a` (module docstring)."""
    system = _system(W, K, owner)
    return affine_map(algorithms.get(algorithm, momentum), system.W, system, lr, offset=False).M


def radius(M) -> float:
    """Spectral radius of an iteration matrix (symmetric eigen-solver when ``M`` is symmetric)."""
    ev = np.linalg.eigvalsh(M) if is_symmetric(M) else np.linalg.eigvals(M)
    return float(np.abs(ev).max())


def _radius(alg, W, system, lr, blocks=None) -> float:
    blocks = local_blocks(system) if blocks is None else blocks
    M = affine_map(alg, W, system, lr, offset=False, blocks=blocks).M
    return restricted_radius(M, lambda: affine_map(alg, W, system, lr, offset=False, initial=True, blocks=blocks).initial)


def spectral_radius(algorithm, W, K, owner, lr, momentum: float = 0.0) -> float:
    r"""Spectral radius :math:`\rho(M)` on the subspace the initialisation selects
    (:func:`restricted_radius`): the linearised iterates converge iff it is below 1."""
    system = _system(W, K, owner)
    return _radius(algorithms.get(algorithm, momentum), system.W, system, lr)


def critical_step_size(algorithm, W, K, owner, momentum: float = 0.0, *, rtol: float = 1e-7,
                       grid: float = 1.25) -> float:
    r"""The critical step size: the smallest :math:`\eta` at which the spectral radius of
    :func:`spectral_radius` reaches 1.

    Scans :math:`\eta` on a geometric grid (ratio ``grid``) upwards until the radius reaches
    1, then bisects to relative precision ``rtol``. The scan starts at the algorithm's
    sufficient bound (:func:`step_size_bound`: every smaller step size is stable, by its
    theorem) where it has one, else at :math:`10^{-2}/L`, :math:`L = \max_q\lambda_{\max}(K_{qq})/N_q`.
    The stable set need not be an interval (for a non-symmetric iteration matrix): this is
    its first boundary point (an unstable window narrower than the grid ratio would be
    missed). For DGD it equals :func:`dgd_critical_step_size` (tested). Cost: one
    eigenvalue problem of :func:`iteration_size` :math:`S` per step size tried — about 25
    for the scan from :math:`10^{-2}/L`, fewer from a bound, plus
    :math:`\log_2(0.25/\mathrm{rtol})` for the bisection — each :math:`O(S^3)`.
    """
    alg = algorithms.get(algorithm, momentum)
    system = _system(W, K, owner)
    start = lo = 1e-2 / local_lmax(system)
    blocks = local_blocks(system)                                  # independent of the step size: computed once
    n_c = conserved_count(alg, system.W, system, lo, blocks=blocks)   # structural: the same at every step size
    rho = lambda lr: restricted_radius(affine_map(alg, system.W, system, lr, offset=False, blocks=blocks).M,
                                       n_conserved=n_c)
    bound = _bound(alg, system.W, system)
    if bound is not None and bound * (1 - 1e-6) > lo and rho(bound * (1 - 1e-6)) < 1:
        lo = bound * (1 - 1e-6)                                    # stable below the bound: scan from there
    elif rho(lo) >= 1:
        raise ValueError(f"{alg.name}: unstable already at lr = {lo:.3g} (1e-2 / largest local curvature)")
    hi = lo * grid
    while rho(hi) < 1:
        lo, hi = hi, hi * grid
        if hi > 1e5 * start:
            raise ValueError(f"{alg.name}: stable up to lr = {lo:.3g}; no critical step size found")
    while hi - lo > rtol * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rho(mid) < 1 else (lo, mid)
    return float(0.5 * (lo + hi))


def dgd_critical_step_size(W, K, owner) -> float:
    r"""Exact threshold :math:`\eta^*` of linearised DGD: :math:`\rho(M) < 1 \iff \eta < \eta^*`.

    For a symmetric ``W``, :math:`\eta^* = 1/\mu_{\max}`, :math:`\mu_{\max}` the largest
    generalised eigenvalue of :math:`G v = \mu\,((I + W)\otimes I)\, v`; for a non-symmetric
    ``W`` (no such characterisation) :func:`critical_step_size` of ``"dgd"``.

    Cost: one symmetric generalised eigenvalue problem of size :math:`Q\,\mathrm{rank}\,K`,
    :math:`O((Q\,\mathrm{rank}\,K)^3)`; measured (2 shared cores, full-rank resolved kernel,
    C = 2): 4.8 s at N = 64, Q = 8 (size 1024) and 43 s at N = 160, Q = 10 (size 3200). Beyond
    :math:`\eta^*` the closed form describes only the onset of divergence (module docstring).
    """
    system = _system(W, K, owner)
    if not is_symmetric(system.W):
        return critical_step_size("dgd", W, K, owner)
    G, _, _ = local_blocks(system)
    r = G.shape[1]
    mu = scipy.linalg.eigh(scipy.linalg.block_diag(*G), np.kron(np.eye(system.Q) + system.W, np.eye(r)),
                           eigvals_only=True)
    return float(1.0 / mu[-1])


def dgd_fixed_point(W, K, owner, f0, y, lr):
    r"""Fixed point of constant-step linearised DGD.

    Solves :math:`((I - W)\otimes I + \eta G) z^* = -\eta [F^\top D_q (f_0 - y)]_q`
    and returns the coefficients :math:`a_q^*` (Q, N, C) and the training
    outputs :math:`f_0 + K a_q^*` (Q, N, C) of every agent.

    If :math:`K \succ 0` (a wide network on distinct inputs) the fixed point is
    consensus on the interpolator, :math:`f_q^* = y` for every agent — the limit
    of centralised gradient descent — whatever the step size below the
    threshold. Disagreement at the fixed point needs a singular :math:`K`
    (e.g. agents holding the same inputs with conflicting targets, or
    :math:`NC > P`); it is then at most :math:`\eta\|g(\Theta^*)\|/(1-\lambda_2(W))`.
    """
    system = _system(W, K, owner, f0, y)
    G, F, Finv = local_blocks(system)
    Q, r = G.shape[0], G.shape[1]
    m = system.resid0.shape[1]
    lhs = np.kron(np.eye(Q) - system.W, np.eye(r)) + lr * scipy.linalg.block_diag(*G)
    rhs = -lr * np.concatenate([F.T @ (system.d[q][:, None] * system.resid0) for q in range(Q)])
    z = np.linalg.solve(lhs, rhs).reshape(Q, r, m)
    A = np.einsum("nr,qrm->qnm", Finv, z)
    train, _, coef = system.record(A)
    return coef, train


def iteration_size(algorithm, system) -> int:
    r"""Size S of the iteration matrix of :func:`affine_map` (state variables × Q × rank K, or × rank K
    for a consensus algorithm), without forming it: its eigenvalues cost :math:`O(S^3)`."""
    alg = algorithms.get(algorithm)
    n_state = len([nm for nm in algorithms.state_variables(alg) if nm not in dict(alg.cached)])
    r = row_space_factor(system.Kmat)[0].shape[1]
    return n_state * r * (1 if alg.consensus else system.Q)


RADIUS_SIZE = 1000
"""Largest iteration matrix whose spectral radius :func:`warn_if_unstable` computes (about a second)."""


def warn_if_unstable(algorithm, W, system, lr, label: str = "", curvatures=None) -> None:
    """Warn if ``lr`` exceeds the algorithm's *sufficient* stable step size (its ``bound``).

    The bound is sufficient, not necessary: the message adds the exact spectral radius of
    :func:`spectral_radius` (divergence predicted or not) when the iteration matrix has at
    most :data:`RADIUS_SIZE` rows (:func:`iteration_size`), and otherwise says how to get it.
    ``label`` starts the message (e.g. which configuration of a sweep); ``curvatures``
    (a :class:`Curvatures` of ``system``) may be passed to share them between calls.
    """
    alg = algorithms.get(algorithm)
    bound = _bound(alg, W, system, curvatures)
    if bound is None or lr <= bound:
        return
    msg = f"{label}lr={lr:.4g} exceeds the sufficient stable step size {bound:.4g} of linearised {alg.name}"
    size = iteration_size(alg, system)
    if size <= RADIUS_SIZE:
        rho = _radius(alg, W, system, lr)
        msg += f"; spectral radius {rho:.6g}: " + (
            f"predicted divergence, errors grow like {rho:.4g}^k" if rho > 1
            else "still convergent (the bound is sufficient, not necessary)")
    else:
        msg += (f"; it is sufficient, not necessary: stability.spectral_radius decides (an eigenvalue "
                f"problem of size {size}, not computed here)")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
