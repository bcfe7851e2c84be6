r"""Row-space geometry: parameter-space norms from coefficients, and the centralised minimiser.

A displacement :math:`J^\top a` (:math:`a \in \mathbb R^{N\times C}`, :math:`J` the training
Jacobian at :math:`\theta_0`) has

.. math:: \|J^\top a\|_2^2 = a^\top J J^\top a = a^\top K a = \|F^\top a\|_2^2 ,
          \qquad K = F F^\top ,

with :math:`K` the NTK Gram matrix of the training points (output-resolved
``(N, C, N, C)``, or shared ``(N, N)`` standing for :math:`K\otimes I_C`), so every
parameter-space norm is computed without forming a parameter vector.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .checks import agent_weights

_FACTORS: dict = {}


def row_space_factor(K):
    r"""Factor :math:`F = U_r \Lambda_r^{1/2}` with :math:`K = F F^\top`, and :math:`F^{+\top} = U_r \Lambda_r^{-1/2}`.

    Eigenvalues at or below :math:`\lambda_{\max}\, n\, \epsilon` (:math:`n` the size of the
    matrix, :math:`\epsilon` the float64 machine epsilon) count as zero, so that round-off in
    the null space of a rank-deficient kernel is ignored (through the quadratic form
    :math:`a^\top K a` it would enter at the level :math:`\sqrt\epsilon`); null directions of
    :math:`K` change no output and no parameter. Cached by the bytes of ``K`` (the last 16).

    Args:
        K: (N, C, N, C) output-resolved (factor of the (NC, NC) matrix), or an (n, n)
            symmetric PSD matrix (a shared kernel).

    Returns:
        ``(F, F_pinv_T)``, both (n, r) with :math:`r = \mathrm{rank}\,K`.

    Example:
        >>> F, G = row_space_factor(np.diag([4.0, 0.0]))
        >>> F.ravel().tolist(), G.ravel().tolist()
        ([2.0, 0.0], [0.5, 0.0])
    """
    K = np.ascontiguousarray(K, dtype=np.float64)
    key = (K.shape, hashlib.sha1(K.tobytes()).hexdigest())
    if key not in _FACTORS:
        n = int(round(np.sqrt(K.size)))
        s, U = np.linalg.eigh(K.reshape(n, n))
        keep = s > max(s.max(), 0) * n * np.finfo(float).eps
        if len(_FACTORS) > 16:
            _FACTORS.clear()
        _FACTORS[key] = (U[:, keep] * np.sqrt(s[keep]), U[:, keep] / np.sqrt(s[keep]))
    return _FACTORS[key]


def row_space_coordinates(K, coef) -> np.ndarray:
    r"""Coordinates :math:`z_q = F^\top a_q` of the displacements :math:`J^\top a_q`.

    :math:`J^\top a = V F^\top a` with :math:`V` orthonormal (thin SVD of :math:`J`),
    so :math:`\|J^\top a\|_2 = \|F^\top a\|_2` (:func:`row_space_factor`).

    Args:
        K: (N, C, N, C) or (N, N); coef: (Q, N, C).

    Returns:
        (Q, r, 1) for the output-resolved kernel, (Q, r, C) for the shared one.
    """
    coef = np.asarray(coef, dtype=np.float64)
    F = row_space_factor(K)[0]
    if np.ndim(K) == 4:
        return np.einsum("nr,qn->qr", F, coef.reshape(coef.shape[0], -1))[:, :, None]
    return np.einsum("nr,qnc->qrc", F, coef)


def row_space_norms(K, coef) -> np.ndarray:
    r"""Parameter-space norms :math:`\|J^\top a_q\|_2 = \|F^\top a_q\|_2` of each agent's displacement.

    Args:
        K: (N, C, N, C) or (N, N) NTK Gram matrix of the training points.
        coef: (Q, N, C) coefficients :math:`a_q` (e.g. ``result.coef[s]``).

    Example:
        >>> row_space_norms(np.eye(2), np.array([[[3.0], [4.0]]]))
        array([5.])
    """
    z = row_space_coordinates(K, coef)
    return np.sqrt(np.sum(z ** 2, axis=(1, 2)))


def parameter_disagreement(K, coef) -> float:
    r"""Disagreement of the agents in parameter space, :math:`\|\Theta_\perp\|_2`.

    .. math:: \|\Theta_\perp\|_2^2 = \sum_q \|\theta_q - \bar\theta\|_2^2
              = \sum_q \|F^\top (a_q - \bar a)\|_2^2, \qquad
              \bar a = \tfrac1Q \textstyle\sum_q a_q .

    Not :func:`p2pntk.metrics.output_disagreement`, which measures outputs.

    Example:
        >>> round(parameter_disagreement(np.eye(1), np.array([[[1.0]], [[-1.0]]])), 12)
        1.414213562373
    """
    coef = np.asarray(coef, dtype=np.float64)
    return float(np.linalg.norm(row_space_norms(K, coef - coef.mean(axis=0, keepdims=True))))


def local_gradients(K, owner, f0, y, coef) -> np.ndarray:
    r"""Coefficients of every agent's local gradient of the linearised loss.

    With :math:`\theta_q = \theta_0 + J^\top a_q`, agent q's gradient is
    :math:`\nabla L_q(\theta_q) = J^\top D_q r_q` with :math:`r_q = f_0 + K a_q - y`
    and :math:`D_q = \mathrm{diag}(\mathbb 1[i\in q]/N_q)`; this returns the
    coefficients :math:`D_q r_q`, so that norms follow from :func:`row_space_norms`
    and each gradient vector from one vector–Jacobian product.

    Args:
        K: (N, C, N, C) or (N, N) NTK Gram matrix; owner (N,); f0, y (N, C); coef (Q, N, C).

    Returns:
        (Q, N, C) array.

    Example:
        >>> local_gradients(np.eye(2), [0, 1], np.zeros((2, 1)), np.ones((2, 1)), np.zeros((2, 2, 1)))[:, :, 0]
        array([[-1., -0.],
               [-0., -1.]])
    """
    coef = np.asarray(coef, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    Ka = np.einsum("icjd,qjd->qic", K, coef) if K.ndim == 4 else np.einsum("ij,qjc->qic", K, coef)
    r = np.asarray(f0, dtype=np.float64)[None] + Ka - np.asarray(y, dtype=np.float64)[None]
    return agent_weights(owner, coef.shape[0])[:, :, None] * r


def local_gradients_norm(K, owner, f0, y, coef) -> float:
    r"""Norm of the stacked local gradients, :math:`\|g(\Theta)\|_2^2 = \sum_q \|F^\top D_q r_q\|_2^2`.

    See :func:`local_gradients`.
    """
    return float(np.linalg.norm(row_space_norms(K, local_gradients(K, owner, f0, y, coef))))


def centralized_minimizer(K, owner, f0, y) -> np.ndarray:
    r"""Coefficients of the minimum-norm minimiser of the centralised linearised loss.

    :math:`L(\theta) = \frac1Q\sum_q L_q(\theta)` with :math:`\theta = \theta_0 + J^\top a`
    is :math:`\tfrac12 r^\top \bar D r`, :math:`r = f_0 + K a - y`,
    :math:`\bar D = \frac1Q \sum_q D_q`. With :math:`K = F F^\top`
    (:func:`row_space_factor`, full column rank) and :math:`z = F^\top a`, the
    minimiser is unique in the row space of :math:`J`:

    .. math:: z_c = -(F^\top \bar D F)^{-1} F^\top \bar D (f_0 - y), \qquad
              a_c = F^{+\top} z_c = U_r \Lambda_r^{-1/2} z_c .

    Returns:
        (N, C) coefficients :math:`a_c`.

    Example:
        >>> centralized_minimizer(np.eye(2), [0, 1], np.zeros((2, 1)), np.ones((2, 1)))[:, 0]
        array([1., 1.])
    """
    K = np.asarray(K, dtype=np.float64)
    f0, y = np.asarray(f0, dtype=np.float64), np.asarray(y, dtype=np.float64)
    owner = np.asarray(owner)
    N, C = f0.shape
    dbar = agent_weights(owner, owner.max() + 1).mean(axis=0)          # (N,) diagonal of D-bar
    if K.ndim == 4:
        d, r0 = np.repeat(dbar, C), (f0 - y).reshape(N * C, 1)
    else:
        d, r0 = dbar, f0 - y
    F, Finv = row_space_factor(K)
    z = -np.linalg.solve(F.T @ (d[:, None] * F), F.T @ (d[:, None] * r0))
    return (Finv @ z).reshape(N, C)
