"""The metrics module: losses and errors on each agent's own data, their network average, movement error."""
import numpy as np
import pytest

from p2pntk import checks, metrics


@pytest.fixture(scope="module")
def outs():
    rng = np.random.default_rng(0)
    owner = np.array([0, 0, 0, 1, 2, 2, 1, 0, 2, 2])          # N_q = 4, 2, 4
    y = np.eye(3)[rng.integers(0, 3, 10)] - 1 / 3
    labels = np.argmax(y, axis=1)
    f = rng.standard_normal((5, 3, 10, 3))                    # (S, Q, N, C)
    return f, y, labels, owner


def test_agent_losses_are_each_agents_own_local_loss(outs):
    f, y, _, owner = outs
    got = metrics.agent_losses(f, y, owner)
    assert got.shape == (5, 3)
    for q in range(3):
        mine = owner == q
        want = 0.5 * np.mean(np.sum((f[:, q][:, mine] - y[mine]) ** 2, axis=-1), axis=-1)
        np.testing.assert_allclose(got[:, q], want, rtol=1e-14)
    assert not np.allclose(got, metrics.mse(f, y))           # not the loss over all N points
    np.testing.assert_allclose(metrics.network_loss(f, y, owner), got.mean(axis=-1), rtol=1e-14)


def test_network_loss_at_consensus_is_the_centralised_loss(outs):
    f, y, _, owner = outs
    same = np.broadcast_to(f[:, :1], f.shape)                 # every agent holds agent 0's outputs
    Dbar = checks.agent_weights(owner, 3).mean(axis=0)
    r = f[:, 0] - y
    central = 0.5 * np.einsum("n,snc->s", Dbar, r ** 2)
    np.testing.assert_allclose(metrics.network_loss(same, y, owner), central, rtol=1e-14)


def test_agent_error_rates_count_only_the_agents_own_points(outs):
    f, y, labels, owner = outs
    got = metrics.agent_error_rates(f, labels, owner)
    assert got.shape == (5, 3)
    wrong = np.argmax(f, axis=-1) != labels
    for q in range(3):
        np.testing.assert_allclose(got[:, q], wrong[:, q][:, owner == q].mean(axis=-1))
    perfect = np.broadcast_to(y, f.shape)
    assert (metrics.agent_error_rates(perfect, labels, owner) == 0).all()


def test_owner_is_checked_against_the_outputs(outs):
    f, y, _, owner = outs
    with pytest.raises(ValueError, match=r"owner must be an integer array of shape \(10,\) giving every one of the "
                                         r"Q = 3 agents"):
        metrics.agent_losses(f, y, np.zeros(10, int))
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        metrics.agent_losses(f, y, owner[:5])


def test_movement_error_is_nan_at_k0_for_centred_networks():
    """f0 = 0 (centred): the actual outputs at k = 0 are round-off (float32 training), the
    prediction exactly 0; the error there is undefined (it used to be 1.0)."""
    rng = np.random.default_rng(1)
    f0 = np.zeros((2, 6, 3))
    moved = rng.standard_normal((3, 2, 6, 3))
    actual = np.concatenate([1e-8 * rng.standard_normal((1, 2, 6, 3)), moved])
    pred = np.concatenate([np.zeros((1, 2, 6, 3)), moved * 1.01])
    err = metrics.movement_error(pred, actual, f0)
    assert np.isnan(err[0])
    np.testing.assert_allclose(err[1:], 0.01, rtol=1e-12)
    only_k0 = metrics.movement_error(pred[:1], actual[:1], f0, steps=[0])
    assert np.isnan(only_k0).all()
    assert np.isnan(metrics.movement_error(pred, actual, f0, steps=[0, 0, 5, 9])[:2]).all()
    with pytest.raises(ValueError, match="steps must give the iteration of each of the 4 recorded steps"):
        metrics.movement_error(pred, actual, f0, steps=[0, 5])


def test_movement_error_of_uncentred_networks_still_divides_by_the_movement():
    f0 = np.ones((1, 4, 1))
    actual = np.stack([f0 + 1e-9, f0 + 0.5])
    pred = np.stack([f0, f0 + 0.6])
    err = metrics.movement_error(pred, actual, f0)
    assert np.isnan(err[0]) and err[1] == pytest.approx(0.2)
