"""Closed-form linearised dynamics versus brute-force training of the linearised network."""
import warnings

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import pytest

import scipy.linalg
import scipy.sparse

from p2pntk import algorithms, coefficients, dynamics, graphs, kernels, metrics, stability, training

# Tolerance: the recursion and the brute force differ only in summation order;
# after a few dozen iterations of a well-conditioned contraction, float64
# round-off stays below 1e-12 relative. The contract is 1e-8.
RTOL = 1e-8


def step(algorithm, W, K, owner, factor=0.5):
    """``factor`` times the algorithm's sufficient bound, or its critical step size if it has none."""
    if algorithms.get(algorithm).bound is not None:
        return factor * stability.step_size_bound(algorithm, W, K, owner)
    return factor * stability.critical_step_size(algorithm, W, K, owner, rtol=1e-3)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def setup(n_out=3, width=64, owner=(0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3), seed=0, activation="relu"):
    owner = np.array(owner)
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k1, (len(owner), 5))
    x_test = jax.random.normal(k2, (7, 5))
    y = jax.random.normal(k3, (len(owner), n_out))
    init_fn, apply_fn, kernel_fn = kernels.mlp(width, depth=2, n_out=n_out, activation=activation)
    _, params0 = init_fn(k4, x.shape)
    return dict(owner=owner, x=x, x_test=x_test, y=y, apply_fn=apply_fn, params0=params0, kernel_fn=kernel_fn)


def linearised_setup(**options):
    """:func:`setup` with the empirical kernels K, K_test, the initial outputs f0, f0_test and the
    linearised network ``lin`` of the initial point (the problem of the method tests)."""
    p = setup(**options)
    p["K"] = np.asarray(kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"]))
    p["K_test"] = np.asarray(kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x_test"], p["x"]))
    p["f0"], p["f0_test"] = np.asarray(p["apply_fn"](p["params0"], p["x"])), np.asarray(p["apply_fn"](p["params0"], p["x_test"]))
    p["lin"] = kernels.linearize(p["apply_fn"], p["params0"])
    return p


@pytest.fixture(scope="module")
def prob():
    return setup()


TOPOLOGIES = ["ring", "star", "erdos_renyi"]


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_closed_form_equals_brute_force_linearised(prob, algorithm, topology):
    p = prob
    Q = p["owner"].max() + 1
    W = graphs.mixing_matrix(graphs.topology(topology, Q, seed=1))
    K = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"])
    Kt = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x_test"], p["x"])
    f0, f0t = p["apply_fn"](p["params0"], p["x"]), p["apply_fn"](p["params0"], p["x_test"])
    lr = step(algorithm, W, K, p["owner"])
    steps = [0, 1, 7, 40]
    f_lin = kernels.linearize(p["apply_fn"], p["params0"])
    brute = training.simulate(algorithm, f_lin, p["params0"], W, p["x"], p["y"], p["owner"], lr, steps,
                              x_test=p["x_test"], record_params=True)
    pred = dynamics.linearized_outputs(algorithm, W, K, p["owner"], f0, p["y"], lr, steps, K_test=Kt, f0_test=f0t)
    assert pred.train.shape == brute.train.shape == (4, Q, 14, 3)
    assert pred.test.shape == brute.test.shape == (4, Q, 7, 3)
    assert rel(pred.train - f0, brute.train - f0) <= RTOL
    assert rel(pred.test - f0t, brute.test - f0t) <= RTOL
    theta = training.parameters(p["apply_fn"], p["params0"], p["x"], pred.coef[-1])
    flat = lambda t: np.concatenate([np.ravel(v) for v in jax.tree.leaves(t)])
    d_pred = flat(theta) - flat(jax.tree.map(lambda a: jnp.broadcast_to(a, (Q,) + a.shape), p["params0"]))
    d_true = flat(brute.params[-1]) - flat(jax.tree.map(lambda a: jnp.broadcast_to(a, (Q,) + a.shape), p["params0"]))
    assert rel(d_pred, d_true) <= RTOL


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
def test_shared_kernel_is_exact_for_one_output(algorithm):
    p = setup(n_out=1, owner=(0, 1, 1, 2, 2, 2, 2, 3, 3))
    W = graphs.mixing_matrix(graphs.topology("path", 4))
    K = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"], resolved=False)
    Kt = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x_test"], p["x"], resolved=False)
    f0, f0t = p["apply_fn"](p["params0"], p["x"]), p["apply_fn"](p["params0"], p["x_test"])
    lr = step(algorithm, W, K, p["owner"])
    f_lin = kernels.linearize(p["apply_fn"], p["params0"])
    brute = training.simulate(algorithm, f_lin, p["params0"], W, p["x"], p["y"], p["owner"], lr, [3, 30],
                              x_test=p["x_test"])
    pred = dynamics.linearized_outputs(algorithm, W, K, p["owner"], f0, p["y"], lr, [3, 30], K_test=Kt, f0_test=f0t)
    assert rel(pred.train - f0, brute.train - f0) <= RTOL
    assert rel(pred.test - f0t, brute.test - f0t) <= RTOL


def test_flow_with_one_agent_equals_neural_tangents():
    p = setup(owner=(0,) * 10)
    K = kernels.analytic_ntk(p["kernel_fn"], p["x"])
    Kt = kernels.analytic_ntk(p["kernel_fn"], p["x_test"], p["x"])
    f0, f0t = p["apply_fn"](p["params0"], p["x"]), p["apply_fn"](p["params0"], p["x_test"])
    lr, C, times = 0.7, 3, np.array([0.0, 0.5, 3.0, 40.0, 1e4])
    ours = dynamics.linearized_flow_outputs("dgd", np.eye(1), K, p["owner"], f0, p["y"], lr, times, K_test=Kt, f0_test=f0t)
    # neural-tangents: loss 1/(2NC)||f - y||^2, so its learning rate is lr * C for the same flow
    predict = kernels.gradient_descent_mse(K, p["y"], lr * C)
    for i, t in enumerate(times):
        ft, fte = predict(t, f0, f0t, Kt)
        if t == 0:
            np.testing.assert_array_equal(ours.train[i, 0], f0)
            continue
        assert rel(ours.train[i, 0] - f0, ft - f0) <= RTOL
        assert rel(ours.test[i, 0] - f0t, fte - f0t) <= RTOL


@pytest.mark.parametrize("algorithm", algorithms.PAPER_ALGORITHMS)
def test_lazy_discretisation_converges_to_dgd_flow(prob, algorithm):
    """With W_h = (1-h) I + h W and step h*lr, the iterates at k = t/h converge to the
    DGD flow at t with error O(h), for DGD, ATC and CTA alike (the W on the gradient
    of ATC/CTA tends to I); centralised GD converges to its own flow."""
    p = prob
    Q = 4
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    K = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"])
    f0 = p["apply_fn"](p["params0"], p["x"])
    lr = 0.3 * stability.dgd_step_size_bound(W, K, p["owner"])
    t = 6.0
    target = "centralized" if algorithm == "centralized" else "dgd"
    flow = dynamics.linearized_flow_outputs(target, W, K, p["owner"], f0, p["y"], lr, [t]).train[0]
    hs = (0.2, 0.1, 0.05)
    errs = []
    for h in hs:
        Wh = (1 - h) * np.eye(Q) + h * W
        disc = dynamics.linearized_outputs(algorithm, Wh, K, p["owner"], f0, p["y"], h * lr, [int(round(t / h))])
        errs.append(rel(disc.train[0] - f0, flow - f0))
    order = metrics.loglog_slope(hs, errs)
    assert 0.8 < order < 1.2, (errs, order)


def _formula(algorithm, W, G, lr):
    """The iteration matrices written out (stability module docstring), independent of the definitions."""
    Q, r = G.shape[:2]
    if algorithm == "centralized":
        return np.eye(r) - lr * G.mean(axis=0)
    Gb, Wt, I = scipy.linalg.block_diag(*G), np.kron(W, np.eye(r)), np.eye(Q * r)
    return {"dgd": Wt - lr * Gb, "atc": Wt @ (I - lr * Gb), "cta": (I - lr * Gb) @ Wt}[algorithm]


@pytest.mark.parametrize("algorithm", algorithms.PAPER_ALGORITHMS)
def test_iteration_matrix_from_the_definition_equals_the_formula_and_the_step(prob, algorithm):
    """M and c of stability.affine_map (the definition applied to a basis) equal the written-out
    matrices, and F^T of one coefficient step is M F^T a + c: the flow generator M - I is the
    algorithm's (forward Euler with unit step of the flow is one discrete step)."""
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 4))
    K = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"])
    f0 = p["apply_fn"](p["params0"], p["x"])
    sys = coefficients.CoefficientSystem([W], K, p["owner"], f0, p["y"])
    M, c, F, Finv, names, _ = stability.affine_map(algorithm, W, sys, 0.3)
    G = stability.local_blocks(sys)[0]
    assert names == ["x"]
    np.testing.assert_allclose(M, _formula(algorithm, W, G, 0.3), rtol=0, atol=1e-12 * np.abs(M).max())
    z = np.random.default_rng(0).standard_normal((4, F.shape[1], 1))
    if algorithm == "centralized":
        z = np.broadcast_to(z[:1], z.shape).copy()
    a = np.einsum("nr,qrm->qnm", Finv, z)
    new = algorithms.get(algorithm).step(sys.ops(0.3), {"x": a}, 0)["x"]
    want = (M @ z[0] + c) if algorithm == "centralized" else (M @ z.reshape(-1, 1) + c).reshape(z.shape)
    got = np.einsum("nr,qnm->qrm", F, new)
    np.testing.assert_allclose(got[0] if algorithm == "centralized" else got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("algorithm", algorithms.PAPER_ALGORITHMS)
def test_flow_equals_matrix_exponential_of_the_written_out_generator(prob, algorithm):
    """linearized_flow_outputs (eigen path for DGD and centralised, Van Loan for ATC/CTA) equals
    the exponential of the coefficient-space generator written out with Kronecker products."""
    p = prob
    W = graphs.mixing_matrix(graphs.topology("star", 4))
    K = np.asarray(kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"]))
    f0 = np.asarray(p["apply_fn"](p["params0"], p["x"]))
    lr = 0.4
    sys = coefficients.CoefficientSystem([W], K, p["owner"], f0, p["y"])
    Q, n = 4, sys.Kmat.shape[0]
    Kt, D = np.kron(np.eye(Q), sys.Kmat), np.diag(sys.d.reshape(-1))
    cvec, L, Wt = np.tile(sys.resid0, (Q, 1)), np.kron(np.eye(Q) - W, np.eye(n)), np.kron(W, np.eye(n))
    H, b = {"dgd": (L + lr * D @ Kt, lr * D @ cvec), "atc": (L + lr * Wt @ D @ Kt, lr * Wt @ D @ cvec),
            "cta": (L + lr * D @ Kt @ Wt, lr * D @ cvec),
            "centralized": (lr * np.kron(np.full((Q, Q), 1 / Q), np.eye(n)) @ D @ Kt,
                            lr * np.kron(np.full((Q, Q), 1 / Q), np.eye(n)) @ D @ cvec)}[algorithm]
    big = np.zeros((Q * n + 1, Q * n + 1))
    big[:Q * n, :Q * n], big[:Q * n, Q * n:] = -H, -b
    for t in (0.3, 5.0, 80.0):
        a = scipy.linalg.expm(t * big)[:Q * n, Q * n:].reshape(Q, -1, 1)
        ref = sys.record(a)[0]
        got = dynamics.linearized_flow_outputs(algorithm, W, K, p["owner"], f0, p["y"], lr, [t]).train[0]
        assert rel(got - f0, ref - f0) <= RTOL, t


def _dense_step(algorithm, sys, A, lr):
    """The former dense recursion: every agent's K a_q on all rows, dense mixing."""
    grad = lambda B: sys.d[:, :, None] * (sys.apply(sys.Kmat, B) + sys.resid0[None])
    mix = lambda B: (sys.W @ B.reshape(sys.Q, -1)).reshape(B.shape)
    if algorithm == "dgd":
        return mix(A) - lr * grad(A)
    if algorithm == "atc":
        return mix(A - lr * grad(A))
    if algorithm == "cta":
        return mix(A) - lr * grad(mix(A))
    return A - lr * grad(A).mean(axis=0, keepdims=True)


@pytest.mark.parametrize("algorithm", algorithms.PAPER_ALGORITHMS)
@pytest.mark.parametrize("resolved", [False, True])
@pytest.mark.parametrize("counts,topology,sparse", [((1, 5, 2, 7, 3, 4, 1, 6) * 4, "ring", True),  # unequal N_q, Q = 32
                                                    ((3,) * 12, "ring", False),       # equal N_q: batched path
                                                    ((2, 1, 4, 3), "complete", False)])
def test_row_blocked_recursion_equals_dense_formula(algorithm, resolved, counts, topology, sparse):
    """The row-blocked recursion (agent q's rows of K only, CSR mixing when W is sparse)
    equals the former dense formula (all rows for every agent, dense W) step by step."""
    rng = np.random.default_rng(0)
    Q, N, C = len(counts), sum(counts), 2
    owner = rng.permutation(np.repeat(np.arange(Q), counts))
    F = rng.standard_normal((N * C, N * C + 2))
    K = (F @ F.T / (N * C)).reshape(N, C, N, C) if resolved else (F[:N] @ F[:N].T / N)
    f0, y = rng.standard_normal((N, C)), rng.standard_normal((N, C))
    W = graphs.mixing_matrix(graphs.topology(topology, Q))
    sys = coefficients.CoefficientSystem([W], K, owner, f0, y)
    assert scipy.sparse.issparse(sys.mixers[0].ops[0]) == sparse
    A = rng.standard_normal((Q,) + sys.resid0.shape)
    if algorithm == "centralized":
        A = np.broadcast_to(A[:1], A.shape).copy()
    G = sys.grad(A)
    np.testing.assert_allclose(G, sys.d[:, :, None] * (sys.apply(sys.Kmat, A) + sys.resid0[None]), rtol=0, atol=1e-12)
    step = algorithms.get(algorithm).step
    for k in range(5):
        A_new = step(sys.ops(0.1), {"x": A.copy()}, k)["x"]
        np.testing.assert_allclose(A_new, _dense_step(algorithm, sys, A, 0.1), rtol=0, atol=1e-12)
        A = A_new


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHMS)
@pytest.mark.parametrize("resolved", [False, True])
@pytest.mark.parametrize("counts", [(1, 5, 2, 7, 3, 4, 1, 6) * 4,   # unequal N_q, Q = 32: per-agent blocks, CSR ring
                                    (3, 3, 3, 3)])                  # equal N_q: batched blocks, dense W
def test_sweep_equals_one_run_per_configuration(algorithm, resolved, counts):
    """linearized_sweep (all step sizes x topologies in one state) equals linearized_outputs
    cell by cell, with per-cell step sizes (one beyond the bound: one warning per such cell)."""
    rng = np.random.default_rng(1)
    Q, N, C = len(counts), sum(counts), 2
    owner = rng.permutation(np.repeat(np.arange(Q), counts))
    F = rng.standard_normal((N * C + 3 * C, N * C + 2))                      # rows: training, then test
    K = (F[:N * C] @ F[:N * C].T / (N * C)).reshape(N, C, N, C) if resolved else F[:N] @ F[:N].T / N
    Kt = (F[N * C:] @ F[:N * C].T / (N * C)).reshape(3, C, N, C) if resolved else F[N * C:N * C + 3] @ F[:N].T / N
    f0, y, f0t = rng.standard_normal((N, C)), rng.standard_normal((N, C)), rng.standard_normal((3, C))
    Ws = [graphs.mixing_matrix(graphs.topology(t, Q)) for t in ("ring", "complete")]
    has_bound = algorithms.get(algorithm).bound is not None
    # a step size per cell: the bound, or 1/L for methods without one (Q = 32 is too large for the critical step)
    bounds = [stability.step_size_bound(algorithm, W, K, owner) if has_bound else 1.0 / stability.local_curvature(K, owner)
              for W in Ws]
    lrs = np.array([0.3, 0.9, 1.1])[:, None] * bounds                          # (I, T): own step per cell
    steps = [0, 2, 9]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sw = dynamics.linearized_sweep(algorithm, Ws, K, owner, f0, y, lrs, steps, K_test=Kt, f0_test=f0t)
    assert len([w for w in caught if "exceeds the sufficient stable step size" in str(w.message)]) == len(Ws) * has_bound
    assert sw.train.shape == (3, 2, 3, Q, N, C) and sw.test.shape == (3, 2, 3, Q, 3, C)
    assert sw.coef.shape == sw.train.shape
    for i in range(3):
        for j in range(2):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                one = dynamics.linearized_outputs(algorithm, Ws[j], K, owner, f0, y, lrs[i, j], steps,
                                                  K_test=Kt, f0_test=f0t)
            for got, want in ((sw.train, one.train), (sw.test, one.test), (sw.coef, one.coef)):
                assert rel(got[i, j, 1:], want[1:]) <= 1e-12, (i, j)
    # the topologies really differ (a wrong W per column block would fail above), except centralised
    assert (rel(sw.train[0, 0, -1], sw.train[0, 1, -1]) > 1e-3) == (algorithm != "centralized")
    # a reduced recording (here: the mean test output and the iteration) holds the same values, in the same cells
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        red = dynamics.linearized_sweep(algorithm, Ws, K, owner, f0, y, lrs, steps, K_test=Kt, f0_test=f0t,
                                        record=lambda system, A, s: (system.outputs(A, test=True).mean(axis=(1, 2)),
                                                                     np.full(A.shape[2] // (1 if resolved else C), s)))
    assert red.train is None and red.test is None and red.coef is None
    mean_test, at_step = red.recorded
    assert mean_test.shape == (3, 2, 3, C) and at_step.shape == (3, 2, 3)
    assert (at_step == np.asarray(steps)).all()
    assert rel(mean_test[:, :, 1:], sw.test[:, :, 1:].mean(axis=(3, 4))) <= 1e-12
    np.testing.assert_array_equal(red.diverged, sw.diverged)


def test_sweep_shares_step_sizes_across_topologies_and_checks_shapes():
    rng = np.random.default_rng(2)
    owner, K = np.repeat(np.arange(4), 2), np.eye(8)
    f0, y = np.zeros((8, 1)), rng.standard_normal((8, 1))
    Ws = [graphs.mixing_matrix(graphs.topology(t, 4)) for t in ("ring", "star", "complete")]
    sw = dynamics.linearized_sweep("dgd", Ws, K, owner, f0, y, [0.1, 0.4], [5])
    for i, lr in enumerate([0.1, 0.4]):
        for j, W in enumerate(Ws):
            np.testing.assert_array_equal(sw.train[i, j], dynamics.linearized_outputs("dgd", W, K, owner, f0, y, lr, [5]).train)
    assert sw.test is None
    for bad in ([], [[0.1, 0.2]], [0.1, -1.0]):
        with pytest.raises(ValueError):
            dynamics.linearized_sweep("dgd", Ws, K, owner, f0, y, bad, [5])


# --- the design proved on what the beyond-the-paper methods need ---------------------------

BETA = 0.6
HEAVY_BALL = algorithms.Algorithm(
    "heavy_ball_dgd",
    init=lambda ops, x0: {"x": x0, "v": 0 * x0},
    step=lambda ops, s, k: (lambda v: {"x": ops.mix(s["x"], k) - ops.lr * v, "v": v})(BETA * s["v"] + ops.grad(s["x"], k)),
    equation="v⁺ = β v + ∇f(x), x⁺ = W x − η v⁺")


def _linearised_runs(p, algorithm, W, lr, steps):
    K = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"])
    Kt = kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x_test"], p["x"])
    f0, f0t = p["apply_fn"](p["params0"], p["x"]), p["apply_fn"](p["params0"], p["x_test"])
    brute = training.simulate(algorithm, kernels.linearize(p["apply_fn"], p["params0"]), p["params0"], W, p["x"],
                              p["y"], p["owner"], lr, steps, x_test=p["x_test"], record_params=True)
    pred = dynamics.linearized_outputs(algorithm, W, K, p["owner"], f0, p["y"], lr, steps, K_test=Kt, f0_test=f0t)
    return brute, pred, f0, f0t, K


def test_heavy_ball_defined_in_a_few_lines_trains_as_its_closed_form(prob):
    """A two-state method defined once (above) runs on every back end: training of the linearised
    network equals the coefficient recursion to 1e-9 relative (float64), its parameters equal
    theta_0 + J^T a_q, and the spectral radius of its iteration matrix predicts the rate."""
    p = prob
    W = graphs.mixing_matrix(graphs.topology("ring", 4))
    lr = 0.2 * stability.dgd_step_size_bound(W, kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"]), p["owner"])
    steps = [0, 1, 2, 15, 60]
    brute, pred, f0, f0t, K = _linearised_runs(p, HEAVY_BALL, W, lr, steps)
    assert rel(pred.train - f0, brute.train - f0) <= 1e-9
    assert rel(pred.test - f0t, brute.test - f0t) <= 1e-9
    theta = training.parameters(p["apply_fn"], p["params0"], p["x"], pred.coef[-1])
    assert rel(training.flatten_agents(theta), training.flatten_agents(brute.params[-1])) <= 1e-9
    # momentum really acts: plain DGD with the same step differs
    dgd = dynamics.linearized_outputs("dgd", W, K, p["owner"], f0, p["y"], lr, steps)
    assert rel(dgd.train[-1] - f0, pred.train[-1] - f0) > 1e-2
    M = stability.iteration_matrix(HEAVY_BALL, W, K, p["owner"], lr)
    sys = coefficients.CoefficientSystem([W], K, p["owner"], f0, p["y"])
    G = scipy.linalg.block_diag(*stability.local_blocks(sys)[0])
    I = np.eye(len(G))                     # state [x; v]: x+ = W x - eta (beta v + G x), v+ = beta v + G x
    want = np.block([[np.kron(W, np.eye(len(G) // 4)) - lr * G, -lr * BETA * I], [G, BETA * I]])
    np.testing.assert_allclose(M, want, rtol=0, atol=1e-12 * np.abs(want).max())
    assert stability.radius(M) < 1


def test_time_varying_mixing_trains_as_its_closed_form(prob):
    """DGD with a W that changes every iteration (a periodic schedule of 5 random link patterns):
    training of the linearised network equals the closed form, and the schedule matters."""
    p = prob
    rng = np.random.default_rng(3)
    full = graphs.topology("complete", 4)
    Ws = []
    for _ in range(5):
        edges = [e for e in full.edges if rng.random() < 0.6]
        g = nx.Graph(); g.add_nodes_from(range(4)); g.add_edges_from(edges)
        Ws.append(graphs.mixing_matrix(g) if nx.is_connected(g) else np.eye(4) * 0.5 + 0.125)
    Ws = np.stack(Ws)
    lr = 0.3 * stability.dgd_step_size_bound(Ws[0], kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"]), p["owner"])
    steps = [0, 3, 11, 40]
    brute, pred, f0, f0t, K = _linearised_runs(p, "dgd", Ws, lr, steps)
    assert rel(pred.train - f0, brute.train - f0) <= RTOL
    assert rel(pred.test - f0t, brute.test - f0t) <= RTOL
    fixed = dynamics.linearized_outputs("dgd", Ws[0], K, p["owner"], f0, p["y"], lr, steps)
    assert rel(fixed.train[-1] - f0, pred.train[-1] - f0) > 1e-3
    with pytest.raises(ValueError, match="schedule"):
        dynamics.linearized_flow_outputs("dgd", Ws, K, p["owner"], f0, p["y"], lr, [1.0])


def test_sweep_marks_diverged_configurations_without_overflow_warnings():
    """A step size far beyond the threshold: the sweep marks its cells diverged, they are NaN
    from the iteration they left every bound on, no NumPy overflow warning is issued, and the
    other cells equal their own runs bit for bit."""
    rng = np.random.default_rng(3)
    owner, K = np.repeat(np.arange(4), 2), np.eye(8)
    f0, y = np.zeros((8, 1)), rng.standard_normal((8, 1))
    Ws = [graphs.mixing_matrix(graphs.topology(t, 4)) for t in ("ring", "complete")]
    lrs, steps = [0.1, 0.4, 50.0], [0, 5, 400]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sw = dynamics.linearized_sweep("dgd", Ws, K, owner, f0, y, lrs, steps)
    assert caught and all("exceeds the sufficient stable step size" in str(w.message) for w in caught)
    assert sw.diverged.tolist() == [[False, False], [False, False], [True, True]]
    assert ((sw.diverged_at[2] > 5) & (sw.diverged_at[2] < 400)).all() and (sw.diverged_at[:2] == -1).all()
    assert np.isfinite(sw.train[2, :, :2]).all() and np.isnan(sw.train[2, :, 2]).all()
    for i in range(2):
        for j, W in enumerate(Ws):
            np.testing.assert_array_equal(sw.train[i, j], dynamics.linearized_outputs("dgd", W, K, owner, f0, y, lrs[i],
                                                                                      steps).train)
    with warnings.catch_warnings(record=True) as caught:           # every cell diverges: stops early, NaN
        warnings.simplefilter("always")
        all_div = dynamics.linearized_sweep("dgd", Ws, K, owner, f0, y, [50.0], [0, 10 ** 6])
    assert all_div.diverged.all() and np.isnan(all_div.train[:, :, 1]).all()
    assert not [w for w in caught if "overflow" in str(w.message) or "invalid value" in str(w.message)]


@pytest.mark.parametrize("resolved", [True, False])
def test_points_grouped_by_agent_give_the_same_outputs_with_one_kernel_copy(resolved):
    """problems.by_agent only reorders the training points: every agent's test outputs are
    unchanged (to round-off), and the closed form then keeps no second, grouped copy of K."""
    from p2pntk import coefficients, problems
    p = problems.digits_problem(24, 10, 4, 32, seed=3, partition="dirichlet", alpha=0.5, resolved=resolved)
    q = problems.by_agent(p)
    assert np.all(np.diff(q.owner) >= 0) and not np.all(np.diff(p.owner) >= 0)
    W = graphs.mixing_matrix(graphs.topology("ring", 4))
    lr = 0.5 * stability.step_size_bound("atc", W, p.K, p.owner)       # the same for both orders
    run = lambda r: dynamics.linearized_outputs("atc", W, r.K, r.owner, r.f0, r.y, lr, [0, 7, 30],
                                                K_test=r.K_test, f0_test=r.f0_test)
    a, b = run(p), run(q)
    assert rel(b.test, a.test) <= 1e-12
    order = np.argsort(p.owner, kind="stable")
    assert rel(b.train, a.train[:, :, order]) <= 1e-12          # the same points, reordered
    grouped = coefficients.CoefficientSystem([W], q.K, q.owner, q.f0, q.y)
    assert np.shares_memory(grouped._Kp, q.K)                     # no copy
    assert not np.shares_memory(coefficients.CoefficientSystem([W], p.K, p.owner, p.f0, p.y)._Kp, p.K)
