"""Stability theorem, exact threshold and the DGD fixed point, on the linearised model."""
import warnings

import jax
import numpy as np
import pytest

from p2pntk import algorithms, checks, dynamics, graphs, kernels, stability, training


@pytest.fixture(scope="module")
def prob():
    owner = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4])
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    x = jax.random.normal(k1, (len(owner), 4))
    y = jax.random.normal(k2, (len(owner), 2))
    init_fn, apply_fn, _ = kernels.mlp(128, depth=1, n_out=2)
    _, params0 = init_fn(k3, x.shape)
    K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    f0 = np.asarray(apply_fn(params0, x))
    return dict(owner=owner, x=x, y=np.asarray(y), K=K, f0=f0, apply_fn=apply_fn, params0=params0)


@pytest.mark.parametrize("topology", ["ring", "star", "complete", "path"])
def test_dgd_bound_and_exact_threshold(prob, topology):
    p = prob
    W = graphs.mixing_matrix(graphs.topology(topology, 5))
    bound = stability.dgd_step_size_bound(W, p["K"], p["owner"])
    crit = stability.dgd_critical_step_size(W, p["K"], p["owner"])
    assert bound <= crit * (1 + 1e-12)  # the bound is sufficient
    assert stability.spectral_radius("dgd", W, p["K"], p["owner"], 0.95 * bound) < 1
    assert stability.spectral_radius("dgd", W, p["K"], p["owner"], crit * (1 - 1e-7)) < 1
    assert stability.spectral_radius("dgd", W, p["K"], p["owner"], crit * (1 + 1e-7)) > 1
    # the iterates: bounded at 0.95x the bound, divergent at 1.05x the exact threshold
    steps = [0, 200, 400]
    ok = dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], 0.95 * bound, steps)
    _, fixed = stability.dgd_fixed_point(W, p["K"], p["owner"], p["f0"], p["y"], 0.95 * bound)
    dist = [np.linalg.norm(t - fixed) for t in ok.train]
    assert dist[2] < dist[1] < dist[0]  # contracting towards the fixed point
    with pytest.warns(RuntimeWarning, match="exceeds the sufficient stable step size .* predicted divergence"):
        bad = dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], 1.05 * crit, steps)
    rho = stability.spectral_radius("dgd", W, p["K"], p["owner"], 1.05 * crit)
    growth = np.linalg.norm(bad.coef[-1]) / np.linalg.norm(bad.coef[-2])
    assert growth == pytest.approx(rho ** 200, rel=0.05)


def test_atc_cta_share_spectrum_and_bound(prob):
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    for lr_factor in (0.5, 0.99):
        lr = lr_factor * stability.step_size_bound("atc", W, p["K"], p["owner"])
        ra = stability.spectral_radius("atc", W, p["K"], p["owner"], lr)
        rc = stability.spectral_radius("cta", W, p["K"], p["owner"], lr)
        assert ra == pytest.approx(rc, rel=1e-9) and ra < 1
    ev_a = np.sort_complex(np.linalg.eigvals(stability.iteration_matrix("atc", W, p["K"], p["owner"], 0.3)))
    ev_c = np.sort_complex(np.linalg.eigvals(stability.iteration_matrix("cta", W, p["K"], p["owner"], 0.3)))
    np.testing.assert_allclose(ev_a, ev_c, atol=1e-10)


def _flat(tree, Q):
    return np.concatenate([np.asarray(v).reshape(Q, -1) for v in jax.tree.leaves(tree)], axis=1)


def test_dgd_fixed_point_with_positive_definite_kernel_is_the_centralised_interpolator(prob):
    """K > 0 (wide network, distinct inputs): the fixed point is consensus on the interpolator f = y."""
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    lr = 0.5 * stability.dgd_step_size_bound(W, p["K"], p["owner"])
    coef, train = stability.dgd_fixed_point(W, p["K"], p["owner"], p["f0"], p["y"], lr)
    np.testing.assert_allclose(train, np.broadcast_to(p["y"], train.shape), atol=1e-8)
    rho = stability.spectral_radius("dgd", W, p["K"], p["owner"], lr)
    k = int(np.ceil(np.log(1e-13) / np.log(rho)))
    long = dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, [k])
    np.testing.assert_allclose(long.train[0], train, atol=1e-9)
    theta = _flat(training.parameters(p["apply_fn"], p["params0"], p["x"], coef), 5)
    assert np.abs(theta - theta.mean(axis=0)).max() < 1e-9 * np.abs(theta).max()


def test_dgd_fixed_point_with_conflicting_data_disagrees_within_bound():
    """Agents holding the same inputs with different targets: K is singular, no common
    interpolator exists, and the fixed point keeps a disagreement
    ||Theta_perp|| <= lr ||g(Theta*)|| / (1 - lambda_2(W)) with sum_q g_q(Theta*) = 0."""
    Q = 4
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(7), 3)
    x_common = jax.random.normal(k1, (3, 4))
    x = np.concatenate([x_common] * Q)                 # every agent holds the same 3 inputs
    owner = np.repeat(np.arange(Q), 3)
    y = np.asarray(jax.random.normal(k2, (3 * Q, 1)))  # ... with its own targets
    init_fn, apply_fn, _ = kernels.mlp(64, n_out=1)
    _, params0 = init_fn(k3, x.shape)
    K = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    f0 = np.asarray(apply_fn(params0, x))
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    lam2 = np.sort(np.linalg.eigvalsh(W))[-2]
    prev = 0.0
    for factor in (0.1, 0.3, 0.9):
        lr = factor * stability.dgd_step_size_bound(W, K, owner)
        coef, train = stability.dgd_fixed_point(W, K, owner, f0, y, lr)
        theta = _flat(training.parameters(apply_fn, params0, x, coef), Q)
        perp = np.linalg.norm(theta - theta.mean(axis=0))
        resid = train - y[None]
        mask = checks.agent_weights(owner, Q)
        g = _flat(training.parameters(apply_fn, params0, x, mask[:, :, None] * resid), Q) - _flat(params0, 1)
        np.testing.assert_allclose(g.sum(axis=0), 0, atol=1e-10 * np.abs(g).max())
        assert 0 < perp <= lr * np.linalg.norm(g) / (1 - lam2) * (1 + 1e-9)
        assert perp > prev  # grows with the step size
        prev = perp


def test_bad_input_messages(prob):
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    with pytest.raises(ValueError, match="allowed: dgd, atc, cta, centralized"):
        dynamics.linearized_outputs("gossip", W, p["K"], p["owner"], p["f0"], p["y"], 0.1, [1])
    with pytest.raises(ValueError, match="doubly stochastic"):
        dynamics.linearized_outputs("dgd", W * 1.1, p["K"], p["owner"], p["f0"], p["y"], 0.1, [1])
    with pytest.raises(ValueError, match="K must have shape"):
        dynamics.linearized_outputs("dgd", W, p["K"][:3], p["owner"], p["f0"], p["y"], 0.1, [1])
    with pytest.raises(ValueError, match="agents \\[4\\] have none"):
        dynamics.linearized_outputs("dgd", W, p["K"], np.minimum(p["owner"], 3), p["f0"], p["y"], 0.1, [1])
    with pytest.raises(ValueError, match="steps must be sorted"):
        dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], 0.1, [5, 1])
    y = p["y"].copy(); y[0, 0] = np.nan
    with pytest.raises(ValueError, match="y contains NaN"):
        dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], y, 0.1, [1])
    with pytest.raises(ValueError, match="y contains NaN"):
        training.simulate("dgd", p["apply_fn"], p["params0"], W, p["x"], y, p["owner"], 0.1, [1])


def test_actual_training_stops_with_clear_message_when_diverging(prob):
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    crit = stability.dgd_critical_step_size(W, p["K"], p["owner"])
    with pytest.raises(FloatingPointError, match="diverged.*lr="):
        training.simulate("dgd", p["apply_fn"], p["params0"], W, p["x"], p["y"], p["owner"], 20 * crit, [2000])


@pytest.mark.parametrize("algorithm", ["dgd", "centralized", "gradient_tracking", "extra", "aug_dgm"])
def test_iteration_size_is_the_size_of_the_iteration_matrix(prob, algorithm):
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    system = stability._system(W, prob["K"], prob["owner"])
    for alg in (algorithm, "dgd+momentum") if algorithm == "dgd" else (algorithm,):
        a = algorithms.get(*((alg.split("+")[0], 0.5) if "+" in alg else (alg,)))
        assert stability.iteration_size(a, system) == len(stability.affine_map(a, system.W, system, 0.1).M)


def test_warning_beyond_the_sufficient_bound_says_so_and_skips_large_eigenproblems(prob, monkeypatch):
    """Above the sufficient bound but below the critical step: 'still convergent'; with the
    iteration matrix larger than RADIUS_SIZE the radius is not computed (and the warning says so)."""
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 5))
    bound = stability.step_size_bound("dgd", W, p["K"], p["owner"])
    crit = stability.critical_step_size("dgd", W, p["K"], p["owner"])
    assert bound < crit
    lr = 0.5 * (bound + crit)
    with pytest.warns(RuntimeWarning, match="sufficient stable step size .* still convergent"):
        dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, [1])
    monkeypatch.setattr(stability, "RADIUS_SIZE", 10)
    monkeypatch.setattr(stability, "_radius", lambda *a: pytest.fail("radius computed for a large system"))
    with pytest.warns(RuntimeWarning, match=r"sufficient, not necessary: stability.spectral_radius decides \(an "
                                            r"eigenvalue problem of size \d+, not computed here\)"):
        dynamics.linearized_outputs("dgd", W, p["K"], p["owner"], p["f0"], p["y"], lr, [1])
