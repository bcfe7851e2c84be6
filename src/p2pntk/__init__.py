"""p2pntk: peer-to-peer learning dynamics of wide neural networks.

A lazy facade: ``import p2pntk`` imports nothing heavy; ``p2pntk.simulate``,
``p2pntk.linearized_outputs``, ... (the names of :data:`PUBLIC`) and every module
(``p2pntk.dynamics``, ...) are imported on first use. The layers, bottom to top (a
module imports only from its own layer or below; ``tests/test_layout.py`` checks it):

- bottom: ``paths``, ``checks``, ``graphs``, ``algorithms`` (each algorithm defined
  once), ``metrics``, ``data``;
- closed form (NumPy/SciPy, never JAX): ``coefficients``, ``geometry``, ``stability``,
  ``modes``, ``dynamics``;
- network (JAX; only ``kernels`` imports neural_tangents): ``kernels``,
  ``finite_width``, ``sharding``, ``training``;
- compositions the chapters and users call: ``problems``, ``results``, ``reproduction``,
  ``landscape``, ``prediction`` (:func:`p2pntk.predict`: ``simulate``'s call, predicted),
  ``tuning`` (:func:`p2pntk.tune`: a grid of configurations ranked without training);
- the build: ``plotting``, ``bad_input``, ``pipeline``, ``cli``.

Example:
    >>> import p2pntk
    >>> p2pntk.ALGORITHMS[:4], len(p2pntk.ALGORITHMS)
    (('dgd', 'atc', 'cta', 'centralized'), 10)
"""
import importlib

__version__ = "0.1.0"

#: Modules by layer, bottom first.
LAYERS = {
    "bottom": ("paths", "checks", "graphs", "algorithms", "metrics", "data"),
    "closed_form": ("coefficients", "geometry", "stability", "modes", "dynamics"),
    "network": ("kernels", "finite_width", "sharding", "training"),
    "compositions": ("problems", "results", "reproduction", "landscape", "prediction", "tuning"),
    "build": ("plotting", "bad_input", "pipeline", "cli"),
}
MODULES = tuple(m for layer in LAYERS.values() for m in layer)

#: Public names of the facade -> the module that defines them.
PUBLIC = {
    **dict.fromkeys(("Algorithm", "ALGORITHMS", "PAPER_ALGORITHMS", "SimulationResult", "DynamicsResult"),
                    "algorithms"),
    **dict.fromkeys(("topology", "mixing_matrix", "check_mixing_matrix", "mixing_schedule", "consensus_rate",
                     "spectral_gap", "consensus_errors", "TOPOLOGIES", "RULES"), "graphs"),
    **dict.fromkeys(("relative_error", "loglog_slope", "mse", "mean_loss", "error_rate", "output_disagreement",
                     "movement_error", "agent_losses", "agent_error_rates", "network_loss"), "metrics"),
    **dict.fromkeys(("CoefficientSystem", "traced_kernel"), "coefficients"),
    **dict.fromkeys(("row_space_factor", "row_space_coordinates", "row_space_norms", "parameter_disagreement",
                     "local_gradients", "local_gradients_norm", "centralized_minimizer"), "geometry"),
    **dict.fromkeys(("affine_map", "iteration_matrix", "spectral_radius", "critical_step_size", "step_size_bound",
                     "dgd_step_size_bound", "dgd_critical_step_size", "dgd_fixed_point"), "stability"),
    **dict.fromkeys(("ModeExpansion", "mode_expansion", "dgd_slow_modes", "dgd_threshold_upper_bound"), "modes"),
    **dict.fromkeys(("linearized_outputs", "linearized_sweep", "linearized_flow_outputs", "lazy_limit_errors"),
                    "dynamics"),
    **dict.fromkeys(("mlp", "kernel", "empirical_ntk", "analytic_ntk", "analytic_ntk_train_test", "linearize",
                     "centred"), "kernels"),
    **dict.fromkeys(("fluctuation_constants",), "finite_width"),
    **dict.fromkeys(("agent_mesh", "mixing_plan"), "sharding"),
    **dict.fromkeys(("simulate", "parameters", "flatten_agents", "TRAIN_DTYPES"), "training"),
    **dict.fromkeys(("Problem", "problem", "digits_problem"), "problems"),
    **dict.fromkeys(("cached_run",), "reproduction"),
    **dict.fromkeys(("sweep", "cached_sweep"), "landscape"),
    **dict.fromkeys(("predict",), "prediction"),
    **dict.fromkeys(("tune", "TuneResult"), "tuning"),
}

__all__ = sorted(PUBLIC) + list(MODULES)


def __getattr__(name):
    if name in MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in PUBLIC:
        return getattr(importlib.import_module(f".{PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'p2pntk' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
