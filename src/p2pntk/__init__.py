"""p2pntk: peer-to-peer learning dynamics of wide neural networks.

Modules: :mod:`p2pntk.graphs` (topologies, mixing matrices), :mod:`p2pntk.plotting`
(the book's figure style), :mod:`p2pntk.pipeline` (jupytext → papermill → Jupyter
Book). Only :mod:`p2pntk.kernels` imports ``neural_tangents``.
"""
__version__ = "0.1.0"
