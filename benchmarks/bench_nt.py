"""Q = 1: our closed-form flow versus neural-tangents' ``predict.gradient_descent_mse``.

Same kernel (analytic NTK of the digits training points, shared by the C outputs),
same initial outputs, same times. neural-tangents minimises :math:`\\frac{1}{2NC}\\|f-y\\|^2`,
ours :math:`\\frac{1}{2N}\\|f-y\\|^2`, so its learning rate is ``lr * C`` for the same flow
(see :func:`p2pntk.kernels.gradient_descent_mse`). Both solve the flow by one symmetric
eigendecomposition; each timed call includes it (a fresh neural-tangents predictor per call).
Baseline: neural-tangents (JAX, float64); ours: :func:`p2pntk.dynamics.linearized_flow_outputs`.
"""
from __future__ import annotations

import numpy as np
from common import row, seconds

from p2pntk import dynamics, kernels, problems

FULL = dict(n_train=1024, n_test=512, repeat=5)
QUICK = dict(n_train=64, n_test=32, repeat=5)
TIMES = np.array([0.0, 1.0, 10.0, 100.0, 1000.0, 1e4])


def compare(n_train: int, n_test: int, repeat: int = 3, lr: float = 0.5):
    """Max abs difference of train and test outputs, and the two times (nt, ours)."""
    import jax

    p = problems.problem("digits", n_train, n_test, 1, 256, with_kernel=False)
    K = np.asarray(kernels.analytic_ntk(p.kernel_fn, p.x))
    Kt = np.asarray(kernels.analytic_ntk(p.kernel_fn, p.x_test, p.x))
    C = p.y.shape[1]

    def nt():
        predict = kernels.gradient_descent_mse(K, p.y, lr * C)
        return jax.tree.map(np.asarray, predict(TIMES, p.f0, p.f0_test, Kt))

    def ours():
        return dynamics.linearized_flow_outputs("dgd", np.eye(1), K, p.owner, p.f0, p.y, lr, TIMES,
                                                K_test=Kt, f0_test=p.f0_test)

    t_nt, (f_nt, ft_nt) = seconds(nt, repeat)
    t_ours, r = seconds(ours, repeat)
    diff = max(np.abs(r.train[:, 0] - f_nt).max(), np.abs(r.test[:, 0] - ft_nt).max())
    return diff, t_nt, t_ours, C


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    diff, t_nt, t_ours, C = compare(**cfg)
    return [row("nt", f"Q=1, N={cfg['n_train']}, N_test={cfg['n_test']}, C={C}, {len(TIMES)} times", t_nt, t_ours,
                f"gradient_descent_mse(lr*C) vs linearized_flow_outputs, best of {cfg['repeat']}; "
                f"max |diff| {diff:.2g} (must be <= 1e-8); target: ours no slower than 1.2x nt",
                target=1 / 1.2, max_abs_diff=diff, n_train=cfg["n_train"], n_test=cfg["n_test"])]
