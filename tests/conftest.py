import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Closed-form checks are exact to float64 round-off: the whole suite runs in float64.
jax.config.update("jax_enable_x64", True)

# test modules import the shared problem builders of test_dynamics (pytest's importlib mode
# does not put the tests folder on sys.path)
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
