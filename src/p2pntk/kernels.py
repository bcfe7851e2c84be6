r"""Wide networks, their linearisation and neural tangent kernels.

The only module of the package that imports ``neural_tangents`` (pinned with
jax 0.5.3, see ``pyproject.toml``); everything else runs with any recent jax.

A network :math:`f(x;\theta)\in\mathbb R^C` in NTK parameterisation
(Jacot et al., 2018) has the empirical NTK

.. math:: K(x, x')_{cc'} = \sum_p \frac{\partial f_c(x;\theta_0)}{\partial\theta_p}
          \frac{\partial f_{c'}(x';\theta_0)}{\partial\theta_p},
          \qquad K = J(x) J(x')^\top ,

and its linearisation :math:`f_{\rm lin}(x;\theta) = f(x;\theta_0) + J(x)(\theta-\theta_0)`
(Lee et al., 2019). As the width grows, :math:`K` converges to a deterministic
kernel :math:`\Theta(x,x')\otimes I_C`, computed analytically by ``kernel_fn``.

:func:`kernel` gives the train and test blocks of the empirical NTK in one call, tiled to
bound memory, as float64 NumPy arrays whatever ``jax_enable_x64`` says (:func:`float64`).

Kernel layouts used throughout the package:

- *output-resolved*: shape ``(N1, C, N2, C)``, ``K[i, c, j, c']``;
- *shared* (output-traced): shape ``(N1, N2)``, the mean over ``c`` of
  ``K[i, c, j, c]``, standing for :math:`K \otimes I_C`.
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence the C++ start-up log lines tensorflow writes to file descriptor 2 when
    neural-tangents imports it (oneDNN notice, "Could not find cuda drivers"):
    TF 2.21 prints them before TF_CPP_MIN_LOG_LEVEL takes effect. Python errors still raise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()                      # what Python wrote before still reaches the terminal
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


with _native_stderr_silenced():
    import neural_tangents as nt
    from neural_tangents import stax

#: Empirical-NTK implementation that works with the pinned versions
#: (AUTO and STRUCTURED_DERIVATIVES crash with jax 0.5.3).
NTK_IMPLEMENTATION = nt.NtkImplementation.JACOBIAN_CONTRACTION

ACTIVATIONS = {"relu": stax.Relu, "erf": stax.Erf}


def mlp(width: int, depth: int = 1, n_out: int = 1, *, activation: str = "relu",
        W_std: float = 2.0 ** 0.5, b_std: float = 0.1):
    r"""Fully connected network in NTK parameterisation, ``depth`` hidden layers of ``width``.

    :math:`h^{(1)} = \frac{\sigma_w}{\sqrt{d}} W^{(1)} x + \sigma_b b^{(1)}`,
    :math:`h^{(\ell+1)} = \frac{\sigma_w}{\sqrt{n}} W^{(\ell+1)} \phi(h^{(\ell)}) + \sigma_b b^{(\ell+1)}`,
    all entries of :math:`W, b` standard normal at initialisation.

    Args:
        width: hidden width :math:`n`.
        depth: number of hidden layers.
        n_out: number of outputs :math:`C`.
        activation: ``"relu"`` or ``"erf"``.
        W_std, b_std: :math:`\sigma_w, \sigma_b`.

    Returns:
        ``(init_fn, apply_fn, kernel_fn)`` of ``neural_tangents.stax``; ``kernel_fn`` is
        jitted (``static_argnames="get"``, as the neural-tangents README recommends) and
        shared by every width (:func:`_kernel_fn`).

    Example:
        >>> init_fn, apply_fn, kernel_fn = mlp(16, depth=2, n_out=3)
        >>> _, params = init_fn(jax.random.PRNGKey(0), (-1, 4))
        >>> apply_fn(params, jnp.ones((5, 4))).shape
        (5, 3)
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation={activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    init_fn, apply_fn, _ = _serial(width, depth, n_out, activation, W_std, b_std)
    apply_fn.mlp_spec = dict(activation=activation, W_std=W_std, b_std=b_std)  # enables structured_ntk
    return init_fn, apply_fn, _kernel_fn(depth, n_out, activation, W_std, b_std)


@functools.lru_cache(maxsize=None)
def _kernel_fn(depth, n_out, activation, W_std, b_std):
    r"""The jitted infinite-width ``kernel_fn`` of :func:`mlp`, one per architecture.

    In NTK parameterisation the limit kernel :math:`\Theta` does not depend on the
    width (the width only sets how fast the empirical NTK approaches it), so all widths
    share one function, built with a placeholder width. Un-jitted, every call of
    neural-tangents' ``kernel_fn`` re-traces its shape propagation (``jax.eval_shape``,
    most of a call's time at N = 512); jitted, the first call with given input shapes
    compiles and later calls, at any width, reuse the compiled kernel.
    """
    return jax.jit(_serial(1, depth, n_out, activation, W_std, b_std)[2], static_argnames="get")


def _serial(width, depth, n_out, activation, W_std, b_std):
    """``stax.serial`` of the layers of :func:`mlp`."""
    hidden = [stax.Dense(width, W_std=W_std, b_std=b_std, parameterization="ntk"), ACTIVATIONS[activation]()]
    return stax.serial(*(hidden * depth), stax.Dense(n_out, W_std=W_std, b_std=b_std, parameterization="ntk"))


_DERIVATIVES = {
    "relu": (jax.nn.relu, lambda h: (h > 0).astype(h.dtype)),
    "erf": (jax.scipy.special.erf, lambda h: 2 / jnp.sqrt(jnp.pi) * jnp.exp(-h * h)),
}


def _mlp_factors(params, x, spec):
    """Per dense layer l: the inputs a_{l-1} (N, n_{l-1}) and the output sensitivities
    Delta_l = d f / d h_l (N, C, n_l) of the pre-activations h_l."""
    act, dact = _DERIVATIVES[spec["activation"]]
    dense = [p for p in params if p]
    inputs, pre, a = [], [], x
    for i, (W, b) in enumerate(dense):
        h = spec["W_std"] / jnp.sqrt(a.shape[1]) * a @ W + spec["b_std"] * b
        inputs.append(a)
        pre.append(h)
        a = act(h) if i < len(dense) - 1 else h
    C = dense[-1][0].shape[1]
    delta = [jnp.broadcast_to(jnp.eye(C, dtype=x.dtype), (x.shape[0], C, C))]
    for i in range(len(dense) - 1, 0, -1):
        W = dense[i][0]
        back = spec["W_std"] / jnp.sqrt(W.shape[0]) * jnp.einsum("ncj,kj->nck", delta[0], W)
        delta.insert(0, back * dact(pre[i - 1])[:, None, :])
    return inputs, delta


def structured_ntk(apply_fn, params, x1, x2=None, *, resolved: bool = True):
    r"""Empirical NTK of a network built by :func:`mlp`, from its layer structure.

    For a dense layer :math:`h_l = \frac{\sigma_w}{\sqrt{n_{l-1}}} a_{l-1} W_l + \sigma_b b_l`,
    :math:`\partial f_c/\partial W_l = \frac{\sigma_w}{\sqrt{n_{l-1}}} a_{l-1}\,\Delta_{l,c}^\top`
    with :math:`\Delta_{l,c} = \partial f_c/\partial h_l`, so

    .. math:: K(x,x')_{cc'} = \sum_l \Big(\frac{\sigma_w^2}{n_{l-1}} a_{l-1}(x)^\top a_{l-1}(x')
              + \sigma_b^2\Big)\, \Delta_{l,c}(x)^\top \Delta_{l,c'}(x') .

    Cost :math:`O(\sum_l N_1 N_2 C^2 n_l)` and memory :math:`O(N C n_l)`, instead of
    the :math:`N C \times P` Jacobian of ``JACOBIAN_CONTRACTION`` (neural-tangents'
    own structured implementation crashes with the pinned jax). Equal to
    neural-tangents' kernel to round-off (tested).
    """
    spec = getattr(apply_fn, "mlp_spec", None)
    if spec is None:
        raise ValueError("structured_ntk needs a network built by p2pntk.kernels.mlp")
    x1 = jnp.asarray(x1)
    same = x2 is None
    x2 = x1 if same else jnp.asarray(x2)
    in1, d1 = _mlp_factors(params, x1, spec)
    in2, d2 = (in1, d1) if same else _mlp_factors(params, x2, spec)
    K = 0.0
    for a1, a2, e1, e2 in zip(in1, in2, d1, d2):
        scalar = spec["W_std"] ** 2 / a1.shape[1] * (a1 @ a2.T) + spec["b_std"] ** 2     # (N1, N2)
        if resolved:
            K = K + scalar[:, None, :, None] * jnp.einsum("icj,kdj->ickd", e1, e2)
        else:
            K = K + scalar * jnp.einsum("icj,kcj->ik", e1, e2) / e1.shape[1]
    return K


def empirical_ntk(apply_fn, params, x1, x2=None, *, resolved: bool = True):
    r"""Empirical NTK :math:`J(x_1) J(x_2)^\top` at ``params``.

    Args:
        apply_fn: ``apply_fn(params, x)`` returning ``(N, C)``.
        params: parameters :math:`\theta_0`.
        x1, x2: inputs ``(N1, d)`` and ``(N2, d)`` (``x2=None`` means ``x1``).
        resolved: ``True`` for the output-resolved kernel ``(N1, C, N2, C)``;
            ``False`` for the shared kernel ``(N1, N2)`` (mean of the diagonal
            output blocks).

    Networks built by :func:`mlp` use :func:`structured_ntk`; any other
    ``apply_fn`` uses neural-tangents (``JACOBIAN_CONTRACTION``).

    Example:
        >>> init_fn, apply_fn, _ = mlp(32, n_out=2)
        >>> _, p = init_fn(jax.random.PRNGKey(0), (-1, 3))
        >>> empirical_ntk(apply_fn, p, jnp.ones((4, 3))).shape
        (4, 2, 4, 2)
    """
    if getattr(apply_fn, "mlp_spec", None) is not None:
        return structured_ntk(apply_fn, params, x1, x2, resolved=resolved)
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=() if resolved else (-1,), implementation=NTK_IMPLEMENTATION)
    K = fn(x1, x2, params)
    return jnp.transpose(K, (0, 2, 1, 3)) if resolved else K


#: Bytes the two Jacobian blocks of one kernel block may take when ``batch_size=None``
#: (:func:`kernel` on a network not built by :func:`mlp`).
BLOCK_MEMORY = 2 ** 30


@contextlib.contextmanager
def float64():
    """Run JAX in float64 inside the block, whatever ``jax_enable_x64`` says outside it.

    Kernels and closed forms are float64 (:func:`kernel`, :func:`p2pntk.prediction.predict`);
    with ``jax_enable_x64`` off JAX would silently compute them in float32, so they run in
    ``jax.experimental.enable_x64()`` and cast their inputs with :func:`as_float64`.

    Example:
        >>> with float64():
        ...     jnp.ones(2).dtype
        dtype('float64')
    """
    from jax.experimental import enable_x64

    with enable_x64():
        yield


def as_float64(tree):
    """Every floating-point leaf of ``tree`` as a float64 JAX array (others unchanged); call it
    inside :func:`float64`, where JAX keeps float64."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree.map(cast, tree)


def check_batch_size(batch_size, name: str = "batch_size"):
    """``None`` or a positive integer, else a ``ValueError`` naming ``name``."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"{name} must be a positive integer (points per kernel block) or None (chosen from "
                         f"the memory bound BLOCK_MEMORY), got {batch_size!r}")
    return None if batch_size is None else int(batch_size)


@functools.lru_cache(maxsize=16)
def _block_fn(apply_fn, resolved, vmap_axes):
    """Jitted ``block(x1, x2, params)``: one block of the empirical NTK, output-resolved
    ``(n1, C, n2, C)`` or shared ``(n1, n2)``."""
    if getattr(apply_fn, "mlp_spec", None) is not None:
        return jax.jit(lambda x1, x2, p: structured_ntk(apply_fn, p, x1, x2, resolved=resolved))
    fn = nt.empirical_ntk_fn(apply_fn, trace_axes=() if resolved else (-1,), vmap_axes=vmap_axes,
                             implementation=NTK_IMPLEMENTATION)
    if resolved:
        return jax.jit(lambda x1, x2, p: jnp.transpose(fn(x1, x2, p), (0, 2, 1, 3)))
    return jax.jit(fn)


def _blocks(block, params, x1, x2, b, symmetric):
    """The kernel of ``x1`` against ``x2`` assembled from ``block`` on tiles of at most ``b``
    points each way, as a float64 NumPy array. Inputs are padded by repeating their last point
    to a multiple of the tile (one compiled shape); with ``symmetric`` (``x1`` is ``x2``) the
    tiles below the diagonal are the transposes of those above."""
    n1, n2 = len(x1), len(x2)
    b1, b2 = min(b, n1), min(b, n2)
    pad = lambda a, t: jnp.concatenate([a, jnp.repeat(a[-1:], -len(a) % t, axis=0)]) if len(a) % t else a
    p1, p2 = pad(x1, b1), pad(x2, b2)
    out = None
    for i in range(0, n1, b1):
        for j in range(i if symmetric else 0, n2, b2):
            t = np.asarray(block(p1[i:i + b1], p2[j:j + b2], params), dtype=np.float64)
            r, c = min(b1, n1 - i), min(b2, n2 - j)
            if t.ndim == 4:                     # output-resolved (b1, C, b2, C)
                if out is None:
                    out = np.empty((n1, t.shape[1], n2, t.shape[3]))
                out[i:i + r, :, j:j + c] = t[:r, :, :c]
                if symmetric and j != i:
                    out[j:j + c, :, i:i + r] = t[:r, :, :c].transpose(2, 3, 0, 1)
            else:                               # shared (b1, b2)
                if out is None:
                    out = np.empty((n1, n2))
                out[i:i + r, j:j + c] = t[:r, :c]
                if symmetric and j != i:
                    out[j:j + c, i:i + r] = t[:r, :c].T
    return out


def kernel(apply_fn, params0, x, x_test=None, *, resolved: bool = True, batch_size: int | None = None,
           vmap_axes=0):
    r"""The empirical NTK blocks :math:`K = J(X)J(X)^\top` and :math:`K_* = J(X_*)J(X)^\top`
    at :math:`\theta_0`, as float64 NumPy arrays, in one call.

    .. math:: K[i, c, j, c'] = \sum_p \frac{\partial f_c(x_i;\theta_0)}{\partial\theta_p}
              \frac{\partial f_{c'}(x_j;\theta_0)}{\partial\theta_p}

    Computed in tiles of ``batch_size`` × ``batch_size`` points (the train block's lower
    tiles are the transposes of its upper ones), so that at most two Jacobian tiles,
    :math:`2\,b\,C\,P` floats, are held at once. Networks built by :func:`mlp` use
    :func:`structured_ntk` (memory :math:`O(N C n)`, one tile by default); any other
    ``apply_fn(params, x) -> (n, C)`` uses neural-tangents' Jacobian contraction with
    ``vmap_axes`` (``0``: the points are independent, one Jacobian per point, measured 17x
    faster than ``None`` for a 512-wide tanh MLP on 400 points; ``None`` for models that mix
    points, e.g. batch normalisation).

    Always float64: with ``jax_enable_x64`` off the computation runs in
    :func:`float64` (``params0`` and the inputs cast), never silently in float32.

    Args:
        apply_fn, params0: the network and :math:`\theta_0`.
        x: (N, ...) training inputs; x_test: optional (N_test, ...) inputs.
        resolved: ``True``: output-resolved ``(N, C, N, C)`` and ``(N_test, C, N, C)``;
            ``False``: shared ``(N, N)`` and ``(N_test, N)`` (the mean of the diagonal output blocks).
        batch_size: points per tile, or ``None``: all points in one tile for :func:`mlp`
            networks, otherwise the largest b with :math:`2bCP\cdot 8` bytes within
            :data:`BLOCK_MEMORY` (1 GiB).
        vmap_axes: neural-tangents' ``vmap_axes`` (not used for :func:`mlp` networks).

    Returns:
        ``(K, K_test)``; ``K_test`` is ``None`` without ``x_test``.

    Example:
        >>> init_fn, apply_fn, _ = mlp(32, n_out=2)
        >>> _, p = init_fn(jax.random.PRNGKey(0), (-1, 3))
        >>> K, Kt = kernel(apply_fn, p, np.ones((5, 3)), np.zeros((2, 3)), batch_size=2)
        >>> K.shape, Kt.shape, K.dtype
        ((5, 2, 5, 2), (2, 2, 5, 2), dtype('float64'))
    """
    batch_size = check_batch_size(batch_size)
    if not isinstance(resolved, (bool, np.bool_)):
        raise ValueError(f"resolved must be True (output-resolved kernel) or False (shared), got {resolved!r}")
    if vmap_axes not in (0, None):
        raise ValueError(f"vmap_axes must be 0 (independent points) or None, got {vmap_axes!r}")
    with float64():
        params = as_float64(params0)
        x = as_float64(x)
        x_test = None if x_test is None else as_float64(x_test)
        for name, a in (("x", x), ("x_test", x_test)):
            if a is not None and (a.ndim < 1 or len(a) == 0):
                raise ValueError(f"{name} must be a non-empty array of points (N, ...), got shape {a.shape}")
        if x_test is not None and x_test.shape[1:] != x.shape[1:]:
            raise ValueError(f"x_test must have points of the shape of x's, {x.shape[1:]}, got {x_test.shape[1:]}")
        block = _block_fn(apply_fn, bool(resolved), vmap_axes)
        if batch_size is None:
            if getattr(apply_fn, "mlp_spec", None) is not None:
                batch_size = max(len(x), 0 if x_test is None else len(x_test))
            else:
                C = int(np.prod(jax.eval_shape(apply_fn, params, x[:1]).shape[1:]))
                P = sum(int(np.size(a)) for a in jax.tree.leaves(params))
                batch_size = int(np.clip(BLOCK_MEMORY // (2 * C * P * 8), 1, len(x)))
        K = _blocks(block, params, x, x, batch_size, symmetric=True)
        K_test = None if x_test is None else _blocks(block, params, x_test, x, batch_size, symmetric=False)
    return K, K_test


def analytic_ntk(kernel_fn, x1, x2=None):
    r"""Infinite-width NTK :math:`\Theta(x_1, x_2)`, shape ``(N1, N2)`` (shared by the outputs)."""
    return kernel_fn(x1, x2, "ntk")


def analytic_ntk_train_test(kernel_fn, x, x_test):
    r"""The analytic NTK blocks :math:`\Theta(X, X)` and :math:`\Theta(X_*, X)` from one call.

    One evaluation of ``kernel_fn`` on the stacked inputs :math:`[X; X_*]` against
    :math:`X`, split into its rows: returns ``(K, K_test)`` of shapes ``(N, N)`` and
    ``(N_*, N)`` as numpy arrays.
    """
    both = np.asarray(analytic_ntk(kernel_fn, jnp.concatenate([x, x_test]), x))
    return both[:len(x)], both[len(x):]


def centred(apply_fn, params0):
    r"""The centred network :math:`g(x;\theta) = f(x;\theta) - f(x;\theta_0)` (Chizat et al., 2019).

    :math:`g` has the Jacobian, the NTK and the parameter dynamics of :math:`f`
    (the subtracted term does not depend on :math:`\theta`), but starts from
    :math:`g(x;\theta_0) = 0`: training :math:`g` on targets :math:`y` is training
    :math:`f` on :math:`y + f(x;\theta_0)`. It removes the random initial
    function — a Gaussian process of variance :math:`O(1)` at any width — from
    every prediction, which otherwise stays in the test outputs as noise.
    ``mlp_spec`` is kept, so :func:`structured_ntk` applies.

    Example:
        >>> init_fn, apply_fn, _ = mlp(8, n_out=2)
        >>> _, p0 = init_fn(jax.random.PRNGKey(0), (-1, 3))
        >>> float(jnp.abs(centred(apply_fn, p0)(p0, jnp.ones((4, 3)))).max())
        0.0
    """
    def g(params, x, **kwargs):
        # theta_0 in the precision of params: a float32 copy starts from g = 0 exactly
        p0 = jax.tree.map(lambda a, b: jnp.asarray(a, dtype=jnp.result_type(b)), params0, params)
        return apply_fn(params, x, **kwargs) - apply_fn(p0, x, **kwargs)

    if hasattr(apply_fn, "mlp_spec"):
        g.mlp_spec = apply_fn.mlp_spec
    return g


def linearize(apply_fn, params0):
    r"""The affine model :math:`f_{\rm lin}(x;\theta) = f(x;\theta_0) + J(x)(\theta-\theta_0)`."""
    return nt.linearize(apply_fn, params0)


def gradient_descent_mse(K_train, y_train, lr: float):
    r"""``neural_tangents.predict.gradient_descent_mse`` (centralised flow, loss :math:`\tfrac1{2NC}\|f-y\|^2`).

    Used as the independent reference for ``Q = 1``: its flow
    :math:`\dot f = -\tfrac{\mathrm{lr}}{NC} K (f - y)` equals ours,
    :math:`\dot f = -\tfrac{\eta}{N} K (f - y)`, for :math:`\mathrm{lr} = \eta C`.
    """
    return nt.predict.gradient_descent_mse(K_train, y_train, learning_rate=lr)
