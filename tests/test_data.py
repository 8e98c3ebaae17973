"""MNIST loading: real files verify; every kind of damage gives one clear DataError."""
import functools
import gzip
import http.server
import os
import shutil
import struct
import threading

import numpy as np
import pytest

from hpc_es import data


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return data.load_mnist(mnist_dir)


@pytest.fixture
def copy_dir(mnist_dir, tmp_path):
    """A private copy of the four files (gz) that a test may damage."""
    for name in data.FILES.values():
        src = data.find_file(mnist_dir, name)
        assert src, f"{mnist_dir} holds no IDX file {name}(.gz) to copy"
        shutil.copy(src, tmp_path / os.path.basename(src))
    return tmp_path


def _raw(path):
    with open(path, "rb") as f:
        blob = f.read()
    return gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob


def _replace(directory, key, raw, compress=True):
    """Put ``raw`` IDX bytes in place of the file for ``key`` (gzipped or not)."""
    for suffix in ("", ".gz"):
        path = directory / (data.FILES[key] + suffix)
        if path.exists():
            path.unlink()
    path = directory / (data.FILES[key] + (".gz" if compress else ""))
    path.write_bytes(gzip.compress(raw, compresslevel=1) if compress else raw)
    return path


def test_real_files_verify_and_match_known_class_counts(mnist):
    assert mnist.train_images.shape == (60000, 28, 28) and mnist.train_images.dtype == np.uint8
    assert mnist.test_images.shape == (10000, 28, 28)
    # Class counts from the data's README, an independent record of the official files.
    assert list(np.bincount(mnist.train_labels)) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(np.bincount(mnist.test_labels)) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_uncompressed_files_are_read_too(copy_dir, mnist):
    key = "test_labels"
    raw = _raw(data.find_file(copy_dir, data.FILES[key]))
    _replace(copy_dir, key, raw, compress=False)
    np.testing.assert_array_equal(data.load_mnist(copy_dir).test_labels, mnist.test_labels)


def test_directory_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("HPC_ES_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")
    assert data.resolve_data_dir(None) == str(tmp_path / "env")
    monkeypatch.delenv("HPC_ES_DATA")
    assert data.resolve_data_dir(None) == str(tmp_path / "xdg" / "hpc_es" / "mnist")


def test_missing_file(copy_dir):
    os.unlink(data.find_file(copy_dir, data.FILES["train_labels"]))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte: not found.*hpc-es data fetch"):
        data.load_mnist(copy_dir)


def test_missing_directory(tmp_path):
    with pytest.raises(data.DataError, match=r"nowhere does not exist"):
        data.load_mnist(tmp_path / "nowhere")


def test_truncated_gzip(copy_dir):
    path = data.find_file(copy_dir, data.FILES["train_images"])
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte.gz: truncated gzip file"):
        data.load_mnist(copy_dir)


def test_corrupt_gzip(copy_dir):
    path = data.find_file(copy_dir, data.FILES["test_images"])
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2: len(blob) // 2 + 64] = b"\xff" * 64
    open(path, "wb").write(bytes(blob))
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte.gz: corrupt gzip data"):
        data.load_mnist(copy_dir)


def test_truncated_payload(copy_dir):
    raw = _raw(data.find_file(copy_dir, data.FILES["test_images"]))
    _replace(copy_dir, "test_images", raw[:-784], compress=False)
    with pytest.raises(data.DataError, match=r"truncated: 7839216 data bytes after the header, expected 7840000"):
        data.load_mnist(copy_dir)


def test_truncated_header(copy_dir):
    _replace(copy_dir, "test_labels", b"\x00\x00\x08")
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte.gz: truncated: 3 bytes"):
        data.load_mnist(copy_dir)


def test_wrong_magic(copy_dir):
    raw = _raw(data.find_file(copy_dir, data.FILES["train_labels"]))
    _replace(copy_dir, "train_labels", struct.pack(">I", 0x00000803) + raw[4:])
    with pytest.raises(data.DataError, match=r"wrong magic number 0x00000803, expected 0x00000801"):
        data.load_mnist(copy_dir)


def test_wrong_shape(copy_dir):
    raw = _raw(data.find_file(copy_dir, data.FILES["test_images"]))
    header = struct.pack(">IIII", 0x00000803, 9999, 28, 28)
    _replace(copy_dir, "test_images", header + raw[16:16 + 9999 * 784])
    with pytest.raises(data.DataError, match=r"header gives shape \(9999, 28, 28\), expected \(10000, 28, 28\)"):
        data.load_mnist(copy_dir)


def test_checksum_mismatch(copy_dir):
    raw = bytearray(_raw(data.find_file(copy_dir, data.FILES["test_images"])))
    raw[5000] ^= 0x01  # one pixel, one bit: header and size still right
    _replace(copy_dir, "test_images", bytes(raw))
    with pytest.raises(data.DataError, match=r"SHA-256 of the decompressed bytes is [0-9a-f]{64}, expected 0fa7898d"):
        data.load_mnist(copy_dir)
    assert data.load_mnist(copy_dir, verify=False).test_images.shape == (10000, 28, 28)


def test_cache_round_trip_and_damage(copy_dir, mnist):
    path = copy_dir / data.CACHE_NAME
    data.write_cache(mnist, path)
    cached = data.read_cache(path)
    for key, array in mnist.arrays().items():
        np.testing.assert_array_equal(getattr(cached, key), array)
    assert data.load_mnist(copy_dir).source == str(path)
    import h5py
    with h5py.File(path, "r+") as f:
        f["test_labels"][0] = (f["test_labels"][0] + 1) % 10
    with pytest.raises(data.DataError, match=r"dataset 'test_labels' has SHA-256"):
        data.read_cache(path)
    # load_mnist falls back to the verified IDX files beside a damaged cache.
    np.testing.assert_array_equal(data.load_mnist(copy_dir).test_labels, mnist.test_labels)
    with h5py.File(path, "r+") as f:
        f.attrs["schema"] = 99
    with pytest.raises(data.DataError, match=r"cache schema version 99, this hpc_es reads version 1"):
        data.read_cache(path)
    path.write_bytes(b"not hdf5 at all")
    with pytest.raises(data.DataError, match=r"not a readable HDF5 cache"):
        data.read_cache(path)
    for name in data.FILES.values():
        os.unlink(data.find_file(copy_dir, name))
    with pytest.raises(data.DataError, match=r"not a readable HDF5 cache"):
        data.load_mnist(copy_dir)


@pytest.fixture
def mirror(copy_dir):
    """An HTTP server on localhost serving the official .gz names from ``copy_dir``."""
    handler = functools.partial(_QuietHandler, directory=str(copy_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_fetch_downloads_verifies_and_caches(mirror, tmp_path, mnist):
    dest = tmp_path / "dest"
    cache = data.fetch(dest, mirrors=["http://127.0.0.1:9/", mirror], timeout=5)
    assert sorted(os.listdir(dest)) == sorted([n + ".gz" for n in data.FILES.values()] + [data.CACHE_NAME])
    np.testing.assert_array_equal(data.read_cache(cache).train_labels, mnist.train_labels)
    # A second fetch keeps the verified files; a damaged one is replaced.
    (dest / "t10k-labels-idx1-ubyte.gz").write_bytes(b"junk")
    data.fetch(dest, mirrors=[mirror], timeout=5)
    np.testing.assert_array_equal(data.load_mnist(dest).test_labels, mnist.test_labels)


def test_fetch_refuses_a_mirror_serving_damaged_files(mirror, copy_dir, tmp_path):
    raw = bytearray(_raw(data.find_file(copy_dir, data.FILES["train_labels"])))
    raw[100] ^= 1
    _replace(copy_dir, "train_labels", bytes(raw))
    with pytest.raises(data.DataError, match=r"SHA-256 of the decompressed bytes"):
        data.fetch(tmp_path / "dest", mirrors=[mirror], timeout=5)
    assert data.CACHE_NAME not in os.listdir(tmp_path / "dest")
    assert not [n for n in os.listdir(tmp_path / "dest") if n.endswith(".part")]


def test_fetch_offline_says_so(tmp_path):
    with pytest.raises(data.DataError, match=r"(?s)looks offline.*Copy the four official MNIST files"):
        data.fetch(tmp_path / "dest", mirrors=["http://127.0.0.1:9/"], timeout=2)


def test_load_downloads_into_the_user_cache_only_when_no_directory_was_named(mirror, tmp_path, monkeypatch):
    monkeypatch.delenv("HPC_ES_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(data, "MIRRORS", (mirror,))
    ds = data.load_mnist()
    assert ds.source == str(tmp_path / "xdg" / "hpc_es" / "mnist" / data.CACHE_NAME)
    monkeypatch.setenv("HPC_ES_DATA", str(tmp_path / "named"))
    with pytest.raises(data.DataError, match=r"named does not exist"):
        data.load_mnist()
