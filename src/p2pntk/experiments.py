r"""Experiment set-ups and measurements shared by the theory chapters.

Every chapter that compares closed-form predictions with training builds the same
problem — scikit-learn digits split across :math:`Q` agents, one wide network
:math:`f(x;\theta)` at a common initialisation :math:`\theta_0`, and its empirical
NTK on the training points — and measures the same quantities. They live here so
that no code is copied between chapters.

Norms in parameter space are computed without forming a single parameter vector:
a displacement :math:`J^\top a` (:math:`a \in \mathbb R^{N\times C}`, :math:`J` the
training Jacobian at :math:`\theta_0`) has

.. math:: \|J^\top a\|_2^2 = a^\top J J^\top a = a^\top K a = \|F^\top a\|_2^2 ,
          \qquad K = F F^\top ,

with :math:`K` the NTK Gram matrix of the training points (output-resolved
``(N, C, N, C)``, or shared ``(N, N)`` standing for :math:`K\otimes I_C`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Problem:
    """Data, agents, network and NTK of one experiment (all arrays float64 NumPy).

    Attributes:
        x, y, labels: training inputs (N, d), centred one-hot targets (N, C), classes (N,).
        x_test, y_test, labels_test: the same for the test points.
        owner: (N,) agent holding each training point.
        apply_fn, kernel_fn, params0: the network, its infinite-width kernel function
            and the common initialisation :math:`\theta_0`.
        f0, f0_test: initial outputs :math:`f(X;\theta_0)` (N, C) and on the test points.
        K, K_test: empirical NTK :math:`J(X)J(X)^\top` and :math:`J(X_{\rm test})J(X)^\top`,
            output-resolved ``(N, C, N, C)``/``(N_test, C, N, C)`` or shared ``(N, N)``/``(N_test, N)``.
    """
    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels_test: np.ndarray
    owner: np.ndarray
    apply_fn: object
    kernel_fn: object
    params0: object
    f0: np.ndarray
    f0_test: np.ndarray
    K: np.ndarray
    K_test: np.ndarray


def problem(dataset: str, n_train: int, n_test: int, n_agents: int, width: int, *, depth: int = 1,
            partition: str = "iid", alpha: float = 0.5, seed: int = 0, resolved: bool = True,
            activation: str = "relu", with_kernel: bool = True, center: bool = True) -> Problem:
    r"""A data set split over ``n_agents`` agents, an MLP at :math:`\theta_0` and its empirical NTK.

    Data: :func:`p2pntk.data.load` (``dataset``, seed ``seed``), points assigned to
    agents by :func:`p2pntk.data.partition` (scheme ``partition``, Dirichlet ``alpha``,
    seed ``seed``). Network: :func:`p2pntk.kernels.mlp` with ``width``, ``depth`` and
    one output per class, initialised with ``jax.random.PRNGKey(seed)``. Kernel:
    :func:`p2pntk.kernels.empirical_ntk` at :math:`\theta_0`, output-resolved if
    ``resolved`` else shared; ``with_kernel=False`` leaves ``K`` and ``K_test`` as
    ``None`` (for callers that time the kernel themselves). The stratified split
    needs ``n_train`` and ``n_test`` at least 10 (one image per class).

    With ``center`` (the default) the network is the centred
    :math:`g(x;\theta) = f(x;\theta) - f(x;\theta_0)` of :func:`p2pntk.kernels.centred`:
    same Jacobian, kernel and dynamics, initial outputs :math:`f_0 = 0`.
    """
    import jax
    import jax.numpy as jnp

    from . import data, kernels

    d = data.load(dataset, n_train, n_test, seed=seed)
    owner = data.partition(d["labels_train"], n_agents, partition, alpha=alpha, seed=seed)
    init_fn, apply_fn, kernel_fn = kernels.mlp(width, depth=depth, n_out=d["y_train"].shape[1],
                                               activation=activation)
    x, x_test = jnp.asarray(d["x_train"]), jnp.asarray(d["x_test"])
    _, params0 = init_fn(jax.random.PRNGKey(seed), (-1, x.shape[1]))
    if center:
        apply_fn = kernels.centred(apply_fn, params0)
    K = K_test = None
    if with_kernel:
        K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x, resolved=resolved))
        K_test = np.asarray(kernels.empirical_ntk(apply_fn, params0, x_test, x, resolved=resolved))
    return Problem(x=d["x_train"], y=d["y_train"], labels=d["labels_train"], x_test=d["x_test"],
                   y_test=d["y_test"], labels_test=d["labels_test"], owner=owner, apply_fn=apply_fn,
                   kernel_fn=kernel_fn, params0=params0, f0=np.asarray(apply_fn(params0, x)),
                   f0_test=np.asarray(apply_fn(params0, x_test)), K=K, K_test=K_test)


def digits_problem(n_train: int, n_test: int, n_agents: int, width: int, **options) -> Problem:
    r""":func:`problem` on scikit-learn's digits (the theory chapters' data).

    Example:
        >>> p = digits_problem(20, 10, 4, 32, seed=1)
        >>> p.K.shape, p.K_test.shape, p.f0.shape, np.bincount(p.owner).tolist()
        ((20, 10, 20, 10), (10, 10, 20, 10), (20, 10), [5, 5, 5, 5])
    """
    return problem("digits", n_train, n_test, n_agents, width, **options)


def relative_error(a, b) -> float:
    r"""Relative error :math:`\|a - b\|_2 / \|b\|_2` (Frobenius norm over all entries).

    Example:
        >>> round(relative_error([1.0, 3.0], [1.0, 1.0]), 12)
        1.414213562373
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def loglog_slope(x, y) -> float:
    r"""Least-squares slope :math:`p` of :math:`\log y = p \log x + c` (fitted order of a power law).

    Example:
        >>> round(loglog_slope([1, 2, 4], [3, 12, 48]), 12)
        2.0
    """
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def flatten_agents(stacked_params) -> np.ndarray:
    r"""All parameters of every agent as one (Q, P) array, from a pytree with leading agent axis.

    Example:
        >>> flatten_agents([np.zeros((2, 3)), np.ones((2, 2, 2))]).shape
        (2, 7)
    """
    import jax

    leaves = jax.tree.leaves(stacked_params)
    Q = np.shape(leaves[0])[0]
    return np.concatenate([np.asarray(v, dtype=np.float64).reshape(Q, -1) for v in leaves], axis=1)


_FACTORS: dict = {}


def row_space_factor(K) -> np.ndarray:
    r"""Factor :math:`F = U_r\Lambda_r^{1/2}` with :math:`K = FF^\top` on the range of :math:`K`.

    Eigenvalues at or below :math:`\lambda_{\max} \cdot n \cdot \epsilon` (:math:`n`
    the size of the matrix, :math:`\epsilon` the float64 machine epsilon) are treated
    as zero (:func:`p2pntk.stability.row_space_factor`, cached here by the bytes of ``K``), so that round-off in the null space
    of a rank-deficient kernel does not enter the norms below (through the quadratic
    form :math:`a^\top K a` it would, at the level :math:`\sqrt\epsilon`). Cached by the
    bytes of ``K``.

    Args:
        K: (N, C, N, C) output-resolved (factor of the (NC, NC) matrix) or (N, N) shared.

    Returns:
        (n, r) array, :math:`n = NC` or :math:`N`, :math:`r = \mathrm{rank}\,K`.

    Example:
        >>> row_space_factor(np.diag([4.0, 0.0])).round(12)
        array([[2.],
               [0.]])
    """
    import hashlib

    K = np.ascontiguousarray(K, dtype=np.float64)
    key = (K.shape, hashlib.sha1(K.tobytes()).hexdigest())
    if key not in _FACTORS:
        from .stability import row_space_factor as factor

        n = int(round(np.sqrt(K.size)))
        if len(_FACTORS) > 16:
            _FACTORS.clear()
        _FACTORS[key] = factor(K.reshape(n, n))[0]
    return _FACTORS[key]


def row_space_coordinates(K, coef) -> np.ndarray:
    r"""Coordinates :math:`z_q = F^\top a_q` of the displacements :math:`J^\top a_q`.

    :math:`J^\top a = V F^\top a` with :math:`V` orthonormal (thin SVD of :math:`J`),
    so :math:`\|J^\top a\|_2 = \|F^\top a\|_2`: every parameter-space norm is a
    Euclidean norm of these coordinates (:func:`row_space_factor`).

    Args:
        K: (N, C, N, C) or (N, N); coef: (Q, N, C).

    Returns:
        (Q, r, 1) for the output-resolved kernel, (Q, r, C) for the shared one.
    """
    coef = np.asarray(coef, dtype=np.float64)
    F = row_space_factor(K)
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


def disagreement(K, coef) -> float:
    r"""Disagreement of the agents in parameter space, :math:`\|\Theta_\perp\|_2`.

    .. math:: \|\Theta_\perp\|_2^2 = \sum_q \|\theta_q - \bar\theta\|_2^2
              = \sum_q \|F^\top (a_q - \bar a)\|_2^2, \qquad
              \bar a = \tfrac1Q \textstyle\sum_q a_q .

    Example:
        >>> round(disagreement(np.eye(1), np.array([[[1.0]], [[-1.0]]])), 12)
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
    owner = np.asarray(owner)
    Q = coef.shape[0]
    K = np.asarray(K, dtype=np.float64)
    Ka = np.einsum("icjd,qjd->qic", K, coef) if K.ndim == 4 else np.einsum("ij,qjc->qic", K, coef)
    r = np.asarray(f0, dtype=np.float64)[None] + Ka - np.asarray(y, dtype=np.float64)[None]
    counts = np.bincount(owner, minlength=Q)
    D = (owner[None, :] == np.arange(Q)[:, None]) / counts[:, None]
    return D[:, :, None] * r


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
    (:math:`F = U_r\Lambda_r^{1/2}`, full column rank) and :math:`z = F^\top a`, the
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
    Q = owner.max() + 1
    dbar = (1.0 / np.bincount(owner, minlength=Q))[owner] / Q          # (N,) diagonal of D-bar
    if K.ndim == 4:
        Km, d, r0 = K.reshape(N * C, N * C), np.repeat(dbar, C), (f0 - y).reshape(N * C, 1)
    else:
        Km, d, r0 = K, dbar, f0 - y
    s, U = np.linalg.eigh(Km)
    keep = s > max(s.max(), 0) * Km.shape[0] * np.finfo(float).eps
    F = U[:, keep] * np.sqrt(s[keep])
    z = -np.linalg.solve(F.T @ (d[:, None] * F), F.T @ (d[:, None] * r0))
    a = (U[:, keep] / np.sqrt(s[keep])) @ z
    return a.reshape(N, C)


def mean_loss(outputs, y) -> np.ndarray:
    r"""Training loss of every agent's model on all N points, averaged over agents.

    .. math:: \bar L = \frac1Q \sum_q \frac1{2N}\sum_{i=1}^N \|f_q(x_i) - y_i\|_2^2 .

    Args:
        outputs: (..., Q, N, C) outputs (e.g. ``result.train``); y: (N, C).

    Returns:
        array of shape ``outputs.shape[:-3]``.
    """
    from .reproduction import mse

    return mse(np.asarray(outputs, dtype=np.float64), np.asarray(y)).mean(axis=-1)


def lazy_limit_errors(algorithm, W, K, owner, f0, y, lr, t, alphas) -> np.ndarray:
    r"""Distance of lazy-mixing iterates from the DGD gradient flow at time ``t``.

    For each :math:`\alpha`, run ``algorithm`` with the lazy matrix
    :math:`W_\alpha = (1-\alpha) I + \alpha W` and step :math:`\alpha\eta` for
    :math:`k = t/\alpha` iterations (:func:`p2pntk.dynamics.linearized_outputs`) and
    compare with the DGD flow :math:`\dot a = -((I-W)\otimes I)a - \eta D(\tilde K a + c)`
    at time :math:`t` (:func:`p2pntk.dynamics.linearized_flow_outputs`):

    .. math:: e(\alpha) = \frac{\|f_\alpha(t/\alpha) - f_{\rm flow}(t)\|}{\|f_{\rm flow}(t) - f_0\|} .

    ``t/alpha`` must be an integer for every ``alpha`` (checked).
    """
    from . import dynamics

    W = np.asarray(W, dtype=np.float64)
    flow = dynamics.linearized_flow_outputs("dgd", W, K, owner, f0, y, lr, [t]).train[0]
    errs = []
    for a in alphas:
        k = t / a
        if abs(k - round(k)) > 1e-9:
            raise ValueError(f"t/alpha must be an integer, got t={t}, alpha={a}")
        Wa = (1 - a) * np.eye(W.shape[0]) + a * W
        disc = dynamics.linearized_outputs(algorithm, Wa, K, owner, f0, y, a * lr, [int(round(k))]).train[0]
        errs.append(relative_error(disc - np.asarray(f0), flow - np.asarray(f0)))
    return np.asarray(errs)
