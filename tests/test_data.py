"""Data: IDX reader on files the test writes, digits, partitions across agents."""
import gzip

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from p2pntk import data


def write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    payload = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    (gzip.open if str(path).endswith(".gz") else open)(path, "wb").write(payload)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int32, 0x0C), (np.float64, 0x0E)])
def test_read_idx_roundtrip(tmp_path, suffix, dtype, code):
    arr = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    write_idx(tmp_path / f"a.idx{suffix}", arr, code)
    out = data.read_idx(tmp_path / f"a.idx{suffix}")
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == dtype


def test_read_idx_rejects_corrupt_and_truncated(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX file"):
        data.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "t", np.zeros((5, 2), np.uint8))
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "t")
    (tmp_path / "h").write_bytes((tmp_path / "t").read_bytes()[:9])   # cut inside the dimensions header
    with pytest.raises(ValueError, match="truncated IDX file \\(header"):
        data.read_idx(tmp_path / "h")


def test_fashion_mnist_reader_on_small_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 30)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    d = data.fashion_mnist(20, 10, folder=tmp_path)
    assert d["x_train"].shape == (20, 784) and d["y_test"].shape == (10, 10)
    np.testing.assert_allclose(np.linalg.norm(d["x_train"], axis=1), np.sqrt(784))  # rows of norm sqrt(d)
    np.testing.assert_allclose(d["y_train"].sum(axis=1), 0, atol=1e-12)
    assert sorted(np.bincount(d["labels_train"])) == [2] * 10  # stratified


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist(10, 10, folder=tmp_path)


def test_load_unknown_dataset():
    with pytest.raises(ValueError, match="allowed: digits, fashion_mnist"):
        data.load("cifar10", 10, 10)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 200), Q=st.integers(1, 12), scheme=st.sampled_from(data.PARTITIONS),
       seed=st.integers(0, 1000))
def test_partition_assigns_every_point_and_every_agent(n, Q, scheme, seed):
    labels = np.random.default_rng(seed).integers(0, 10, n)
    try:
        owner = data.partition(labels, Q, scheme, alpha=1.0, seed=seed)
    except ValueError as err:  # a skewed draw may leave an agent without data: must say so
        assert scheme != "iid" and "without data" in str(err) or "held by no agent" in str(err)
        return
    assert owner.shape == (n,) and owner.min() >= 0 and owner.max() < Q
    assert (np.bincount(owner, minlength=Q) > 0).all()
    if scheme == "iid":
        assert np.ptp(np.bincount(owner, minlength=Q)) <= 1


def test_partition_too_many_agents():
    with pytest.raises(ValueError, match="exceeds the number of training points"):
        data.partition(np.arange(5), 6)
