r"""Problem set-up: a data set split over Q agents, one wide network at :math:`\theta_0`, its NTK.

Every chapter that compares closed-form predictions with training builds the same
problem — a data set split across :math:`Q` agents, one wide network
:math:`f(x;\theta)` at a common initialisation :math:`\theta_0`, and its empirical
NTK on the training points — so it is built here, once.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import jax
import jax.numpy as jnp
import numpy as np

from . import data, kernels


@dataclass
class Problem:
    r"""Data, agents, network and NTK of one experiment (all arrays float64 NumPy).

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


def by_agent(p: Problem) -> Problem:
    r"""The same problem with its training points grouped by agent (``owner`` sorted, stable).

    Only the order of the points changes, so every agent's data, every prediction and every
    trained output on the test points stay the same (up to the order of sums); the closed
    form then needs no copy of the kernel grouped by agent
    (:class:`p2pntk.coefficients.CoefficientSystem`): one (NC)² copy instead of two.

    Example:
        >>> q = by_agent(digits_problem(20, 10, 4, 32, seed=1))
        >>> bool(np.all(np.diff(q.owner) >= 0)), q.K.shape
        (True, (20, 10, 20, 10))
    """
    order = np.argsort(p.owner, kind="stable")
    take = lambda a, axis=0: None if a is None else np.take(a, order, axis=axis)
    K = None if p.K is None else (p.K[np.ix_(order, order)] if p.K.ndim == 2 else take(take(p.K), 2))
    return replace(p, x=take(p.x), y=take(p.y), labels=take(p.labels), owner=take(p.owner), f0=take(p.f0),
                   K=K, K_test=None if p.K_test is None else take(p.K_test, 2 if p.K_test.ndim == 4 else 1))


def digits_problem(n_train: int, n_test: int, n_agents: int, width: int, **options) -> Problem:
    r""":func:`problem` on scikit-learn's digits (the theory chapters' data).

    Example:
        >>> p = digits_problem(20, 10, 4, 32, seed=1)
        >>> p.K.shape, p.K_test.shape, p.f0.shape, np.bincount(p.owner).tolist()
        ((20, 10, 20, 10), (10, 10, 20, 10), (20, 10), [5, 5, 5, 5])
    """
    return problem("digits", n_train, n_test, n_agents, width, **options)
