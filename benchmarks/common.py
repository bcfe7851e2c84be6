"""Helpers shared by the benchmark modules: timing, rows, problem set-up."""
from __future__ import annotations

import time

import numpy as np


def seconds(fn, repeat: int = 1):
    """Best wall-clock time of ``repeat`` calls of ``fn()`` and the last result."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def row(benchmark: str, case: str, baseline_s: float, ours_s: float, note: str, target: float | None = None, **numbers):
    """One result row; ``ratio`` = baseline_s / ours_s (speed-up, > 1 means ours is faster);
    ``target`` is the minimum speed-up asked for, ``meets`` whether the run reached it."""
    ratio = float(baseline_s) / float(ours_s)
    out = dict(benchmark=benchmark, case=case, baseline_s=float(baseline_s), ours_s=float(ours_s), ratio=ratio,
               target=target, meets=None if target is None else bool(ratio >= target), note=note)
    out.update({k: (v.item() if isinstance(v, np.generic) else v) for k, v in numbers.items()})
    return out


def enable_x64():
    """Float64 JAX, as in every chapter of the book (the predictor is float64 NumPy anyway)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def synthetic_kernel(n: int, n_test: int, d: int = 16, seed: int = 0):
    """A PSD kernel without a network: the analytic ReLU NTK (one hidden layer,
    :func:`p2pntk.kernels.mlp`) of random unit vectors in R^d; returns K (n, n), K_test (n_test, n)."""
    from p2pntk import kernels

    x = np.random.default_rng(seed).standard_normal((n + n_test, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, _, kernel_fn = kernels.mlp(1, n_out=1)
    K = np.asarray(kernels.analytic_ntk(kernel_fn, x[:n]), dtype=np.float64)
    Kt = np.asarray(kernels.analytic_ntk(kernel_fn, x[n:], x[:n]), dtype=np.float64)
    return K, Kt
