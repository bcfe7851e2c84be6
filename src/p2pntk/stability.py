r"""Stability of linearised peer-to-peer gradient descent, and the DGD fixed point.

Write the kernel Gram matrix of the training points as :math:`K = F F^\top`
(:math:`F = U_r \Lambda_r^{1/2}`, :math:`r = \mathrm{rank}\,K`) and
:math:`z_q = F^\top a_q \in \mathbb R^r` — the coordinates of agent q's
displacement :math:`\theta_q - \theta_0 = J^\top a_q` in the row space of
:math:`J` (:math:`\|J^\top a\| = \|F^\top a\|`). With
:math:`G_q = F^\top D_q F` (:math:`\lambda_{\max}(G_q) = \lambda_{\max}(K_{qq})/N_q`,
:math:`K_{qq}` the local Gram matrix) the iteration matrices are

- DGD: :math:`M = W\otimes I - \eta\,\mathrm{blkdiag}(G_q)` (symmetric);
- ATC: :math:`M = (W\otimes I)(I - \eta G)`; CTA: :math:`M = (I-\eta G)(W\otimes I)`
  (same spectrum);
- centralised: :math:`M = I - \eta \bar G`, :math:`\bar G = \frac1Q\sum_q G_q`.

The linearised iterates converge iff the spectral radius :math:`\rho(M) < 1`.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg


def _system(algorithm, W, K, owner):
    from .dynamics import _System

    K = np.asarray(K, dtype=np.float64)
    N = K.shape[0]
    C = K.shape[1] if K.ndim == 4 else 1
    return _System(algorithm, W, K, owner, np.zeros((N, C)), np.zeros((N, C)))


def row_space_factor(Kmat):
    r"""Factor :math:`F = U_r \Lambda_r^{1/2}` with :math:`K = F F^\top`, and :math:`U_r \Lambda_r^{-1/2}`.

    ``Kmat`` is an (n, n) symmetric PSD matrix (a resolved kernel reshaped to (NC, NC)).
    Eigenvalues at or below :math:`\lambda_{\max}\, n\, \epsilon` count as zero, so that
    round-off in the null space of a rank-deficient kernel is ignored; null directions
    of :math:`K` change no output and no parameter.

    Returns:
        ``(F, F_pinv_T)``, both (n, r) with :math:`r = \mathrm{rank}\,K`.

    Example:
        >>> F, G = row_space_factor(np.diag([4.0, 0.0]))
        >>> F.ravel().tolist(), G.ravel().tolist()
        ([2.0, 0.0], [0.5, 0.0])
    """
    s, U = np.linalg.eigh(Kmat)
    keep = s > max(s.max(), 0) * Kmat.shape[0] * np.finfo(float).eps
    return U[:, keep] * np.sqrt(s[keep]), U[:, keep] / np.sqrt(s[keep])


def _local_blocks(sys):
    """G_q = F^T D_q F for every agent, (Q, r, r); and F, F^{+T}."""
    F, Finv = row_space_factor(sys.Kmat)
    G = np.stack([F.T @ (sys.d[q] * F) for q in range(sys.Q)])
    return G, F, Finv


def _local_lmax(sys):
    """max_q lambda_max(K_qq) / N_q; independent of W, computed once per kernel (``sys.shared``)."""
    if "local_lmax" not in sys.shared:
        out = 0.0
        for q in range(sys.Q):
            idx = np.flatnonzero(sys.d[q, :, 0])
            out = max(out, np.linalg.eigvalsh(sys.Kmat[np.ix_(idx, idx)])[-1] * sys.d[q, idx[0], 0])
        sys.shared["local_lmax"] = out
    return sys.shared["local_lmax"]


def dgd_step_size_bound(W, K, owner) -> float:
    r"""Sufficient step size for stable linearised DGD: :math:`\eta < \frac{1 + \lambda_{\min}(W)}{\max_q \lambda_{\max}(K_{qq})/N_q}`.

    Args:
        W: (Q, Q) symmetric doubly stochastic mixing matrix.
        K: (N, N) or (N, C, N, C) NTK Gram matrix of the training points.
        owner: (N,) agent of each training point.

    Example:
        >>> dgd_step_size_bound(np.eye(2) * 0.5 + 0.25, np.eye(4), [0, 0, 1, 1])
        3.0
    """
    sys = _system("dgd", W, K, owner)
    return float((1 + np.linalg.eigvalsh(sys.W)[0]) / _local_lmax(sys))


def _bound(sys) -> float:
    if sys.algorithm == "dgd":
        return float((1 + np.linalg.eigvalsh(sys.W)[0]) / _local_lmax(sys))
    if sys.algorithm == "centralized":
        dbar = np.sqrt(sys.d[:, :, 0].mean(axis=0))
        return float(2.0 / np.linalg.eigvalsh(dbar[:, None] * sys.Kmat * dbar)[-1])
    return float(2.0 / _local_lmax(sys))


def step_size_bound(algorithm, W, K, owner) -> float:
    r"""Sufficient stable step size of each algorithm on the linearised model.

    DGD: :func:`dgd_step_size_bound`. ATC and CTA:
    :math:`2 / \max_q \lambda_{\max}(K_{qq})/N_q` (independent of :math:`W`, since
    :math:`\|W\|_2 = 1`). Centralised: :math:`2/\lambda_{\max}(\bar G)`.
    """
    return _bound(_system(algorithm, W, K, owner))


def _matrix(sys, lr) -> np.ndarray:
    G, _, _ = _local_blocks(sys)
    Q, r = G.shape[0], G.shape[1]
    if sys.algorithm == "centralized":
        return np.eye(r) - lr * G.mean(axis=0)
    Gb = scipy.linalg.block_diag(*G)
    Wt = np.kron(sys.W, np.eye(r))
    if sys.algorithm == "dgd":
        return Wt - lr * Gb
    if sys.algorithm == "atc":
        return Wt @ (np.eye(Q * r) - lr * Gb)
    return (np.eye(Q * r) - lr * Gb) @ Wt


def iteration_matrix(algorithm, W, K, owner, lr) -> np.ndarray:
    r"""Iteration matrix :math:`M` of the linearised algorithm in the coordinates :math:`z = F^\top a` (module docstring)."""
    return _matrix(_system(algorithm, W, K, owner), lr)


def _radius(sys, lr) -> float:
    M = _matrix(sys, lr)
    if sys.algorithm in ("dgd", "centralized"):
        return float(np.abs(np.linalg.eigvalsh(M)).max())
    return float(np.abs(np.linalg.eigvals(M)).max())


def spectral_radius(algorithm, W, K, owner, lr) -> float:
    r"""Spectral radius :math:`\rho(M)`: the linearised iterates converge iff it is below 1."""
    return _radius(_system(algorithm, W, K, owner), lr)


def dgd_critical_step_size(W, K, owner) -> float:
    r"""Exact threshold :math:`\eta^*` of linearised DGD: :math:`\rho(M) < 1 \iff \eta < \eta^*`.

    :math:`\eta^* = 1/\mu_{\max}`, :math:`\mu_{\max}` the largest generalised
    eigenvalue of :math:`G v = \mu\,((I + W)\otimes I)\, v`.
    """
    sys = _system("dgd", W, K, owner)
    G, _, _ = _local_blocks(sys)
    r = G.shape[1]
    mu = scipy.linalg.eigh(scipy.linalg.block_diag(*G), np.kron(np.eye(sys.Q) + sys.W, np.eye(r)), eigvals_only=True)
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
    from .dynamics import _System

    sys = _System("dgd", W, K, owner, f0, y)
    G, F, Finv = _local_blocks(sys)
    Q, r = G.shape[0], G.shape[1]
    m = sys.resid0.shape[1]
    lhs = np.kron(np.eye(Q) - sys.W, np.eye(r)) + lr * scipy.linalg.block_diag(*G)
    rhs = -lr * np.concatenate([F.T @ (sys.d[q] * sys.resid0) for q in range(Q)])
    z = np.linalg.solve(lhs, rhs).reshape(Q, r, m)
    A = np.einsum("nr,qrm->qnm", Finv, z)
    train, _, coef = sys.record(A)
    return coef, train


def warn_if_unstable(system, lr, label: str = "") -> None:
    """Warn, naming the bound, if ``lr`` exceeds the algorithm's sufficient stable step size,
    with the exact spectral radius and the predicted growth per iteration (small systems);
    ``label`` starts the message (e.g. which configuration of a sweep)."""
    bound = _bound(system)
    if lr <= bound:
        return
    msg = f"{label}lr={lr:.4g} exceeds the stability bound {bound:.4g} of linearised {system.algorithm}"
    if system.Q * system.Kmat.shape[0] <= 3000:
        rho = _radius(system, lr)
        msg += f"; spectral radius {rho:.6g}: " + (
            f"predicted divergence, errors grow like {rho:.4g}^k" if rho > 1
            else "still convergent (the bound is sufficient, not necessary)")
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
