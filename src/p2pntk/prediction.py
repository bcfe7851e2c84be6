r"""Train and predict with the same call: :func:`predict` takes what
:func:`p2pntk.training.simulate` takes and returns the same record, from the closed form.

Linearised around the common initialisation :math:`\theta_0`, peer-to-peer training keeps
every agent's parameters in the row space of the training Jacobian
:math:`J = \partial f(X;\theta_0)/\partial\theta \in \mathbb R^{NC\times P}`,

.. math:: \theta_q(k) = \theta_0 + J^\top a_q(k), \qquad
          f_q(x; k) = f(x;\theta_0) + K(x, X)\, a_q(k), \qquad K(x, X) = J(x) J^\top ,

where the coefficients :math:`a_q(k)\in\mathbb R^{N\times C}` follow the algorithm's own
recursion from :math:`a_q(0) = 0` (for DGD
:math:`a_q^+ = \sum_l W_{ql} a_l - \eta D_q (f_0 + K a_q - y)`,
:func:`p2pntk.dynamics.linearized_outputs`). :func:`predict` computes the kernel
(:func:`p2pntk.kernels.kernel`, or the analytic :math:`\Theta\otimes I_C`, or the one
given), :math:`f_0 = f(X;\theta_0)` and :math:`f(X_*;\theta_0)`, and runs that recursion.
It is exact for the linearised network at any step size, and close to the actual network
when it is wide (the NTK regime); its result has the fields of ``simulate``'s, so that
replacing ``simulate`` by ``predict`` is the whole change.
"""
from __future__ import annotations

import inspect
import warnings

import jax
import numpy as np

from . import dynamics, kernels, training
from .algorithms import DynamicsResult

#: The kernels :func:`predict` computes itself (a precomputed one is given as ``(K, K_test)``).
KERNELS = ("empirical", "shared", "analytic")

#: The arguments of :func:`p2pntk.training.simulate` that :func:`predict` names itself.
_OWN = ("algorithm", "apply_fn", "params0", "W", "x", "y", "owner", "lr", "steps", "x_test", "record_params",
        "momentum", "batches")


def _kernel_blocks(kernel, kernel_fn, apply_fn, params0, x, x_test, N, C, batch_size):
    """(K, K_test) of the requested kind, float64 NumPy; shapes checked for a precomputed one."""
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel={kernel!r}; allowed: {', '.join(KERNELS)}, or a precomputed "
                             "(K, K_test) tuple")
        if (kernel == "analytic") != (kernel_fn is not None):
            raise ValueError("kernel='analytic' needs kernel_fn (the infinite-width kernel function, e.g. the third "
                             "value returned by p2pntk.kernels.mlp)" if kernel_fn is None else
                             f"kernel_fn is used only with kernel='analytic', got kernel={kernel!r}")
        if kernel == "analytic":
            with kernels.float64():
                xa = kernels.as_float64(x)
                if x_test is None:
                    return np.asarray(kernels.analytic_ntk(kernel_fn, xa, xa), dtype=np.float64), None
                K, K_test = kernels.analytic_ntk_train_test(kernel_fn, xa, kernels.as_float64(x_test))
                return np.asarray(K, dtype=np.float64), np.asarray(K_test, dtype=np.float64)
        return kernels.kernel(apply_fn, params0, x, x_test, resolved=kernel == "empirical", batch_size=batch_size)
    if kernel_fn is not None:
        raise ValueError("kernel_fn is used only with kernel='analytic', got a precomputed kernel")
    if isinstance(kernel, (tuple, list)):
        if len(kernel) != 2:
            raise ValueError(f"kernel: a precomputed kernel is a (K, K_test) pair, got {len(kernel)} items")
        K, K_test = kernel
    else:
        K, K_test = kernel, None
    K = np.asarray(K, dtype=np.float64)
    if K.shape not in ((N, N), (N, C, N, C)):
        raise ValueError(f"kernel: K must have shape (N, N) = {(N, N)} (shared) or (N, C, N, C) = {(N, C, N, C)} "
                         f"(output-resolved), got {K.shape}")
    if x_test is None:
        if K_test is not None:
            raise ValueError("kernel: K_test given without x_test; pass x_test=, or (K, None)")
        return K, None
    if K_test is None:
        raise ValueError("kernel: with x_test, give the precomputed kernel as (K, K_test)")
    K_test = np.asarray(K_test, dtype=np.float64)
    Nt = len(x_test)
    want = (Nt, N) if K.ndim == 2 else (Nt, C, N, C)
    if K_test.shape != want:
        raise ValueError(f"kernel: K_test must have shape {want} (N_test = {Nt}, "
                         f"{'shared' if K.ndim == 2 else 'output-resolved'} like K), got {K_test.shape}")
    return K, K_test


def predict(algorithm, apply_fn, params0, W, x, y, owner, lr, steps, *, x_test=None, record_params=False,
            momentum: float = 0.0, batches=None, kernel="empirical", kernel_fn=None, batch_size: int | None = None,
            **simulate_options) -> DynamicsResult:
    r"""The outputs :func:`p2pntk.training.simulate` would record, predicted by the linearised network.

    With the kernel :math:`K = J(X)J(X)^\top` at :math:`\theta_0` (and :math:`K_* = J(X_*)J(X)^\top`),
    :math:`f_0 = f(X;\theta_0)`, the coefficients :math:`a_q(k)` of the algorithm's recursion
    (:func:`p2pntk.dynamics.linearized_outputs`, from :math:`a_q(0) = 0`) give

    .. math:: f_q(X; k) = f_0 + K a_q(k), \qquad f_q(X_*; k) = f(X_*;\theta_0) + K_* a_q(k),
              \qquad \theta_q(k) = \theta_0 + J^\top a_q(k) .

    Args:
        algorithm, apply_fn, params0, W, x, y, owner, lr, steps, x_test, momentum, batches:
            as :func:`p2pntk.training.simulate`.
        record_params: as ``simulate``: ``True`` records every agent's
            :math:`\theta_0 + J^\top a_q` (one vector–Jacobian product per recorded step,
            :func:`p2pntk.training.parameters`), a function ``select(stacked_params)`` what it returns.
        kernel: ``"empirical"`` (default): the output-resolved empirical NTK
            ``(N, C, N, C)`` of :func:`p2pntk.kernels.kernel`; ``"shared"``: its trace over the
            outputs ``(N, N)``, standing for :math:`\bar K\otimes I_C`; ``"analytic"``: the
            infinite-width :math:`\Theta\otimes I_C` of ``kernel_fn``; or a precomputed
            ``(K, K_test)`` (``K`` alone without ``x_test``) in either layout.
        kernel_fn: the infinite-width kernel function (``kernel="analytic"`` only), e.g. the
            third value of :func:`p2pntk.kernels.mlp`.
        batch_size: points per kernel tile (:func:`p2pntk.kernels.kernel`; bounds its memory).
        **simulate_options: any other keyword of ``simulate`` (``devices``, ``mixing``,
            ``dtype``, ...), accepted so that the call is the same; they choose how the
            networks are trained and do not change the prediction, which is float64 NumPy
            (kernels and closed form in float64 whatever ``jax_enable_x64`` says).

    Returns:
        :class:`p2pntk.algorithms.DynamicsResult`, a :class:`~p2pntk.algorithms.SimulationResult`
        with the fields of ``simulate``'s (``steps``, ``train`` (S, Q, N, C), ``test``
        (S, Q, N_test, C) or ``None``, ``params``) plus ``coef`` (S, Q, N, C), the :math:`a_q`.

    Raises:
        ValueError: an unknown ``kernel``, ``kernel_fn`` without ``kernel="analytic"`` (or the
            reverse), a precomputed kernel of the wrong shape, a bad ``batch_size``, and every
            check of ``linearized_outputs`` (mixing matrix, owner, steps, step size, NaN).
        TypeError: a keyword ``simulate`` does not take.

    A step size beyond the sufficient stable step size warns (``RuntimeWarning``, attributed
    to the caller's line), as :func:`p2pntk.dynamics.linearized_outputs` does.

    Example (a linear model, for which the prediction is exact):
        >>> import jax.numpy as jnp
        >>> x, y = np.eye(4), np.ones((4, 1))
        >>> W, owner = np.full((2, 2), 0.5), [0, 0, 1, 1]
        >>> f = lambda theta, x: jnp.asarray(x) @ theta
        >>> r = predict("dgd", f, np.zeros((4, 1)), W, x, y, owner, 0.5, [0, 1, 2])
        >>> type(r).__mro__[1].__name__, r.train.shape, r.train[2, 0, :, 0].round(3).tolist()
        ('SimulationResult', (3, 2, 4, 1), [0.312, 0.312, 0.125, 0.125])
    """
    allowed = set(inspect.signature(training.simulate).parameters) - set(_OWN)
    unknown = sorted(set(simulate_options) - allowed)
    if unknown:
        raise TypeError(f"predict() got an unexpected keyword argument {unknown[0]!r}; besides kernel, kernel_fn and "
                        f"batch_size it takes simulate's: {', '.join(_OWN[9:] + tuple(sorted(allowed)))}")
    kernels.check_batch_size(batch_size)
    y = np.asarray(y, dtype=np.float64)
    N = len(x)
    for name, arr in (("x", x), ("x_test", x_test)):           # as simulate (a NaN kernel would be reported as K's)
        if arr is not None and not np.all(np.isfinite(np.asarray(arr, dtype=np.float64))):
            raise ValueError(f"{name} contains NaN or inf")
    if y.ndim != 2 or len(y) != N:
        raise ValueError(f"y must have shape (N, C) with N = {N}, got {y.shape}")
    K, K_test = _kernel_blocks(kernel, kernel_fn, apply_fn, params0, x, x_test, N, y.shape[1], batch_size)
    with kernels.float64():
        p64 = kernels.as_float64(params0)
        f0 = np.asarray(apply_fn(p64, kernels.as_float64(x)), dtype=np.float64)
        f0_test = None if x_test is None else np.asarray(apply_fn(p64, kernels.as_float64(x_test)), dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = dynamics.linearized_outputs(algorithm, W, K, owner, f0, y, lr, steps, K_test=K_test, f0_test=f0_test,
                                        momentum=momentum, batches=batches)
    for w in caught:                                       # attributed to the caller of predict
        warnings.warn(w.message, w.category, stacklevel=2)
    params = None
    if record_params:
        params = []
        for a in r.coef:
            stacked = training.parameters(apply_fn, params0, x, a)
            params.append(jax.tree.map(np.asarray, record_params(stacked) if callable(record_params) else stacked))
    return DynamicsResult(r.steps, r.train, r.test, params, r.coef)
