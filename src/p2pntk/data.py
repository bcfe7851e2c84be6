r"""Classification data as regression on centred one-hot targets, split across agents.

Nothing is downloaded: scikit-learn's handwritten digits (8×8 images, 10
classes) ship with scikit-learn; Fashion-MNIST (28×28, 10 classes) is read as
IDX files from a folder, by default Debian's package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist/``).

Conventions (stated once, used by every chapter):

- inputs: each image flattened, pixel values centred by the training mean and
  each row scaled to Euclidean norm :math:`\sqrt d` (:math:`d` pixels), so that
  :math:`x^\top x'/d` is the cosine similarity of two images and the first-layer
  pre-activations :math:`\frac{\sigma_w}{\sqrt d} w^\top x` of an NTK-parameterised
  network have variance :math:`\sigma_w^2`, the scale NTK theory assumes (with
  rows of norm 1 they would have variance :math:`\sigma_w^2/d` and the bias would
  dominate the first layer);
- targets: one-hot minus :math:`1/C`, :math:`y_{ic} = \mathbb 1[c = \ell_i] - 1/C`
  (zero mean per example), predicted class :math:`\arg\max_c f_c(x)`.
"""
from __future__ import annotations

import numpy as np

import gzip
import os
from pathlib import Path

PARTITIONS = ("iid", "dirichlet", "by_class")
DATASETS = ("digits", "fashion_mnist")
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _normalise(x_train, x_test):
    mean = x_train.mean(axis=0, keepdims=True)
    out = []
    for x in (x_train, x_test):
        x = x - mean
        out.append(x * (np.sqrt(x.shape[1]) / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)))
    return out


def one_hot_targets(labels, n_classes: int) -> np.ndarray:
    r"""Centred one-hot targets :math:`y_{ic} = \mathbb 1[c=\ell_i] - 1/C`, shape (N, C)."""
    return np.eye(n_classes)[labels] - 1.0 / n_classes


def digits(n_train: int = 256, n_test: int = 256, *, seed: int = 0):
    """scikit-learn's handwritten digits, a random class-stratified subset.

    Returns:
        dict with ``x_train`` (n_train, 64), ``y_train`` (n_train, 10), ``labels_train``,
        and the same for ``test``; float64; deterministic for a given ``seed``.

    Example:
        >>> d = digits(50, 20)
        >>> d["x_train"].shape, d["y_train"].shape, round(float(d["y_train"].sum()), 8)
        ((50, 64), (50, 10), 0.0)
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, labels = load_digits(return_X_y=True)
    if n_train + n_test > len(x):
        raise ValueError(f"n_train + n_test must be at most {len(x)} for digits, got {n_train + n_test}")
    xtr, xte, ltr, lte = train_test_split(x.astype(np.float64), labels, train_size=n_train, test_size=n_test,
                                          random_state=seed, stratify=labels)
    xtr, xte = _normalise(xtr, xte)
    return dict(x_train=xtr, y_train=one_hot_targets(ltr, 10), labels_train=ltr,
                x_test=xte, y_test=one_hot_targets(lte, 10), labels_test=lte)


def read_idx(path) -> np.ndarray:
    """Read one IDX file (MNIST format), gzipped (``.gz``) or not.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16,
    0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
    dimension as a big-endian uint32, then the data in C order, big-endian.
    """
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX file (header of {ndim} dimensions needs {4 + 4 * ndim} bytes, "
                         f"file has {len(raw)})")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    size = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - 4 - 4 * ndim != size:
        raise ValueError(f"{path}: truncated or corrupt IDX file ({len(raw) - 4 - 4 * ndim} data bytes, "
                         f"{size} expected for shape {tuple(dims.tolist())})")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_pair(folder: Path, prefix: str):
    out = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for name in (f"{prefix}-{kind}.gz", f"{prefix}-{kind}"):
            if (folder / name).is_file():
                out.append(read_idx(folder / name))
                break
        else:
            raise FileNotFoundError(
                f"{folder / (prefix + '-' + kind)}[.gz] not found. Fashion-MNIST is read from Debian's package "
                f"dataset-fashion-mnist: run `sudo apt-get install dataset-fashion-mnist` (or `make fashion-mnist`), "
                f"or set P2PNTK_FASHION_MNIST to a folder holding the four IDX files")
    return out


def fashion_mnist(n_train: int = 1024, n_test: int = 1000, *, seed: int = 0, folder=None):
    """A random class-stratified subset of Fashion-MNIST (IDX files in ``folder``).

    ``folder`` defaults to ``$P2PNTK_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``.
    Training points come from the official training split, test points from the test split.
    Returns the same dictionary as :func:`digits` (inputs of dimension 784).
    """
    from sklearn.model_selection import train_test_split

    folder = Path(folder or os.environ.get("P2PNTK_FASHION_MNIST", FASHION_MNIST_DIR))
    xtr, ltr = _idx_pair(folder, "train")
    xte, lte = _idx_pair(folder, "t10k")
    for name, x in (("training", xtr), ("test", xte)):
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{folder}: the Fashion-MNIST {name} images contain NaN or inf; "
                             "pixel values must be finite")
    if n_train > len(xtr) or n_test > len(xte):
        raise ValueError(f"n_train={n_train}, n_test={n_test}: Fashion-MNIST has at most {len(xtr)} training "
                         f"and {len(xte)} test points")

    def pick(x, labels, n):
        if n == len(x):
            return x, labels
        _, xs, _, ls = train_test_split(x, labels, test_size=n, random_state=seed, stratify=labels)
        return xs, ls

    xtr, ltr = pick(xtr.reshape(len(xtr), -1).astype(np.float64), ltr.astype(int), n_train)
    xte, lte = pick(xte.reshape(len(xte), -1).astype(np.float64), lte.astype(int), n_test)
    xtr, xte = _normalise(xtr, xte)
    return dict(x_train=xtr, y_train=one_hot_targets(ltr, 10), labels_train=ltr,
                x_test=xte, y_test=one_hot_targets(lte, 10), labels_test=lte)


def from_npz(path, n_train: int | None = None, n_test: int | None = None, *, seed: int = 0):
    r"""A user's data set from an ``.npz`` file, in the package's conventions (see the module docstring).

    The file holds ``x`` (N, ...) inputs and ``y`` (N,) integer class labels 0..C-1, and
    optionally ``x_test`` and ``y_test`` (else ``n_test`` points of ``x`` are held out, class
    stratified). ``n_train``/``n_test`` points are drawn at random (seed ``seed``, class
    stratified) when given, else all are used. Inputs are flattened and normalised like the
    built-in data sets (centred by the training mean, rows scaled to norm :math:`\sqrt d`);
    targets are centred one-hot, :math:`y_{ic} = \mathbb 1[c = \ell_i] - 1/C`.

    Raises ``ValueError`` naming the array for: a missing ``x`` or ``y``, lengths that differ,
    non-integer or negative labels, NaN or inf in an input, too few points.
    Returns the dictionary of :func:`digits`.
    """
    from sklearn.model_selection import train_test_split

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"dataset={str(path)!r}: no such .npz file (a dataset is one of {', '.join(DATASETS)} "
                         "or the path of an .npz file holding x, y and optionally x_test, y_test)")
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing or (("x_test" in arrays) != ("y_test" in arrays)):
        raise ValueError(f"{path}: an .npz data set needs arrays x and y (and optionally both x_test and y_test); "
                         f"it has {', '.join(sorted(arrays)) or 'none'}")
    split = {"": ("x", "y"), "_test": ("x_test", "y_test")}
    parts = {}
    for suffix, (kx, ky) in split.items():
        if kx not in arrays:
            continue
        x, labels = np.asarray(arrays[kx]), np.asarray(arrays[ky])
        if len(x) != len(labels) or labels.ndim != 1:
            raise ValueError(f"{path}: {ky} must be a vector of one label per row of {kx}: {kx} has shape "
                             f"{x.shape}, {ky} has shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
            raise ValueError(f"{path}: {ky} must hold integer class labels 0..C-1, got dtype {labels.dtype}"
                             + (f" and minimum {labels.min()}" if labels.size and np.issubdtype(labels.dtype, np.number) else ""))
        x = x.reshape(len(x), -1).astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: {kx} contains NaN or inf (row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])}); "
                             "inputs must be finite")
        parts[suffix] = (x, labels.astype(int))
    x, labels = parts[""]
    C = int(max(labels.max(), parts.get("_test", parts[""])[1].max())) + 1

    def pick(x, labels, n, what):
        if n is None or n == len(x):
            return x, labels, x[:0], labels[:0]
        if not 1 <= n < len(x):
            raise ValueError(f"{what}={n}: {path} has {len(x)} points for it")
        strat = labels if np.bincount(labels).min(initial=2) >= 2 and n >= C and len(x) - n >= C else None
        a, b, la, lb = train_test_split(x, labels, train_size=n, random_state=seed, stratify=strat)
        return a, la, b, lb

    if "_test" in parts:
        xtr, ltr, _, _ = pick(x, labels, n_train, "n_train")
        xte, lte, _, _ = pick(*parts["_test"], n_test, "n_test")
    else:
        if n_test is None or n_test < 1:
            raise ValueError(f"{path} has no x_test/y_test: give n_test >= 1 points to hold out of x")
        xrest, lrest, xte, lte = pick(x, labels, len(x) - n_test, "len(x) - n_test")
        xtr, ltr, _, _ = pick(xrest, lrest, n_train, "n_train")
    xtr, xte = _normalise(xtr, xte)
    return dict(x_train=xtr, y_train=one_hot_targets(ltr, C), labels_train=ltr,
                x_test=xte, y_test=one_hot_targets(lte, C), labels_test=lte)


def load(name: str, n_train: int, n_test: int, *, seed: int = 0):
    """Load data set ``name``: ``"digits"``, ``"fashion_mnist"`` (see :func:`digits`), or the path of
    a user's ``.npz`` file (:func:`from_npz`)."""
    if str(name).endswith(".npz"):
        return from_npz(name, n_train, n_test, seed=seed)
    if name not in DATASETS:
        raise ValueError(f"unknown data set name={name!r}; allowed: {', '.join(DATASETS)}, or the path of an "
                         ".npz file holding x, y (and optionally x_test, y_test)")
    return (digits if name == "digits" else fashion_mnist)(n_train, n_test, seed=seed)


def partition(labels, n_agents: int, scheme: str = "iid", *, alpha: float = 0.5, classes_per_agent: int = 2,
              seed: int = 0) -> np.ndarray:
    r"""Assign training points to agents; returns ``owner`` (N,) with values 0..Q-1.

    Args:
        labels: (N,) class labels.
        n_agents: :math:`Q`.
        scheme: ``"iid"`` (random split into near-equal parts), ``"dirichlet"``
            (label skew: class proportions of each agent drawn from
            Dirichlet(:math:`\alpha`)), ``"by_class"`` (each agent holds
            ``classes_per_agent`` classes).
        seed: seed of the split.

    Every agent receives at least one point (else ``ValueError``).

    Example:
        >>> np.bincount(partition(np.arange(10) % 2, 3))
        array([4, 3, 3])
    """
    labels = np.asarray(labels)
    N = len(labels)
    if scheme not in PARTITIONS:
        raise ValueError(f"unknown partition scheme={scheme!r}; allowed: {', '.join(PARTITIONS)}")
    if n_agents > N:
        raise ValueError(f"n_agents={n_agents} exceeds the number of training points N={N}: "
                         f"every agent needs at least one point, so n_agents must be at most {N}")
    rng = np.random.default_rng(seed)
    owner = np.empty(N, dtype=int)
    if scheme == "iid":
        perm = rng.permutation(N)
        for q, part in enumerate(np.array_split(perm, n_agents)):
            owner[part] = q
    elif scheme == "dirichlet":
        classes = np.unique(labels)
        props = rng.dirichlet(alpha * np.ones(n_agents), size=len(classes))  # (classes, Q)
        for c, p in zip(classes, props):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for q, part in enumerate(np.split(idx, cuts)):
                owner[part] = q
    else:
        classes = np.unique(labels)
        held = [[classes[(q * classes_per_agent + j) % len(classes)] for j in range(classes_per_agent)]
                for q in range(n_agents)]
        for c in classes:
            holders = [q for q in range(n_agents) if c in held[q]]
            if not holders:
                raise ValueError(f"class {c} held by no agent: increase n_agents or classes_per_agent")
            idx = rng.permutation(np.flatnonzero(labels == c))
            for q, part in zip(holders, np.array_split(idx, len(holders))):
                owner[part] = q
    counts = np.bincount(owner, minlength=n_agents)
    if (counts == 0).any():
        raise ValueError(f"partition {scheme!r} left agents {np.flatnonzero(counts == 0).tolist()} without data; "
                         "use fewer agents, more points or a larger alpha")
    return owner
