"""Actual training: precision (``dtype=``) and local losses of unequal agents without padding."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2pntk import data, dynamics, graphs, kernels, training

from test_dynamics import rel, setup

STEPS = [0, 1, 5, 20]


@pytest.fixture(scope="module")
def prob():
    p = setup(owner=(0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 3), width=32)   # N_q = 2, 3, 7, 1: four groups
    p["W"] = graphs.mixing_matrix(graphs.topology("ring", 4))
    return p


def run(p, lr=0.05, **kw):
    return training.simulate("dgd", p["apply_fn"], p["params0"], p["W"], p["x"], p["y"], p["owner"], lr, STEPS,
                             x_test=p["x_test"], **kw)


def test_float32_parameters_train_without_casting_the_data(prob):
    """float32 parameters with float64 data used to fail in the while_loop carry; dtype=None
    takes the parameters' precision and casts the data to it."""
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), prob["params0"])
    r = training.simulate("dgd", prob["apply_fn"], p32, prob["W"], prob["x"], prob["y"], prob["owner"], 0.05, STEPS,
                          x_test=prob["x_test"], record_params=True)
    assert r.train.dtype == r.test.dtype == np.float32
    assert all(a.dtype == np.float32 for a in jax.tree.leaves(r.params[-1]))
    ref = run(prob)
    assert ref.train.dtype == np.float64
    assert 1e-9 < rel(r.train[-1], ref.train[-1]) < 1e-4           # float32 round-off, not another run


def test_dtype_casts_parameters_and_data_consistently(prob):
    r32 = run(prob, dtype="float32")
    assert r32.train.dtype == r32.test.dtype == np.float32
    np.testing.assert_array_equal(r32.train, run(prob, dtype=np.float32).train)
    ref = run(prob, dtype="float64")
    np.testing.assert_array_equal(ref.train, run(prob).train)       # float64 params: None is float64
    assert 1e-9 < rel(r32.test[-1], ref.test[-1]) < 1e-4


@pytest.mark.parametrize("bad", ["float16", "int32", "double precision", True, 32])
def test_a_bad_dtype_names_the_parameter_and_the_allowed_values(prob, bad):
    with pytest.raises(ValueError, match=r"dtype must be None \(the precision of params0\) or one of 'float64', "
                                         r"'float32', got "):
        run(prob, dtype=bad)


def test_float64_without_x64_is_an_error_not_a_silent_float32(prob):
    from jax.experimental import disable_x64

    with disable_x64():
        with pytest.raises(ValueError, match=r"dtype float64 needs 64-bit JAX, which is off: call "
                                             r"jax\.config\.update\('jax_enable_x64', True\)"):
            training.train_dtype("float64")
        assert training.train_dtype("float32") == np.float32


def test_agents_are_grouped_by_size_without_padding():
    owner = data.partition(np.arange(160) % 2, 10, "dirichlet", alpha=0.3, seed=0)
    counts = np.bincount(owner)
    groups = training.agent_groups(owner, 10)
    agents = np.concatenate([a for a, _ in groups])
    assert sorted(agents.tolist()) == list(range(10))
    assert sum(idx.size for _, idx in groups) == 160 < 10 * counts.max()   # every point once, no padding
    for a, idx in groups:
        assert (idx >= 0).all() and all(np.array_equal(np.sort(owner[i]), np.full(len(i), q)) for q, i in zip(a, idx))
    assert len(training.agent_groups(np.repeat(np.arange(8), 16), 8)) == 1   # an equal split: one vmap
    capped = training.agent_groups(owner, 10, max_groups=2)
    assert len(capped) <= 3
    padded = sum(idx.size for _, idx in capped)
    ratio = (counts.max() / counts.min()) ** 0.5
    assert 160 < padded <= 160 * ratio and padded < 10 * counts.max()
    for _, idx in capped:                         # padding only up to the bucket's largest agent, marked -1
        assert ((idx >= 0).sum(axis=1) > idx.shape[1] / ratio).all()


@pytest.mark.parametrize("max_groups", [16, 1])
def test_unequal_agents_train_as_the_closed_form(prob, monkeypatch, max_groups):
    """Four agent sizes in four groups (no padding), or padded into buckets (max_groups=1):
    the linearised networks train as the closed form, with and without minibatches."""
    monkeypatch.setattr(training, "MAX_GROUPS", max_groups)
    assert len(training.agent_groups(prob["owner"], 4)) == (4 if max_groups == 16 else 2)
    K = np.asarray(kernels.empirical_ntk(prob["apply_fn"], prob["params0"], prob["x"]))
    f0 = np.asarray(prob["apply_fn"](prob["params0"], prob["x"]))
    lin = kernels.linearize(prob["apply_fn"], prob["params0"])
    for batches in (None, training.minibatches(prob["owner"], 1, seed=4)):
        brute = training.simulate("atc", lin, prob["params0"], prob["W"], prob["x"], prob["y"], prob["owner"], 0.05,
                                  STEPS, batches=batches)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pred = dynamics.linearized_outputs("atc", prob["W"], K, prob["owner"], f0, prob["y"], 0.05, STEPS,
                                               batches=batches)
        assert rel(pred.train - f0, brute.train - f0) <= 1e-9
