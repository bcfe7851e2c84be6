"""The modes of the iteration matrix (p2pntk.modes): the mode sum against the recursion, the
loss as a double sum, the asymptotic rates, the slow-mode bracket of DGD and the upper bound
on DGD's exact threshold.

Tolerances: the mode sum and the double sum are exact, so they must equal
``dynamics.linearized_outputs`` to float64 round-off (measured below 3e-12 relative with
``eig``, whose eigenvectors are not orthogonal for ATC/CTA; 1e-10 asserted). The theorems are
inequalities, checked with a margin of round-off (1e-10 relative)."""
import warnings

import numpy as np
import pytest

from p2pntk import dynamics, graphs, metrics, modes, stability


def _instance(seed, Q=4, n=3, C=2, resolved=False, n_test=5):
    """A random nonsingular kernel on Q*n points (features of a random two-layer network), data, owner."""
    rng = np.random.default_rng(seed)
    N = Q * n
    X = rng.standard_normal((N + n_test, 6))
    H = np.maximum(X @ rng.standard_normal((6, 40)), 0) / np.sqrt(40)
    Kall = H @ H.T + X @ X.T / 6
    K, Kt = Kall[:N, :N], Kall[N:, :N]
    if resolved:     # an output-resolved kernel: K (x) I_C plus a small PSD output coupling
        A = rng.standard_normal((C, C)) * 0.1
        K = np.einsum("ij,cd->icjd", K, np.eye(C) + A @ A.T)
        Kt = np.einsum("ij,cd->icjd", Kt, np.eye(C) + A @ A.T)
    owner = rng.permutation(np.arange(N) % Q)
    data = dict(f0=0.1 * rng.standard_normal((N, C)), y=rng.standard_normal((N, C)),
                f0_test=0.1 * rng.standard_normal((n_test, C)), y_test=rng.standard_normal((n_test, C)))
    return K, Kt, owner, data


def _nonsymmetric(Q, a=0.4, b=0.45):
    P = np.roll(np.eye(Q), 1, axis=1)
    return a * np.eye(Q) + b * P + (1 - a - b) * P.T


@pytest.mark.parametrize("resolved", [False, True], ids=["shared", "resolved"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric_W", "nonsymmetric_W"])
@pytest.mark.parametrize("alg", ["dgd", "atc", "cta", "centralized"])
def test_mode_sum_and_double_sum_equal_the_recursion(alg, symmetric, resolved):
    K, Kt, owner, d = _instance(1, resolved=resolved)
    Q = owner.max() + 1
    W = graphs.mixing_matrix(graphs.topology("ring", Q)) if symmetric else _nonsymmetric(Q)
    lr = 0.7 * stability.step_size_bound("atc" if alg in ("atc", "cta") else alg, W, K, owner)
    steps = [0, 1, 2, 7, 30, 150]
    m = modes.mode_expansion(alg, W, K, owner, d["f0"], d["y"], lr, K_test=Kt, f0_test=d["f0_test"],
                             y_test=d["y_test"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = dynamics.linearized_outputs(alg, W, K, owner, d["f0"], d["y"], lr, steps, K_test=Kt, f0_test=d["f0_test"])
    assert m.symmetric == (alg == "centralized" or (alg == "dgd" and symmetric))     # eigh exactly where M = M^T
    rel = metrics.relative_error
    assert rel(m.outputs(steps), r.train) < 1e-10
    assert rel(m.outputs(steps, "test"), r.test) < 1e-10
    assert rel(m.losses(steps), metrics.mse(r.train, d["y"])) < 1e-10                 # all N training points
    assert rel(m.losses(steps, "local"), metrics.agent_losses(r.train, d["y"], owner)) < 1e-10   # own points
    assert rel(m.losses(steps, "test"), metrics.mse(r.test, d["y_test"])) < 1e-10
    if m.symmetric:                                                                   # orthonormal modes
        assert np.allclose(m.V.T @ m.V, np.eye(len(m.mu)), atol=1e-12)


def test_rates_squared_on_the_training_loss_when_the_fixed_point_interpolates():
    """K nonsingular: the fixed point fits every target (R* = 0), so the training loss gap has no
    linear term and decays at rho^2; the test loss gap at rho. A fit of the recursion's losses
    agrees to 1e-6 in the decay constant once the slowest mode dominates (a well-separated
    smallest kernel eigenvalue, by construction); a rate rho for the training loss would be off by 50 %."""
    rng = np.random.default_rng(3)
    Q, n = 3, 4
    N = Q * n
    U, _ = np.linalg.qr(rng.standard_normal((N + 4, N + 4)))
    spec = np.r_[0.05, np.linspace(1, 5, N + 3)]                   # one isolated small eigenvalue
    Kall = (U * spec) @ U.T
    K, Kt = Kall[:N, :N], Kall[N:, :N]
    owner = np.arange(N) % Q
    W = graphs.mixing_matrix(graphs.topology("complete", Q))
    y, yt = rng.standard_normal((N, 1)), rng.standard_normal((4, 1))
    f0, f0t = np.zeros((N, 1)), np.zeros((4, 1))
    lr = 0.5 * stability.dgd_critical_step_size(W, K, owner)
    m = modes.mode_expansion("dgd", W, K, owner, f0, y, lr, K_test=Kt, f0_test=f0t, y_test=yt)
    rho = m.rate()
    assert rho == pytest.approx(stability.spectral_radius("dgd", W, K, owner, lr), rel=1e-12)
    assert m.loss_terms("train")[0].max() < 1e-20                     # L* = 0: interpolation
    assert m.loss_rate("train") == pytest.approx(rho ** 2, rel=1e-12)
    assert m.loss_rate("test") == pytest.approx(rho, rel=1e-12)
    # windows where the slowest mode dominates and the gap is far above round-off: training loss
    # (mu_1^2k) from k = 600 (the next mode is down by (mu_2/mu_1)^600 < 1e-13); test loss (linear
    # term mu_1^k) from k = 1200, where its quadratic term is down by mu_1^1200 ~ 1e-6 and the gap
    # (~1e-6 of the loss) still far above the recursion's round-off (measured: 1e-6 of the fit by k = 1600)
    k_tr, k_te = np.arange(600, 801, 20), np.arange(1200, 1401, 20)
    r = dynamics.linearized_outputs("dgd", W, K, owner, f0, y, lr, np.r_[k_tr, k_te], K_test=Kt, f0_test=f0t)
    L_star_test = m.loss_terms("test")[0]
    fit_train = modes.tail_rate(k_tr, metrics.mse(r.train[:len(k_tr)], y).mean(1))
    fit_test = modes.tail_rate(k_te, np.abs(metrics.mse(r.test[len(k_tr):], yt) - L_star_test).mean(1))
    assert (1 - fit_train) / (1 - rho ** 2) == pytest.approx(1, abs=1e-6)
    assert (1 - fit_test) / (1 - rho) == pytest.approx(1, abs=1e-6)


def test_one_step_methods_only():
    K, _, owner, d = _instance(0)
    W = graphs.mixing_matrix(graphs.topology("ring", 4))
    for alg in ("gradient_tracking", "extra"):
        with pytest.raises(ValueError, match="one-step methods"):
            modes.mode_expansion(alg, W, K, owner, d["f0"], d["y"], 0.1)


def _random_case(rng, t):
    Q = int(rng.integers(3, 9))
    N = Q * int(rng.integers(1, 5))
    X = rng.standard_normal((N, int(rng.integers(3, 30)))) * rng.uniform(0.2, 3, size=(N, 1))
    K = X @ X.T + 0.01 * np.eye(N)
    owner = rng.permutation(np.arange(N) % Q)
    topo = ("ring", "star", "complete", "erdos_renyi", "path", "geometric")[t % 6]
    W = graphs.mixing_matrix(graphs.topology(topo, Q, seed=t))
    return W, K, owner


def test_slow_mode_bracket_on_random_instances():
    """thm-slow-modes: max(1 - eta gamma_1, lambda_2 - eta gamma(G2)) <= mu_max(M) <= the 2x2 bound,
    on random graphs, lazy mixing and step sizes; the slowest mode is a consensus mode when the
    kernel dominates."""
    rng = np.random.default_rng(7)
    for t in range(15):
        W, K, owner = _random_case(rng, t)
        alpha = (1.0, 0.3, 0.03)[t % 3]                          # lazy mixing moves lambda_2 towards 1
        Wa = (1 - alpha) * np.eye(len(W)) + alpha * W
        es = stability.dgd_critical_step_size(Wa, K, owner)
        for frac in (0.05, 0.5, 0.95):
            s = modes.dgd_slow_modes(Wa, K, owner, frac * es)
            assert max(s.kernel, s.graph) <= s.mu_max * (1 + 1e-10), (t, frac, s)
            assert s.mu_max <= s.upper * (1 + 1e-10), (t, frac, s)
            if s.kernel - s.lambda_2 > 10 * frac * es * s.h:      # kernel regime, coupling small: a consensus mode
                assert s.consensus_fraction > 0.9, (t, frac, s)


def test_slow_mode_is_exactly_the_kernel_mode_for_homogeneous_agents():
    """Every agent holds copies of the same points: all G_q equal, h = 0, and
    M = W (x) I - eta I (x) G-bar, whose largest eigenvalue is exactly 1 - eta gamma_1."""
    rng = np.random.default_rng(2)
    Q, n = 5, 3
    X = rng.standard_normal((n, 8))
    K = np.tile(X @ X.T, (Q, Q))                                  # Q copies of n points
    owner = np.repeat(np.arange(Q), n)
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    lr = 0.5 * stability.dgd_critical_step_size(W, K, owner)
    s = modes.dgd_slow_modes(W, K, owner, lr)
    assert s.h < 1e-12
    assert s.mu_max == pytest.approx(s.kernel, abs=1e-12) and s.upper == pytest.approx(s.kernel, abs=1e-12)
    assert s.consensus_fraction == pytest.approx(1, abs=1e-10) and s.binding == "kernel"
    named = modes.name_modes(modes.mode_expansion("dgd", W, K, owner, np.zeros((Q * n, 1)), np.ones((Q * n, 1)), lr), 6)
    assert np.allclose(named["named"], named["mu"], atol=1e-12)      # mu = lambda_j - eta gamma_i exactly
    assert named["consensus"][0] == pytest.approx(1, abs=1e-10)


def test_dgd_threshold_below_the_diffusion_bound_on_random_instances():
    """thm-dgd-below-atc: eta*_DGD <= min_q (1 + W_qq)/lambda_q < 2/lambda_loc (symmetric W), on random
    instances. Measured on these 30 draws: eta*/bound in [0.84, 0.97], eta*/(2/lambda_loc) in
    [0.54, 0.87]; asserted eta*/bound > 0.7, which the diffusion bound 2/lambda_loc in its place fails."""
    rng = np.random.default_rng(11)
    ratios = []
    for t in range(30):
        W, K, owner = _random_case(rng, t)
        es = stability.dgd_critical_step_size(W, K, owner)
        ub = modes.dgd_threshold_upper_bound(W, K, owner)
        L = stability.local_curvature(K, owner)
        assert es <= ub * (1 + 1e-10) and ub < 2 / L, t
        assert ub == pytest.approx(modes.dgd_threshold_upper_bound(W, K, owner, per_agent=True).min())
        ratios.append((es / ub, es * L / 2))
    ratios = np.array(ratios)
    print("eta*/bound in", ratios[:, 0].min(), ratios[:, 0].max(), "; eta*/(2/lambda_loc) in", ratios[:, 1].min(), ratios[:, 1].max())
    assert ratios[:, 0].min() > 0.7 and ratios[:, 1].max() < 1
    with pytest.raises(ValueError, match="symmetric"):
        modes.dgd_threshold_upper_bound(_nonsymmetric(4), np.eye(4), np.arange(4))


def test_local_curvatures_match_stability():
    K, _, owner, _ = _instance(5, resolved=True)
    assert modes.local_curvatures(K, owner).max() == pytest.approx(stability.local_curvature(K, owner), rel=1e-12)


def test_predicted_rate_on_an_actual_network():
    """A trained width-256 network (digits, 3 agents on a ring, DGD at eta*/2): the log-linear fit of
    its training loss over iterations 600-1200 against the predicted asymptotic rate rho^2.
    Tolerance on the decay constant 1 - rate: the window blend (the same fit of the predicted
    double sum against rho^2, measured 0.5 %) plus 3 % for the finite width (measured 0.8 %: the
    actual fit against the predicted fit). A wrong rate (rho for rho^2) is off by about 50 %."""
    from p2pntk import problems, training

    p = problems.digits_problem(12, 10, 3, 256, seed=0)
    W = graphs.mixing_matrix(graphs.topology("ring", 3))
    lr = 0.5 * stability.dgd_critical_step_size(W, p.K, p.owner)
    m = modes.mode_expansion("dgd", W, p.K, p.owner, p.f0, p.y, lr)
    k = np.arange(0, 1201, 20)
    tail = k >= 600
    act = training.simulate("dgd", p.apply_fn, p.params0, W, p.x, p.y, p.owner, lr, k)
    rho2 = m.loss_rate("train")
    assert rho2 == pytest.approx(m.rate() ** 2, rel=1e-12)
    fit_act = modes.tail_rate(k[tail], metrics.mse(act.train, p.y).mean(1)[tail])
    fit_pred = modes.tail_rate(k[tail], m.losses(k).mean(1)[tail])
    blend = abs((1 - fit_pred) / (1 - rho2) - 1)
    assert abs((1 - fit_act) / (1 - rho2) - 1) <= blend + 0.03
    assert abs((1 - fit_act) / (1 - fit_pred) - 1) <= 0.03
