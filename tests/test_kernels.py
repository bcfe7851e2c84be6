"""Kernels: the structured MLP NTK equals neural-tangents' Jacobian contraction."""
import jax
import numpy as np
import pytest
import neural_tangents as nt

from p2pntk import kernels


@pytest.mark.parametrize("activation", ["relu", "erf"])
@pytest.mark.parametrize("depth", [1, 3])
def test_structured_ntk_equals_neural_tangents(activation, depth):
    init_fn, apply_fn, _ = kernels.mlp(48, depth=depth, n_out=3, activation=activation)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(depth), 3)
    x1, x2 = jax.random.normal(k1, (7, 5)), jax.random.normal(k2, (4, 5))
    _, params = init_fn(k3, x1.shape)
    for resolved, axes in ((True, ()), (False, (-1,))):
        ref = nt.empirical_ntk_fn(apply_fn, trace_axes=axes, implementation=kernels.NTK_IMPLEMENTATION)(x1, x2, params)
        if resolved:
            ref = np.transpose(ref, (0, 2, 1, 3))
        got = kernels.structured_ntk(apply_fn, params, x1, x2, resolved=resolved)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    np.testing.assert_allclose(kernels.empirical_ntk(apply_fn, params, x1),
                               kernels.empirical_ntk(apply_fn, params, x1, x1), rtol=1e-13)


def test_empirical_ntk_tends_to_analytic_with_width():
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
    errs = []
    for width in (64, 4096):
        init_fn, apply_fn, kernel_fn = kernels.mlp(width, n_out=1)
        _, params = init_fn(jax.random.PRNGKey(1), x.shape)
        K = kernels.empirical_ntk(apply_fn, params, x, resolved=False)
        Th = kernels.analytic_ntk(kernel_fn, x)
        errs.append(np.linalg.norm(K - Th) / np.linalg.norm(Th))
    assert errs[1] < errs[0] / 3  # O(width^-1/2): 8x expected, 3x asserted (one seed)


@pytest.mark.parametrize("depth", [1, 2])
def test_analytic_kernel_fn_is_shared_by_widths_and_equals_neural_tangents(depth):
    """``mlp``'s jitted kernel_fn is one function for every width (the NTK-parameterised limit
    does not depend on it) and equals neural-tangents' un-jitted kernel_fn of the same network
    built from distinct layer objects (with the same initialisation and outputs).
    Off the diagonal to round-off; on it, the ReLU arc-cosine kernel evaluates arccos at a
    cosine of 1 - O(1e-16), where rounding is amplified to O(1e-8) (measured 8e-9 at depth 1)."""
    from neural_tangents import stax
    x = jax.random.normal(jax.random.PRNGKey(1), (12, 5), dtype=np.float64)
    fns = {w: kernels.mlp(w, depth=depth, n_out=3)[2] for w in (8, 4096)}
    assert fns[8] is fns[4096]
    layers = [layer for _ in range(depth)       # distinct layer objects (mlp reuses one pair per depth)
              for layer in (stax.Dense(8, W_std=2 ** 0.5, b_std=0.1, parameterization="ntk"), stax.Relu())]
    init_ref, apply_ref, kernel_ref = stax.serial(*layers, stax.Dense(3, W_std=2 ** 0.5, b_std=0.1,
                                                                      parameterization="ntk"))
    ref = np.asarray(kernel_ref(x, None, "ntk"))
    init, apply_fn, _ = kernels.mlp(8, depth=depth, n_out=3)
    key = jax.random.PRNGKey(2)
    (_, p_ref), (_, p) = init_ref(key, x.shape), init(key, x.shape)
    for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p), strict=True):   # same initialisation
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(apply_ref(p_ref, x), apply_fn(p, x))
    got = np.asarray(kernels.analytic_ntk(fns[8], x))
    off = ~np.eye(len(x), dtype=bool)
    np.testing.assert_allclose(got[off], ref[off], rtol=1e-12)
    np.testing.assert_allclose(np.diag(got), np.diag(ref), rtol=1e-7)


def test_analytic_ntk_train_test_blocks_equal_separate_calls():
    """One call on [X; X*] against X, split, gives Θ(X, X) and Θ(X*, X) of the separate calls
    (the rows of a kernel matrix do not depend on which other rows are computed with them)."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    x, xt = jax.random.normal(k1, (9, 5), dtype=np.float64), jax.random.normal(k2, (4, 5), dtype=np.float64)
    kernel_fn = kernels.mlp(16, depth=2, n_out=3)[2]
    K, Kt = kernels.analytic_ntk_train_test(kernel_fn, x, xt)
    assert K.shape == (9, 9) and Kt.shape == (4, 9)
    np.testing.assert_allclose(K, kernels.analytic_ntk(kernel_fn, x, x), rtol=1e-12)
    np.testing.assert_allclose(Kt, kernels.analytic_ntk(kernel_fn, xt, x), rtol=1e-12)
