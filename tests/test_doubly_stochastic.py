"""Doubly stochastic, not only symmetric, mixing (the paper's assumption).

W = a I + b P + c Pᵀ (P the cyclic shift, b ≠ c) and a non-circulant W with unequal
weights in the two directions of an edge: every algorithm trains as its closed form
(1e-9 relative, float64), the recursion mixes as x_q⁺ = Σ_l W_ql x_l (checked against
a hand-written step), the consensus bound holds with σ = ‖W − 11ᵀ/Q‖₂, the sufficient
bounds lie below the exact threshold, and the linearised DGD flow is non-increasing
in parameter-space distance to its fixed point.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg

import p2pntk
from p2pntk import algorithms, dynamics, geometry, graphs, stability, training

from test_dynamics import linearised_setup, rel

RTOL = 1e-9


def circulant(Q, a, b, c):
    """a I + b P + c Pᵀ, P the cyclic shift ((P x)_q = x_{q+1})."""
    P = np.roll(np.eye(Q), 1, axis=1)
    return a * np.eye(Q) + b * P + c * P.T


#: a non-circulant doubly stochastic W on the complete graph of 3 agents
W3 = np.array([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.3, 0.6]])


@pytest.fixture(scope="module")
def prob():
    p = linearised_setup()
    p["W"] = circulant(4, 0.4, 0.45, 0.15)
    return p


def test_non_symmetric_doubly_stochastic_w_is_accepted_and_bad_ones_rejected():
    for W in (circulant(6, 0.5, 0.35, 0.15), W3):
        assert not np.allclose(W, W.T)
        assert np.array_equal(graphs.check_mixing_matrix(W), W)
    with pytest.raises(ValueError, match="doubly stochastic"):
        graphs.check_mixing_matrix(np.array([[0.5, 0.5], [0.2, 0.8]]))
    with pytest.raises(ValueError, match=r"support of W must be an undirected graph .* W\[0,1\] = 0.5 but W\[1,0\] = 0"):
        graphs.check_mixing_matrix(circulant(3, 0.5, 0.5, 0.0))          # a directed cycle
    with pytest.raises(ValueError, match="positive diagonal"):
        graphs.check_mixing_matrix(np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"support of W is disconnected \(3 components"):
        graphs.check_mixing_matrix(np.eye(3))                            # W = I: rho = 1, no consensus
    assert graphs.mixing_schedule(np.eye(3)[None]).shape == (1, 3, 3)   # one iteration of a schedule may be


def test_consensus_bound_with_the_spectral_norm_and_the_asymptotic_rate():
    W = W3
    sigma, rho = graphs.consensus_rate(W), graphs.consensus_rate(W, asymptotic=True)
    assert rho < sigma < 1                                               # non-normal: strictly below
    x0 = np.random.default_rng(0).standard_normal(3)
    err = graphs.consensus_errors(W, x0, 40)
    k = np.arange(41)
    assert np.all(err <= sigma ** k * err[0] * (1 + 1e-12) + 1e-15)
    assert (err[25] / err[15]) ** (1 / 10) == pytest.approx(rho, rel=1e-6)   # the slowest mode (the other: 0.1)
    # symmetric W: both are max(|lambda_2|, |lambda_Q|)
    Ws = graphs.mixing_matrix(graphs.topology("ring", 6))
    lam = np.linalg.eigvalsh(Ws)
    assert graphs.consensus_rate(Ws) == pytest.approx(max(abs(lam[0]), lam[-2]), abs=1e-14)


def test_the_recursion_mixes_rows_one_dgd_step_by_hand(prob):
    """a_q⁺ = Σ_l W_ql a_l − η D_q (f0 + K a_q − y): the orientation of W is that of x⁺ = W x."""
    p, lr = prob, 0.2
    W = p["W"]
    r = dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, [1, 2])
    Q, (N, C) = len(W), p["f0"].shape
    Kmat = p["K"].reshape(N * C, N * C)
    D = np.stack([np.repeat((p["owner"] == q) / np.sum(p["owner"] == q), C) for q in range(Q)])
    a = np.zeros((Q, N * C))
    for _ in range(2):
        g = D * ((p["f0"].ravel() + a @ Kmat) - np.asarray(p["y"]).ravel())
        a = W @ a - lr * g
    assert rel(r.coef[-1].reshape(Q, -1), a) < 1e-12


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_every_method_trains_as_its_closed_form_with_a_non_symmetric_w(prob, algorithm):
    p = prob
    lr = 0.5 * stability.critical_step_size(algorithm, p["W"], p["K"], p["owner"], rtol=1e-3)
    steps = [0, 1, 2, 9, 30]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        brute = training.simulate(algorithm, p["lin"], p["params0"], p["W"], p["x"], p["y"], p["owner"], lr, steps,
                                  x_test=p["x_test"])
        pred = dynamics.linearized_outputs(algorithm, p["W"], p["K"], p["owner"], p["f0"], p["y"], lr, steps,
                                           K_test=p["K_test"], f0_test=p["f0_test"])
    assert rel(pred.train - p["f0"], brute.train - p["f0"]) <= RTOL
    assert rel(pred.test - p["f0_test"], brute.test - p["f0_test"]) <= RTOL
    mom = algorithm in algorithms.MOMENTUM_ALGORITHMS
    if mom:                                                               # and its momentum variant
        lr = 0.3 * stability.critical_step_size(algorithm, p["W"], p["K"], p["owner"], momentum=0.5, rtol=1e-3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            b = training.simulate(algorithm, p["lin"], p["params0"], p["W"], p["x"], p["y"], p["owner"], lr, steps,
                                  momentum=0.5)
            d = dynamics.linearized_outputs(algorithm, p["W"], p["K"], p["owner"], p["f0"], p["y"], lr, steps, momentum=0.5)
        assert rel(d.train - p["f0"], b.train - p["f0"]) <= RTOL


@pytest.mark.parametrize("algorithm", ["dgd", "atc", "cta", "centralized"])
def test_sufficient_bounds_lie_below_the_exact_threshold(prob, algorithm):
    p = prob
    bound = stability.step_size_bound(algorithm, p["W"], p["K"], p["owner"])
    crit = stability.critical_step_size(algorithm, p["W"], p["K"], p["owner"])
    assert bound <= crit * (1 + 1e-6)
    assert stability.spectral_radius(algorithm, p["W"], p["K"], p["owner"], crit * (1 - 1e-5)) < 1
    assert stability.spectral_radius(algorithm, p["W"], p["K"], p["owner"], crit * (1 + 1e-5)) > 1
    if algorithm == "dgd":                                                # 2 min_q W_qq / L, and the fallback
        L = stability.local_curvature(p["K"], p["owner"])
        assert bound == pytest.approx(2 * np.diag(p["W"]).min() / L, rel=1e-12)
        assert stability.dgd_critical_step_size(p["W"], p["K"], p["owner"]) == pytest.approx(crit, rel=1e-6)


def test_literature_bounds_for_symmetric_w_only_are_not_claimed(prob):
    p = prob
    for algorithm in ("extra", "nids"):
        with pytest.raises(ValueError, match=f"algorithm '{algorithm}' has no sufficient step-size bound for a "
                                             "non-symmetric W; compute the exact threshold with critical_step_size"):
            stability.step_size_bound(algorithm, p["W"], p["K"], p["owner"])


def test_the_natural_extension_of_the_symmetric_bound_can_exceed_the_exact_threshold():
    """(1 + min Re λ(W))/L is not a bound for a non-symmetric W. Homogeneous model: 3 agents
    holding one copy of the same point (K = 11ᵀ, every local curvature 1, M = W − ηI), random
    circulant W = aI + bP + cPᵀ: the exact threshold min_j (Re λ_j + (1 − Im² λ_j)^{1/2}) lies
    below 1 + min Re λ whenever b ≠ c; the proved 2a stays below it."""
    Q, owner, K = 3, np.arange(3), np.ones((3, 3))
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(30):
        a, u = rng.uniform(0.1, 0.6), rng.uniform(0.02, 0.98)
        W = circulant(Q, a, (1 - a) * u, (1 - a) * (1 - u))
        lam = np.linalg.eigvals(W)
        crit = stability.critical_step_size("dgd", W, K, owner, rtol=1e-7)
        assert crit == pytest.approx(np.min(lam.real + np.sqrt(np.maximum(1 - lam.imag ** 2, 0))), rel=1e-6)
        assert 2 * a <= crit * (1 + 1e-6)                                 # the proved bound, on every draw
        ratios.append((1 + lam.real.min()) / crit)
    assert min(ratios) >= 1 - 1e-6 and max(ratios) > 1.3                 # measured: up to about 1.6


def test_linearised_dgd_flow_is_non_increasing_in_parameter_distance(prob):
    """d/dt ½‖Θ − Θ*‖² = −eᵀ((I − (W + Wᵀ)/2) ⊗ I)e − η Σ_q ‖D_q^{1/2} J e_q‖² ≤ 0; and the flow's
    coefficients equal an independent ODE solution of ȧ = −((I − W) ⊗ I) a − η D (K a + f0 − y)."""
    p, lr = prob, 0.3
    W, Q, (N, C) = p["W"], 4, p["f0"].shape
    times = np.linspace(0, 60, 61)
    flow = dynamics.linearized_flow_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, times)
    Kmat = p["K"].reshape(N * C, N * C)
    D = np.stack([np.repeat((p["owner"] == q) / np.sum(p["owner"] == q), C) for q in range(Q)])
    resid0 = p["f0"].ravel() - np.asarray(p["y"]).ravel()
    rhs = lambda t, a: (-(a.reshape(Q, -1) - W @ a.reshape(Q, -1)) - lr * D * (a.reshape(Q, -1) @ Kmat + resid0)).ravel()
    ode = scipy.integrate.solve_ivp(rhs, (0, 60), np.zeros(Q * N * C), t_eval=times, rtol=1e-11, atol=1e-13)
    out = p["f0"] + np.einsum("tqj,ij->tqi", ode.y.T.reshape(len(times), Q, -1), Kmat).reshape(len(times), Q, N, C)
    assert rel(flow.train - p["f0"], out - p["f0"]) < 1e-7
    long = dynamics.linearized_flow_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, [1e4])
    star = long.coef[-1]
    total = np.array([np.linalg.norm(geometry.row_space_norms(p["K"], c - star)) for c in flow.coef])
    assert np.all(np.diff(total) <= 1e-12 * total[0])
    assert total[-1] < 0.9 * total[0]


def test_sharded_training_with_a_non_symmetric_w_equals_one_device(prob):
    """Neighbour exchange (ppermute) over 2 host devices mixes with W, not Wᵀ."""
    code = r"""
import json, sys, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from p2pntk import kernels, training
P = np.roll(np.eye(4), 1, axis=1); W = 0.4 * np.eye(4) + 0.45 * P + 0.15 * P.T
x = np.random.default_rng(0).standard_normal((8, 3)); y = np.random.default_rng(1).standard_normal((8, 2))
owner = np.repeat(np.arange(4), 2)
init_fn, apply_fn, _ = kernels.mlp(16, n_out=2)
_, params0 = init_fn(jax.random.PRNGKey(0), x.shape)
one = training.simulate("dgd", apply_fn, params0, W, x, y, owner, 0.2, [0, 5, 20])
two = training.simulate("dgd", apply_fn, params0, W, x, y, owner, 0.2, [0, 5, 20], devices=2, mixing="ppermute")
print(json.dumps(float(np.abs(one.train - two.train).max())))
"""
    src = os.path.dirname(os.path.dirname(os.path.abspath(p2pntk.__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=src, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-12


@pytest.mark.parametrize("W", [5.0, [0.5, 0.5], np.zeros((0, 3, 3)), np.ones((1, 1, 2, 2))])
def test_a_mixing_argument_of_the_wrong_rank_names_the_allowed_forms(W):
    with pytest.raises(ValueError, match=r"W must be a \(Q, Q\) matrix, a \(T, Q, Q\) schedule with T >= 1 or a "
                                         r"callable k -> W\(k\), got shape"):
        graphs.mixing_schedule(W)
