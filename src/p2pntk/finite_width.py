r"""Finite-width fluctuations of the NTK of a one-hidden-layer network: their exact constants.

For the network of :func:`p2pntk.kernels.mlp` with ``depth=1`` (NTK
parameterisation, input dimension :math:`d`, width :math:`n`, :math:`C` outputs),

.. math:: h_j(x) = \tfrac{\sigma_w}{\sqrt d}\, w_j^\top x + \sigma_b \beta_j, \qquad
          f_c(x) = \tfrac{\sigma_w}{\sqrt n} \sum_{j=1}^n V_{jc}\, \phi(h_j(x)) + \sigma_b b_c ,

the output-resolved empirical NTK on inputs :math:`x_1..x_N` is an average of
:math:`n` i.i.d. per-neuron matrices,

.. math:: K_n = \frac1n \sum_{j=1}^n Z_j, \qquad
          Z_j = \big(\sigma_w^2\, a_j a_j^\top + \sigma_b^2 \mathbf 1\mathbf 1^\top\big)\otimes I_C
          + \big(\sigma_w^2\, (b_j b_j^\top)\circ\Sigma_1\big) \otimes v_j v_j^\top ,

with :math:`a_j = \phi(h_j(X))`, :math:`b_j = \phi'(h_j(X))` (vectors over the
inputs), :math:`v_j = V_{j\cdot}` and
:math:`\Sigma_1(x, x') = \sigma_w^2 x^\top x'/d + \sigma_b^2`, so that
:math:`\mathbb E K_n = \Theta\otimes I_C` and
:math:`\mathbb E\|K_n - \Theta\otimes I_C\|_F^2 = v_{\rm tot}/n` exactly (chapter
"Wide networks and the neural tangent kernel"). :func:`fluctuation_constants`
estimates :math:`v_{\rm tot}` and the off-diagonal constant :math:`v_{\rm off}`
by Monte Carlo over single neurons. The kernel itself is
:func:`p2pntk.kernels.empirical_ntk`.
"""
from __future__ import annotations

import numpy as np


def fluctuation_constants(theta, x, n_out: int, *, n_neurons: int = 100_000, seed: int = 0,
                          activation: str = "relu", W_std: float = 2.0 ** 0.5, b_std: float = 0.1,
                          batch: int = 2_000) -> dict:
    r"""Monte Carlo estimates of the per-neuron variances that set the finite-width error of the NTK.

    With :math:`Z_j` the per-neuron term of the module docstring and
    :math:`T = \Theta\otimes I_C = \mathbb E Z_j` (``theta`` the analytic NTK on ``x``),
    :math:`K_n - T = \frac1n\sum_j (Z_j - T)` is a mean of :math:`n` i.i.d. zero-mean
    terms, so exactly

    .. math:: \mathbb E\|K_n - \Theta\otimes I_C\|_F^2 = \frac{v_{\rm tot}}{n}, \qquad
              \mathbb E\|K_n^{\rm off}\|_F^2 = \frac{v_{\rm off}}{n},

    with :math:`K^{\rm off}` the output blocks :math:`c\ne c'`. Writing
    :math:`X_j = \sigma_w^2 a_j a_j^\top + \sigma_b^2\mathbf 1\mathbf 1^\top` and
    :math:`R_j = \sigma_w^2 (b_j b_j^\top)\circ\Sigma_1`,

    .. math:: \|Z_j - T\|_F^2 = C\|X_j - \Theta\|_F^2 + 2\|v_j\|^2\langle X_j - \Theta, R_j\rangle
              + \|v_j\|^4\|R_j\|_F^2, \qquad
              \|Z_j^{\rm off}\|_F^2 = \|R_j\|_F^2 \Big(\|v_j\|^4 - \sum_c v_{jc}^4\Big),

    averaged here over ``n_neurons`` independent draws
    :math:`w_j\sim\mathcal N(0, I_d)`, :math:`\beta_j\sim\mathcal N(0,1)`,
    :math:`v_j\sim\mathcal N(0, I_C)`, in :math:`O(N^2)` per neuron.

    Args:
        theta: (N, N) analytic NTK :math:`\Theta` on ``x`` (``kernels.analytic_ntk``).
        x: (N, d) inputs.
        n_out: number of outputs :math:`C`.
        n_neurons: Monte Carlo sample size.
        seed: seed of the draws (NumPy).
        activation, W_std, b_std: as passed to :func:`p2pntk.kernels.mlp`.
        batch: neurons per vectorised batch.

    Returns:
        dict with ``v_tot``, ``v_off`` (the two constants), their standard errors
        ``se_tot``, ``se_off``, and ``norm2`` :math:`= \|\Theta\otimes I_C\|_F^2 = C\|\Theta\|_F^2`.

    Example:
        >>> import numpy as np
        >>> x = np.eye(3)
        >>> c = fluctuation_constants(np.eye(3), x, 2, n_neurons=1000)
        >>> sorted(c)
        ['norm2', 'se_off', 'se_tot', 'v_off', 'v_tot']
    """
    from scipy.special import erf

    x = np.asarray(x, dtype=np.float64)
    theta = np.asarray(theta, dtype=np.float64)
    N, d = x.shape
    C = int(n_out)
    if activation == "relu":
        phi, dphi = (lambda h: np.maximum(h, 0.0)), (lambda h: (h > 0).astype(np.float64))
    elif activation == "erf":
        phi, dphi = erf, (lambda h: 2.0 / np.sqrt(np.pi) * np.exp(-h * h))
    else:
        raise ValueError(f"unknown activation={activation!r}; allowed: relu, erf")
    rng = np.random.default_rng(seed)
    sigma1 = W_std ** 2 / d * x @ x.T + b_std ** 2
    tot, off = [], []
    for start in range(0, n_neurons, batch):
        B = min(batch, n_neurons - start)
        w = rng.standard_normal((d, B))
        beta = rng.standard_normal(B)
        v2 = rng.standard_normal((B, C)) ** 2
        h = W_std / np.sqrt(d) * x @ w + b_std * beta          # (N, B)
        a, b = phi(h).T, dphi(h).T                               # (B, N)
        Xd = W_std ** 2 * a[:, :, None] * a[:, None, :] + b_std ** 2 - theta   # X_j - Theta
        R = W_std ** 2 * b[:, :, None] * b[:, None, :] * sigma1
        vn2 = v2.sum(axis=1)
        RR = np.einsum("bik,bik->b", R, R)
        tot.append(C * np.einsum("bik,bik->b", Xd, Xd) + 2 * vn2 * np.einsum("bik,bik->b", Xd, R) + vn2 ** 2 * RR)
        off.append(RR * (vn2 ** 2 - (v2 ** 2).sum(axis=1)))
    tot, off = np.concatenate(tot), np.concatenate(off)
    return dict(v_tot=float(tot.mean()), v_off=float(off.mean()),
                se_tot=float(tot.std(ddof=1) / np.sqrt(len(tot))), se_off=float(off.std(ddof=1) / np.sqrt(len(off))),
                norm2=float(C * np.sum(theta ** 2)))
