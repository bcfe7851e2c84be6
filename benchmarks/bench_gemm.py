"""The machine's float64 matmul rate and the fraction of it the predictor's dominant kernel reaches.

Peak: best of 5 square ``numpy`` matmuls of size n (:math:`2n^3` flops). The predictor's
dominant operation per iteration is :meth:`p2pntk.coefficients.CoefficientSystem.local_grad`: each
agent's rows of the shared kernel times its (N, C) coefficients, :math:`2N^2C` flops
reading the :math:`N^2` kernel once — arithmetic intensity :math:`C/4` flop/byte, so it is
bound by memory bandwidth, not by the floating-point units; ``bandwidth_GBps`` is the
kernel bytes read per second. Also reported: the recording product
:math:`K\\,[a_1 \\dots a_Q]` (one (N, N) x (N, QC) matmul), which is compute-bound.
"""
from __future__ import annotations

import numpy as np
from common import row, seconds, synthetic_kernel

from p2pntk import coefficients

FULL = dict(n_gemm=3000, N=4096, Q=8, C=10)
QUICK = dict(n_gemm=1000, N=256, Q=4, C=10)


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    rng = np.random.default_rng(0)
    n = cfg["n_gemm"]
    a, b = rng.standard_normal((n, n)), rng.standard_normal((n, n))
    t_peak = seconds(lambda: a @ b, 5)[0]
    peak = 2 * n ** 3 / t_peak / 1e9
    N, Q, C = cfg["N"], cfg["Q"], cfg["C"]
    K, _ = synthetic_kernel(N, 1)
    owner = np.arange(N) % Q
    sys = coefficients.CoefficientSystem([np.full((Q, Q), 1 / Q)], K, owner, np.zeros((N, C)), np.zeros((N, C)))
    A = rng.standard_normal((Q, N, C))
    t_grad = seconds(lambda: sys.local_grad(A), 5)[0]
    t_rec = seconds(lambda: sys.apply(sys.Kmat, A), 3)[0]
    rate_grad, rate_rec = 2 * N * N * C / t_grad / 1e9, 2 * N * N * Q * C / t_rec / 1e9
    case = f"N={N}, Q={Q}, C={C}"
    return [
        row("gemm", f"peak: {n}x{n} float64 matmul", np.nan, t_peak, f"{peak:.3g} GFLOP/s", GFLOPs=peak),
        row("gemm", f"recursion gradient, {case}", np.nan, t_grad,
            f"{rate_grad:.3g} GFLOP/s = {rate_grad / peak:.1%} of peak; "
            + ("memory-bound " if N * N * 8 > 64 * 2 ** 20 else "kernel fits in cache, ")
            + f"({N * N * 8 / t_grad / 1e9:.3g} GB/s of kernel read)",
            GFLOPs=rate_grad, fraction_of_peak=rate_grad / peak, bandwidth_GBps=N * N * 8 / t_grad / 1e9),
        row("gemm", f"recording K [a_1..a_Q], {case}", np.nan, t_rec,
            f"{rate_rec:.3g} GFLOP/s = {rate_rec / peak:.1%} of peak", GFLOPs=rate_rec, fraction_of_peak=rate_rec / peak),
    ]
