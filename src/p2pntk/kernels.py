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

Kernel layouts used throughout the package:

- *output-resolved*: shape ``(N1, C, N2, C)``, ``K[i, c, j, c']``;
- *shared* (output-traced): shape ``(N1, N2)``, the mean over ``c`` of
  ``K[i, c, j, c]``, standing for :math:`K \otimes I_C`.
"""
from __future__ import annotations

import contextlib
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np


@contextlib.contextmanager
def _native_stderr_silenced():
    """Silence the C++ start-up log lines tensorflow writes to file descriptor 2 when
    neural-tangents imports it (oneDNN notice, "Could not find cuda drivers"):
    TF 2.21 prints them before TF_CPP_MIN_LOG_LEVEL takes effect. Python errors still raise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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
