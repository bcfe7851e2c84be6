"""The methods practitioners run, predicted as exactly as DGD.

Every algorithm of ``algorithms.ALGORITHMS`` (and the momentum variants), with fixed
mixing, links that fail, local steps and minibatches: the coefficient recursion equals
brute-force training of the linearised networks, realisation by realisation, to 1e-9
relative (float64; measured: about 1e-14, summation order only). Stability: the critical
step size from the iteration matrix, and the sufficient bounds below it.
"""
import warnings

import numpy as np
import pytest

from p2pntk import algorithms, dynamics, graphs, stability, training

from test_dynamics import linearised_setup, rel

RTOL = 1e-9
STEPS = [0, 1, 2, 9, 40]


@pytest.fixture(scope="module")
def prob():
    p = linearised_setup()
    p["W"] = graphs.mixing_matrix(graphs.topology("ring", 4))
    p["crit"] = {a: stability.critical_step_size(a, p["W"], p["K"], p["owner"]) for a in algorithms.ALGORITHMS}
    return p


def both(p, algorithm, lr, W=None, steps=STEPS, **kw):
    """(brute-force training of the linearised networks, closed form) of one configuration."""
    W = p["W"] if W is None else W
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        brute = training.simulate(algorithm, p["lin"], p["params0"], W, p["x"], p["y"], p["owner"], lr, steps,
                                  x_test=p["x_test"], **kw)
        pred = dynamics.linearized_outputs(algorithm, W, p["K"], p["owner"], p["f0"], p["y"], lr, steps,
                                           K_test=p["K_test"], f0_test=p["f0_test"], **kw)
    return brute, pred


def assert_exact(p, brute, pred):
    assert rel(pred.train - p["f0"], brute.train - p["f0"]) <= RTOL
    assert rel(pred.test - p["f0_test"], brute.test - p["f0_test"]) <= RTOL


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_every_method_trains_as_its_closed_form(prob, algorithm):
    brute, pred = both(prob, algorithm, 0.5 * prob["crit"][algorithm])
    assert_exact(prob, brute, pred)


@pytest.mark.parametrize("algorithm", algorithms.MOMENTUM_ALGORITHMS)
def test_momentum_trains_as_its_closed_form_and_changes_the_run(prob, algorithm):
    lr = 0.3 * stability.critical_step_size(algorithm, prob["W"], prob["K"], prob["owner"], momentum=0.5)
    brute, pred = both(prob, algorithm, lr, momentum=0.5)
    assert_exact(prob, brute, pred)
    plain = dynamics.linearized_outputs(algorithm, prob["W"], prob["K"], prob["owner"], prob["f0"], prob["y"], lr, STEPS)
    assert rel(plain.train[-1] - prob["f0"], pred.train[-1] - prob["f0"]) > 1e-3


def test_momentum_with_beta_zero_is_the_method_itself():
    assert algorithms.get("dgd", momentum=0) is algorithms.get("dgd")
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 1"):
        algorithms.get("dgd", momentum=1)
    with pytest.raises(ValueError, match="momentum=0.5 is defined for dgd, atc, cta, centralized, not for algorithm='extra'"):
        algorithms.get("extra", momentum=0.5)


@pytest.mark.parametrize("algorithm", ["dgd", "extra", "exact_diffusion", "nids", "gradient_tracking", "next", "aug_dgm"])
def test_link_failures_local_steps_and_minibatches_are_predicted_exactly(prob, algorithm):
    lr = 0.3 * prob["crit"][algorithm]
    for W in (graphs.link_failures(prob["W"], 0.3, seed=2), graphs.local_steps(prob["W"], 3)):
        assert_exact(prob, *both(prob, algorithm, lr, W=W))
    batches = training.minibatches(prob["owner"], 2, seed=1)
    brute, pred = both(prob, algorithm, lr, batches=batches)
    assert_exact(prob, brute, pred)
    full = dynamics.linearized_outputs(algorithm, prob["W"], prob["K"], prob["owner"], prob["f0"], prob["y"], lr, STEPS)
    assert rel(full.train[-1] - prob["f0"], pred.train[-1] - prob["f0"]) > 1e-3      # the batches matter


def test_link_failures_are_doubly_stochastic_with_the_stated_mean():
    W = graphs.mixing_matrix(graphs.topology("erdos_renyi", 8, seed=1))
    Wk = graphs.link_failures(W, 0.4, seed=5)
    draws = np.stack([Wk(k) for k in range(4000)])
    assert np.allclose(draws.sum(axis=1), 1) and np.allclose(draws.sum(axis=2), 1) and (draws >= 0).all()
    assert np.allclose(draws, draws.transpose(0, 2, 1))
    np.testing.assert_array_equal(Wk(17), Wk(17))                       # one realisation per k
    assert np.allclose(Wk.expected, np.eye(8) - 0.6 * (np.eye(8) - W))
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert (np.abs(draws.mean(axis=0) - Wk.expected) <= 5 * se + 1e-12).all()
    assert np.array_equal(graphs.link_failures(W, 0.0)(3), W)


def test_exact_methods_conserve_and_the_radius_excludes_their_unit_eigenvalues(prob):
    """Gradient tracking: M has the eigenvalue 1 (r times) at every step size, from the
    conserved sum of trackers minus gradients; the restricted radius is below 1 below the
    critical step, and the iterates converge to the centralised interpolator."""
    for lr in (0.2, 0.5, 0.9):
        M = stability.iteration_matrix("gradient_tracking", prob["W"], prob["K"], prob["owner"], lr * prob["crit"]["gradient_tracking"])
        ones = np.sum(np.abs(np.linalg.eigvals(M) - 1) < 1e-9)
        assert ones == np.linalg.matrix_rank(prob["K"].reshape(42, 42))
        assert stability.spectral_radius("gradient_tracking", prob["W"], prob["K"], prob["owner"],
                                         lr * prob["crit"]["gradient_tracking"]) < 1


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_critical_step_is_where_the_radius_reaches_one_and_bounds_lie_below(prob, algorithm):
    crit = prob["crit"][algorithm]
    rho = lambda lr: stability.spectral_radius(algorithm, prob["W"], prob["K"], prob["owner"], lr)
    assert rho(crit * (1 - 1e-5)) < 1 <= rho(crit * (1 + 1e-5))
    if algorithms.get(algorithm).bound is not None:
        # within critical_step_size's rtol (1e-7): for centralised GD the bound 2/lambda_max is the threshold
        assert stability.step_size_bound(algorithm, prob["W"], prob["K"], prob["owner"]) <= crit * (1 + 1e-7)
    if algorithm == "dgd":
        assert abs(crit - stability.dgd_critical_step_size(prob["W"], prob["K"], prob["owner"])) <= 1e-6 * crit
