"""predict: simulate's call, predicted; kernels.kernel: the NTK blocks in one call, tiled, float64.

The closed form is exact for the linearised network, so ``predict(args)`` must equal
``simulate(args)`` with ``apply_fn`` replaced by its linearisation to float64 round-off
(1e-9 relative asserted; measured about 1e-14), for every kernel kind it computes.
"""
import os
import subprocess
import sys
import textwrap
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import p2pntk
from p2pntk import coefficients, dynamics, graphs, kernels, prediction, training

RTOL = 1e-9
STEPS = [0, 1, 5, 30]


def tanh_mlp(width=64, d=3, C=2, seed=0):
    """A plain-JAX two-layer tanh network in NTK parameterisation (not kernels.mlp)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params0 = {"W1": jax.random.normal(k1, (d, width)), "b1": jax.random.normal(k2, (width,)),
               "W2": jax.random.normal(k3, (width, C))}

    def apply_fn(p, x):
        h = jnp.tanh(x @ p["W1"] / jnp.sqrt(x.shape[1]) + p["b1"])
        return h @ p["W2"] / jnp.sqrt(h.shape[1])

    return apply_fn, params0


@pytest.fixture(scope="module")
def prob():
    rng = np.random.default_rng(0)
    apply_fn, params0 = tanh_mlp()
    x, x_test = rng.standard_normal((12, 3)), rng.standard_normal((5, 3))
    y = np.eye(2)[rng.integers(0, 2, 12)] - 0.5
    W = graphs.mixing_matrix(graphs.topology("ring", 3))
    owner = np.arange(12) % 3
    return dict(apply_fn=apply_fn, params0=params0, x=x, y=y, x_test=x_test, W=W, owner=owner,
                lin=kernels.linearize(apply_fn, params0))


def rel(a, b):
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b))


def args(p, algorithm="dgd", lr=0.5, apply_fn=None):
    return (algorithm, p["apply_fn"] if apply_fn is None else apply_fn, p["params0"], p["W"], p["x"], p["y"],
            p["owner"], lr, STEPS)


@pytest.mark.parametrize("algorithm,kw", [("dgd", {}), ("atc", {"momentum": 0.5}), ("gradient_tracking", {}),
                                          ("dgd", {"batches": training.minibatches(np.arange(12) % 3, 2, seed=1)})])
def test_predict_equals_training_the_linearised_network(prob, algorithm, kw):
    pred = p2pntk.predict(*args(prob, algorithm), x_test=prob["x_test"], **kw)
    brute = p2pntk.simulate(*args(prob, algorithm, apply_fn=prob["lin"]), x_test=prob["x_test"], **kw)
    assert isinstance(pred, p2pntk.SimulationResult) and pred.train.shape == brute.train.shape == (4, 3, 12, 2)
    assert pred.test.shape == brute.test.shape == (4, 3, 5, 2) and pred.params is None
    np.testing.assert_array_equal(pred.steps, brute.steps)
    f0, f0t = brute.train[0], brute.test[0]
    assert rel(pred.train - f0, brute.train - f0) < RTOL and rel(pred.test - f0t, brute.test - f0t) < RTOL
    assert rel(pred.train[-1] - f0, f0) > 1e-2                                          # it moved


def test_predict_is_close_to_training_the_network_itself(prob):
    """The actual (nonlinear) network: what predict is for; at width 64 within a few %."""
    pred = p2pntk.predict(*args(prob), x_test=prob["x_test"])
    act = p2pntk.simulate(*args(prob), x_test=prob["x_test"])
    f0 = act.test[0]
    assert rel(pred.test[-1] - f0, act.test[-1] - f0) < 0.05


def test_kernel_kinds_are_the_closed_form_of_those_kernels(prob):
    p = prob
    K, Kt = kernels.kernel(p["apply_fn"], p["params0"], p["x"], p["x_test"])
    f0 = np.asarray(p["apply_fn"](p["params0"], p["x"]))
    f0t = np.asarray(p["apply_fn"](p["params0"], p["x_test"]))
    cases = {"empirical": (K, Kt), "shared": (coefficients.traced_kernel(K), coefficients.traced_kernel(Kt))}
    for kind, (Kk, Kkt) in cases.items():
        ref = dynamics.linearized_outputs("dgd", p["W"], Kk, p["owner"], f0, p["y"], 0.5, STEPS, K_test=Kkt, f0_test=f0t)
        for kernel in (kind, (Kk, Kkt)):
            got = p2pntk.predict(*args(p), x_test=p["x_test"], kernel=kernel)
            np.testing.assert_allclose(got.train, ref.train, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(got.test, ref.test, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(got.coef, ref.coef, rtol=1e-12, atol=1e-13)
    # a precomputed kernel alone without x_test
    got = p2pntk.predict(*args(p), kernel=K)
    assert got.test is None and np.allclose(got.train, p2pntk.predict(*args(p)).train, rtol=1e-12)
    # shared and resolved differ at finite width (the test can tell them apart)
    assert rel(p2pntk.predict(*args(p), kernel="shared").train, p2pntk.predict(*args(p)).train) > 1e-6


def test_analytic_kernel(prob):
    init_fn, apply_fn, kernel_fn = kernels.mlp(32, n_out=2)
    _, params0 = init_fn(jax.random.PRNGKey(0), (-1, 3))
    p = {**prob, "apply_fn": apply_fn, "params0": params0}
    lr = 0.2                                                            # below the sufficient bound (0.38)
    Th, Tht = kernels.analytic_ntk_train_test(kernel_fn, jnp.asarray(p["x"]), jnp.asarray(p["x_test"]))
    f0, f0t = np.asarray(apply_fn(params0, p["x"])), np.asarray(apply_fn(params0, p["x_test"]))
    ref = dynamics.linearized_outputs("dgd", p["W"], Th, p["owner"], f0, p["y"], lr, STEPS, K_test=Tht, f0_test=f0t)
    got = p2pntk.predict(*args(p, lr=lr), x_test=p["x_test"], kernel="analytic", kernel_fn=kernel_fn)
    np.testing.assert_allclose(got.test, ref.test, rtol=1e-12, atol=1e-13)
    no_test = p2pntk.predict(*args(p, lr=lr), kernel="analytic", kernel_fn=kernel_fn)
    np.testing.assert_allclose(no_test.train, ref.train, rtol=1e-12, atol=1e-13)


def test_record_params_are_theta0_plus_J_transpose_a(prob):
    pred = p2pntk.predict(*args(prob), record_params=True)
    brute = p2pntk.simulate(*args(prob, apply_fn=prob["lin"]), record_params=True)
    theta0 = training.flatten_agents(jax.tree.map(lambda a: a[None], prob["params0"]))
    assert len(pred.params) == len(STEPS)
    for s, a, b in zip(STEPS, pred.params, brute.params):
        fa, fb = training.flatten_agents(a), training.flatten_agents(b)
        assert fa.shape == fb.shape == (3, 3 * 64 + 64 + 64 * 2)
        if s == 0:
            np.testing.assert_allclose(fa, np.broadcast_to(theta0, fa.shape), rtol=1e-15)
        else:
            assert rel(fa - theta0, fb - theta0) < RTOL
    picked = p2pntk.predict(*args(prob), record_params=lambda t: t["b1"][:, :3])
    np.testing.assert_allclose(picked.params[-1], pred.params[-1]["b1"][:, :3], rtol=1e-14)


def test_simulate_keywords_pass_through_and_unknown_ones_are_refused(prob):
    ref = p2pntk.predict(*args(prob))
    same = p2pntk.predict(*args(prob), devices=None, mixing="auto", dtype="float32")
    np.testing.assert_array_equal(same.train, ref.train)              # the prediction is float64 whatever dtype
    assert same.train.dtype == np.float64
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'devcies'; .*simulate's: .*devices"):
        p2pntk.predict(*args(prob), devcies=2)
    import inspect
    extra = set(inspect.signature(training.simulate).parameters) - set(prediction._OWN)
    assert {"devices", "mixing", "dtype"} <= extra      # and whatever simulate gains is accepted too


def test_a_warning_points_at_the_callers_line(prob):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p2pntk.predict(*args(prob, lr=50.0)[:-1], [0, 1])
    unstable = [w for w in caught if "sufficient stable step size" in str(w.message)]
    assert unstable and all(w.filename == __file__ for w in unstable), [(w.filename, w.lineno) for w in caught]


def test_warnings_of_the_results_cache_point_at_the_caller(tmp_path):
    from p2pntk import results

    compute = lambda: {"a": np.arange(3.0)}
    results.cached("demo", {"n": 1}, compute, folder=tmp_path)
    path = next(tmp_path.glob("demo-*.npz"))
    path.write_bytes(path.read_bytes()[:20])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results.cached("demo", {"n": 1}, compute, folder=tmp_path)
    assert [w.filename for w in caught if w.category is RuntimeWarning] == [__file__]


@pytest.mark.parametrize("x_test", [False, True])
@pytest.mark.parametrize("resolved", [True, False])
def test_kernel_tiles_equal_one_block_and_neural_tangents(prob, resolved, x_test):
    p = prob
    xt = p["x_test"] if x_test else None
    ref = np.asarray(kernels.empirical_ntk(p["apply_fn"], p["params0"], p["x"], resolved=resolved))
    for b in (None, 1, 5, 12, 100):
        K, Kt = p2pntk.kernel(p["apply_fn"], p["params0"], p["x"], xt, resolved=resolved, batch_size=b)
        assert type(K) is np.ndarray and K.dtype == np.float64
        assert K.shape == ((12, 2, 12, 2) if resolved else (12, 12))
        np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-13 * np.abs(ref).max())
        if x_test:
            reft = np.asarray(kernels.empirical_ntk(p["apply_fn"], p["params0"], xt, p["x"], resolved=resolved))
            assert Kt.shape == ((5, 2, 12, 2) if resolved else (5, 12)) and Kt.dtype == np.float64
            np.testing.assert_allclose(Kt, reft, rtol=1e-12, atol=1e-13 * np.abs(ref).max())
        else:
            assert Kt is None


def test_kernel_of_an_mlp_uses_its_structure_and_tiles_too():
    init_fn, apply_fn, _ = kernels.mlp(16, depth=2, n_out=3)
    _, params0 = init_fn(jax.random.PRNGKey(1), (-1, 4))
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (9, 4)), dtype=np.float64)
    ref = np.asarray(kernels.empirical_ntk(apply_fn, params0, x))
    for b in (None, 4):
        K, _ = kernels.kernel(apply_fn, params0, x, batch_size=b)
        np.testing.assert_allclose(K, ref, rtol=1e-12, atol=1e-14)


def test_kernel_of_a_model_that_mixes_points_needs_vmap_axes_none():
    """With vmap_axes=None the points may interact (here: the outputs are centred over the batch)."""
    w = jnp.asarray(np.random.default_rng(3).standard_normal((3, 2)))
    f = lambda p, x: (x @ p) - (x @ p).mean(0)
    x = np.random.default_rng(4).standard_normal((6, 3))
    J = np.asarray(jax.jacobian(lambda p: f(p, x))(w)).reshape(6 * 2, -1)
    K, _ = kernels.kernel(f, w, x, vmap_axes=None)
    np.testing.assert_allclose(K.reshape(12, 12), J @ J.T, atol=1e-13)


X64_OFF = textwrap.dedent('''
    import jax, jax.numpy as jnp, numpy as np
    assert not jax.config.jax_enable_x64
    import p2pntk
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3)) * 1.1, rng.standard_normal((6, 2))
    w = jnp.asarray(rng.standard_normal((3, 2)), dtype=jnp.float32)
    f = lambda p, x: x @ p
    K, Kt = p2pntk.kernel(f, w, x, x[:2])
    exact = np.einsum("ij,cd->icjd", x @ x.T, np.eye(2))            # K = X X^T (x) I for a linear model
    W = np.full((2, 2), 0.5)
    owner = np.arange(6) % 2
    r = p2pntk.predict("dgd", f, w, W, x, y, owner, 0.1, [0, 50], x_test=x[:2])
    ref = p2pntk.linearized_outputs("dgd", W, exact, owner, x @ np.asarray(w, dtype=np.float64), y, 0.1, [0, 50])
    print(K.dtype, r.train.dtype, np.abs(K - exact).max() / np.abs(exact).max(),
          np.abs(r.train - ref.train).max() / np.abs(ref.train).max(), np.abs(Kt - exact[:2]).max())
''')


def test_kernel_and_predict_are_float64_with_jax_enable_x64_off(tmp_path):
    """Without jax_enable_x64 (JAX's default) they run in float64 anyway: a linear model's kernel
    X Xᵀ ⊗ I and its closed form to float64 round-off (float32 would give about 1e-7).

    Also: no TensorFlow start-up log line on stderr, here without TF_CPP_MIN_LOG_LEVEL (tests/test_readme.py
    runs with it = 3): TF 2.21 writes its oneDNN/CUDA lines through absl before the variable applies, and
    kernels silences file descriptor 2 while neural-tangents imports it."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "TF_CPP_MIN_LOG_LEVEL")}
    out = subprocess.run([sys.executable, "-c", X64_OFF], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    kd, rd, ek, er, et = out.stdout.split()
    assert kd == rd == "float64"
    assert float(ek) < 1e-14 and float(er) < 1e-12 and float(et) < 1e-13, out.stdout
    assert out.stderr == "", out.stderr[-2000:]        # no TF start-up log line


@pytest.mark.parametrize("kw,match", [
    ({"kernel": "ntk"}, r"unknown kernel='ntk'; allowed: empirical, shared, analytic, or a precomputed \(K, K_test\)"),
    ({"kernel": "analytic"}, r"kernel='analytic' needs kernel_fn"),
    ({"kernel_fn": lambda *a: None}, r"kernel_fn is used only with kernel='analytic', got kernel='empirical'"),
    ({"kernel": np.eye(5)}, r"kernel: K must have shape \(N, N\) = \(12, 12\) \(shared\) or \(N, C, N, C\) = "
                            r"\(12, 2, 12, 2\) \(output-resolved\), got \(5, 5\)"),
    ({"kernel": np.eye(12), "x_test": np.ones((5, 3))}, r"kernel: with x_test, give the precomputed kernel as "
                                                        r"\(K, K_test\)"),
    ({"kernel": (np.eye(12), np.ones((5, 2, 12, 2))), "x_test": np.ones((5, 3))},
     r"kernel: K_test must have shape \(5, 12\) \(N_test = 5, shared like K\), got \(5, 2, 12, 2\)"),
    ({"kernel": (np.eye(12), np.ones((5, 12)), 1)}, r"kernel: a precomputed kernel is a \(K, K_test\) pair, got 3"),
    ({"batch_size": 0}, r"batch_size must be a positive integer \(points per kernel block\) or None"),
    ({"batch_size": 2.5}, r"batch_size must be a positive integer .* got 2\.5"),
])
def test_bad_kernel_arguments_are_rejected(prob, kw, match):
    with pytest.raises(ValueError, match=match):
        p2pntk.predict(*args(prob), **kw)


def test_bad_kernel_function_arguments_are_rejected(prob):
    p = prob
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer .* got True"):
        kernels.kernel(p["apply_fn"], p["params0"], p["x"], batch_size=True)
    with pytest.raises(ValueError, match=r"vmap_axes must be 0 \(independent points\) or None, got 1"):
        kernels.kernel(p["apply_fn"], p["params0"], p["x"], vmap_axes=1)
    with pytest.raises(ValueError, match=r"x_test must have points of the shape of x's, \(3,\), got \(4,\)"):
        kernels.kernel(p["apply_fn"], p["params0"], p["x"], np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"resolved must be True .* or False .*, got 'yes'"):
        kernels.kernel(p["apply_fn"], p["params0"], p["x"], resolved="yes")


def test_the_facade_exports_predict_and_kernel():
    assert p2pntk.PUBLIC["predict"] == "prediction" and p2pntk.PUBLIC["kernel"] == "kernels"
    assert "prediction" in p2pntk.LAYERS["compositions"]
    assert p2pntk.predict is prediction.predict and p2pntk.kernel is kernels.kernel


def test_nan_in_the_inputs_is_named(prob):
    x = prob["x"].copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        p2pntk.predict("dgd", prob["apply_fn"], prob["params0"], prob["W"], x, prob["y"], prob["owner"], 0.5, STEPS)
    with pytest.raises(ValueError, match="x_test contains NaN or inf"):
        p2pntk.predict(*args(prob), x_test=np.full((2, 3), np.inf))
