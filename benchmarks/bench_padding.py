"""Training agents of unequal sizes: no padding to the largest agent.

A Dirichlet label-skewed split (:func:`p2pntk.data.partition`, ``"dirichlet"``,
:math:`\\alpha = 0.3`) of N digits points over Q agents gives agents of very different
sizes; computing every agent's local loss on an array padded to the largest agent,
:math:`\\max_q N_q` points each, costs :math:`Q\\max_q N_q / N` times the real work
(``padding_factor``). :func:`p2pntk.training.simulate` groups agents by size
(:func:`p2pntk.training.agent_groups`, one vmapped gradient per group) and pads nothing.

Rows (DGD on a ring, one hidden ReLU layer, float64, the same iterations; every time is
compiled, after one warm-up call with the same shapes, the best of ``REPEAT`` runs):

- *padded layout*: baseline the former layout written out here (:func:`padded_dgd`: one
  vmapped gradient over Q agents padded to :math:`\\max_q N_q`, zero weights on padding,
  in one jitted ``fori_loop``), ours ``simulate`` on the same split; ``max_abs_diff`` is
  the largest difference of their final outputs (the same computation, summed in another
  order);
- *equal split*: baseline ``simulate`` on an equal split of the same N points (``"iid"``:
  every agent N/Q points, one group), ours ``simulate`` on the Dirichlet split: a ratio near
  1 means the skewed split costs what an equal one does (with padding it would cost about
  ``padding_factor`` times more: the note gives that ratio too).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from common import row, seconds

from p2pntk import graphs, problems, training

FULL = dict(n_train=512, n_agents=10, width=2048, iterations=200)
QUICK = dict(n_train=80, n_agents=8, width=64, iterations=20)
ALPHA = 0.3
REPEAT = 2


def padded_dgd(apply_fn, params0, W, x, y, owner, lr, iterations):
    """DGD with every agent's points padded to the largest agent (the layout simulate had):
    returns a function of no arguments running ``iterations`` steps, and the outputs it gives."""
    Q = W.shape[0]
    counts = np.bincount(owner, minlength=Q)
    idx = np.zeros((Q, counts.max()), dtype=int)
    wts = np.zeros(idx.shape)
    for q in range(Q):
        pts = np.flatnonzero(owner == q)
        idx[q, :len(pts)] = pts
        wts[q, :len(pts)] = 1.0 / len(pts)
    xl, yl, wl = x[idx], y[idx], jnp.asarray(wts)

    def loss(p, xq, yq, wq):
        return 0.5 * jnp.sum(wq[:, None] * (apply_fn(p, xq) - yq) ** 2)

    grads = jax.vmap(jax.grad(loss))

    @jax.jit
    def run(params, Wj, xl, yl, wl, lr, n):
        def body(k, th):
            g = grads(th, xl, yl, wl)
            return jax.tree.map(lambda p, gp: jnp.tensordot(Wj, p, axes=1) - lr * gp, th, g)
        th = jax.lax.fori_loop(0, n, body, params)
        return jax.vmap(apply_fn, in_axes=(0, None))(th, x)

    params = jax.tree.map(lambda p: jnp.broadcast_to(p, (Q,) + p.shape), params0)
    Wj = jnp.asarray(W)
    return lambda: np.asarray(run(params, Wj, xl, yl, wl, lr, iterations))


def _problem(cfg, partition):
    return problems.problem("digits", cfg["n_train"], 10, cfg["n_agents"], cfg["width"], partition=partition,
                            alpha=ALPHA, with_kernel=False)


def run(quick: bool) -> list[dict]:
    cfg = QUICK if quick else FULL
    Q, its = cfg["n_agents"], cfg["iterations"]
    W = graphs.mixing_matrix(graphs.topology("ring", Q))
    skew, equal = _problem(cfg, "dirichlet"), _problem(cfg, "iid")
    counts = np.bincount(skew.owner, minlength=Q)
    factor = Q * counts.max() / cfg["n_train"]
    lr = 0.1

    def ours(p):
        x, y = jnp.asarray(p.x), jnp.asarray(p.y)
        go = lambda: training.simulate("dgd", p.apply_fn, p.params0, W, x, y, p.owner, lr, [its]).train[-1]
        go()                                                           # compiles
        return seconds(go, REPEAT)

    t_skew, f_skew = ours(skew)
    t_equal, _ = ours(equal)
    pad = padded_dgd(skew.apply_fn, skew.params0, W, jnp.asarray(skew.x), jnp.asarray(skew.y), skew.owner, lr, its)
    pad()                                                              # compiles
    t_pad, f_pad = seconds(pad, REPEAT)
    diff = float(np.abs(f_pad - f_skew).max())
    n_groups = len(training.agent_groups(skew.owner, Q))
    size = f"Q={Q}, N={cfg['n_train']}, width {cfg['width']}, ring, {its} its"
    numbers = dict(padding_factor=factor, n_groups=n_groups, counts=counts.tolist(), alpha=ALPHA, n_train=cfg["n_train"],
                   n_agents=Q, width=cfg["width"], iterations=its)
    split = f"Dirichlet alpha={ALPHA} split (N_q {counts.min()}..{counts.max()}, padding factor {factor:.2f})"
    return [
        row("padding", f"{split} vs the padded layout, {size}", t_pad, t_skew,
            f"every agent padded to max N_q = {counts.max()} (one vmap, written in the benchmark) vs simulate "
            f"({n_groups} groups of equal N_q, no padding); compiled, best of {REPEAT}; max |output diff| {diff:.2g}",
            max_abs_diff=diff, **numbers),
        row("padding", f"{split} vs an equal split of the same N, {size}", t_equal, t_skew,
            f"simulate on an equal split (N_q = {cfg['n_train'] // Q}, one group) vs simulate on the Dirichlet split; "
            f"with the padded layout the Dirichlet split took {t_pad / t_equal:.2f} x the equal split",
            padded_over_equal=t_pad / t_equal, **numbers),
    ]
