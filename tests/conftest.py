import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

# Closed-form checks are exact to float64 round-off: the whole suite runs in float64.
jax.config.update("jax_enable_x64", True)
