"""Vectorised simulation of Q agents versus a per-agent Python loop.

Baseline: how most decentralised-learning simulators step agents — each agent's
jitted gradient step called in a Python loop, then each agent's jitted mixing of its
neighbours' parameters (DGD: :math:`\\theta_q^+ = \\sum_l W_{ql}\\theta_l - \\eta\\nabla L_q(\\theta_q)`),
2Q dispatches per iteration. Ours: :func:`p2pntk.training.simulate`, all agents in one
jitted ``fori_loop`` (vmap over agents, mixing as a tensordot). Both start from the same
parameters; ``max_param_diff`` is the largest difference of the final parameters.
``baseline_s``/``ours_s`` are per-iteration times without JIT compilation,
(time of k iterations - time of 1 iteration) / (k - 1), each the best of 2 runs;
``*_total_s`` are the k-iteration times with compilation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from common import row, seconds

from p2pntk import graphs, problems, stability, training

FULL = [dict(n_agents=8, width=1024, n_train=256, iterations=300), dict(n_agents=32, width=256, n_train=256, iterations=300)]
QUICK = [dict(n_agents=4, width=32, n_train=40, iterations=200)]   # enough iterations to rise above timer noise


def loop_simulate(apply_fn, params0, W, x, y, owner, lr, iterations):
    """DGD with one jitted gradient call and one jitted mixing call per agent and iteration."""
    Q = W.shape[0]
    local = [(x[owner == q], y[owner == q]) for q in range(Q)]
    loss = lambda p, xq, yq: 0.5 * jnp.sum((apply_fn(p, xq) - yq) ** 2) / xq.shape[0]
    grad = jax.jit(jax.grad(loss))
    neighbours = [np.flatnonzero(W[q]) for q in range(Q)]

    @jax.jit
    def combine(weights, nbr_params, g):
        return jax.tree.map(lambda gg, *ps: sum(w * p for w, p in zip(weights, ps)) - lr * gg, g, *nbr_params)

    params = [params0] * Q
    for _ in range(iterations):
        grads = [grad(params[q], *local[q]) for q in range(Q)]
        params = [combine(jnp.asarray(W[q, neighbours[q]]), [params[l] for l in neighbours[q]], grads[q])
                  for q in range(Q)]
    return jax.block_until_ready(params)


def _per_iteration(t_k: float, t_1: float, k: int) -> float:
    """(t_k - t_1) / (k - 1), the time per iteration without the fixed cost of a call; t_k / k
    (an upper bound) if timer noise on a tiny case makes the difference non-positive."""
    return (t_k - t_1) / (k - 1) if t_k > t_1 else t_k / k


def _case(n_agents, width, n_train, iterations):
    p = problems.problem("digits", n_train, 10, n_agents, width)
    W = graphs.mixing_matrix(graphs.topology("ring", n_agents))
    lr = 0.5 * stability.dgd_step_size_bound(W, p.K, p.owner)
    x, y = jnp.asarray(p.x), jnp.asarray(p.y)
    loop = lambda k: loop_simulate(p.apply_fn, p.params0, W, x, y, p.owner, lr, k)
    vec = lambda k: training.simulate("dgd", p.apply_fn, p.params0, W, x, y, p.owner, lr, [k], record_params=True)
    (t_loop, base), (t_vec, ours) = seconds(lambda: loop(iterations), 2), seconds(lambda: vec(iterations), 2)
    per_loop = _per_iteration(t_loop, seconds(lambda: loop(1), 2)[0], iterations)
    per_vec = _per_iteration(t_vec, seconds(lambda: vec(1), 2)[0], iterations)
    ours = training.flatten_agents(ours.params[-1])
    base = np.stack([training.flatten_agents(jax.tree.map(lambda a: a[None], pq))[0] for pq in base])
    diff = float(np.abs(ours - base).max())
    return row("loop", f"Q={n_agents}, width {width}, N={n_train}, per iteration", per_loop, per_vec,
               f"per-agent jitted grad + mix in a Python loop vs simulate (vmap, one jitted loop), without "
               f"compilation; with it, {iterations} its: {t_loop:.3g} s vs {t_vec:.3g} s; max |param diff| {diff:.2g}",
               max_param_diff=diff, n_agents=n_agents, width=width, loop_total_s=t_loop, ours_total_s=t_vec)


def run(quick: bool) -> list[dict]:
    return [_case(**c) for c in (QUICK if quick else FULL)]
