"""MNIST: IDX reading (gzipped or not), SHA-256 verification, download, HDF5 cache.

Where the files are looked for, in order: an explicit ``data_dir`` (``--data-dir``), then
``$HPC_ES_DATA``, then the per-user cache ``$XDG_CACHE_HOME/hpc_es/mnist`` (default
``~/.cache/hpc_es/mnist``). In that directory a valid HDF5 cache ``mnist.h5`` wins over the
IDX files ``<name>`` or ``<name>.gz``.

Integrity: the SHA-256 of every *decompressed* IDX file must equal the official value
(the ``.gz`` wrappers differ between mirrors, the contents do not). The HDF5 cache stores
those sums as attributes and is re-verified on every load by hashing its arrays re-encoded
as IDX bytes, so a damaged cache is refused, never used. Every problem raises
:class:`DataError` naming the file, what was expected and what was found; nothing partial
is returned or cached (downloads and caches are written to a temporary name and renamed).
"""
import errno
import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SHAPES = {
    "train_images": (60000, 28, 28),
    "train_labels": (60000,),
    "test_images": (10000, 28, 28),
    "test_labels": (10000,),
}
# IDX magic: 0x00 0x00, dtype 0x08 (uint8), number of dimensions.
MAGIC = {1: 0x00000801, 3: 0x00000803}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
CACHE_NAME = "mnist.h5"
CACHE_SCHEMA = 1


class DataError(Exception):
    """A data file is missing, damaged or not what it should be; the message says which and how."""


@dataclass(frozen=True)
class MNIST:
    """The data set as uint8 images (N, 28, 28) and int64 labels (N,); ``source`` says where from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    def arrays(self):
        return {key: getattr(self, key) for key in FILES}


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "hpc_es", "mnist")


def resolve_data_dir(data_dir=None):
    """The directory to use: ``data_dir``, else ``$HPC_ES_DATA``, else :func:`default_cache_dir`."""
    chosen = data_dir or os.environ.get("HPC_ES_DATA") or default_cache_dir()
    return os.path.abspath(os.path.expanduser(chosen))


def find_file(directory, name):
    """Path of ``name`` or ``name.gz`` in ``directory`` (uncompressed preferred), or None."""
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def load_mnist(data_dir=None, verify=True, download="auto"):
    """Read and verify MNIST from the resolved directory (see module docstring).

    Raises :class:`DataError` if anything is missing or damaged. ``verify=False`` skips
    the SHA-256 check (headers and sizes are still checked); only for experiments on
    modified data. ``download``: True fetches missing files into the directory first;
    "auto" does so only for the per-user cache, i.e. when the user named no directory
    (neither ``data_dir`` nor ``$HPC_ES_DATA``), as a laptop user expects.
    """
    directory = resolve_data_dir(data_dir)
    if download == "auto":
        download = not (data_dir or os.environ.get("HPC_ES_DATA"))
    if download and not _present(directory):
        log.info("MNIST not found in %s: downloading it there", directory)
        fetch(directory)
    cache = os.path.join(directory, CACHE_NAME)
    if os.path.exists(cache):
        try:
            return read_cache(cache, verify=verify)
        except DataError as err:
            if not all(find_file(directory, n) for n in FILES.values()):
                raise
            log.warning("ignoring HDF5 cache: %s; reading the IDX files instead", err)
    if not os.path.isdir(directory):
        raise DataError(f"MNIST directory {directory} does not exist; run `hpc-es data fetch "
                        f"--dest {directory}` or point --data-dir / $HPC_ES_DATA at the files")
    arrays = {}
    for key, name in FILES.items():
        path = find_file(directory, name)
        if path is None:
            raise DataError(f"{os.path.join(directory, name)}: not found (also looked for {name}.gz); "
                            f"run `hpc-es data fetch --dest {directory}` or copy the official file there")
        arrays[key] = read_idx(path, key, verify=verify)
    return MNIST(source=directory, **arrays)


def _present(directory):
    return os.path.exists(os.path.join(directory, CACHE_NAME)) or all(
        find_file(directory, name) for name in FILES.values())


def read_idx(path, key, verify=True):
    """One verified IDX file as a numpy array; ``key`` is one of :data:`FILES`."""
    return parse_idx(_read_bytes(path), key, path, verify)


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (the compressed stream ends early; "
                        f"{len(raw)} bytes on disk)") from None
    except (OSError, zlib.error) as err:
        raise DataError(f"{path}: corrupt gzip data ({err})") from None


def parse_idx(raw, key, path, verify=True):
    """Check the header, size and SHA-256 of decompressed IDX bytes and return the array."""
    shape = SHAPES[key]
    ndim = len(shape)
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, expected at least a {header_len}-byte "
                        f"IDX header")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != MAGIC[ndim]:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected 0x{MAGIC[ndim]:08x} "
                        f"(uint8, {ndim} dimension{'s' if ndim > 1 else ''}) for {key}")
    found = struct.unpack(f">{ndim}I", raw[4:header_len])
    if found != shape:
        raise DataError(f"{path}: header gives shape {found}, expected {shape} for {key}")
    payload = len(raw) - header_len
    expected = int(np.prod(shape))
    if payload != expected:
        what = "truncated" if payload < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: {payload} data bytes after the header, expected {expected}")
    if verify:
        digest = hashlib.sha256(raw).hexdigest()
        if digest != SHA256[key]:
            raise DataError(f"{path}: SHA-256 of the decompressed bytes is {digest}, expected "
                            f"{SHA256[key]} (the official {FILES[key]}); the file is damaged or "
                            f"not the official MNIST")
    array = np.frombuffer(raw, np.uint8, offset=header_len).reshape(shape).copy()
    return array.astype(np.int64) if ndim == 1 else array


def idx_bytes(array):
    """The IDX encoding of a uint8-valued array (header + data), as the official files hold it."""
    header = struct.pack(f">I{array.ndim}I", MAGIC[array.ndim], *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


# ---- HDF5 cache ---------------------------------------------------------------------------
def write_cache(dataset, path):
    """Write ``dataset`` to an HDF5 cache at ``path`` atomically (:func:`hpc_es.io.atomic_write`)."""
    import h5py

    from hpc_es.io import atomic_write

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            f.attrs["schema"] = CACHE_SCHEMA
            f.attrs["format"] = "hpc_es MNIST cache"
            for key, array in dataset.arrays().items():
                f.create_dataset(key, data=array.astype(np.uint8))
                f[key].attrs["sha256"] = hashlib.sha256(idx_bytes(array)).hexdigest()
                f[key].attrs["idx_name"] = FILES[key]

    atomic_write(path, write)


def read_cache(path, verify=True):
    """Read and verify an HDF5 cache written by :func:`write_cache`."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not a readable HDF5 cache ({err}); delete it and run "
                        f"`hpc-es data fetch` to rebuild it") from None
    with f:
        schema = f.attrs.get("schema")
        if schema != CACHE_SCHEMA:
            raise DataError(f"{path}: cache schema version {schema}, this hpc_es reads version "
                            f"{CACHE_SCHEMA}; run `hpc-es data fetch` to rebuild it")
        arrays = {}
        for key in FILES:
            if key not in f:
                raise DataError(f"{path}: dataset '{key}' missing from the cache")
            try:
                array = f[key][()]
            except OSError as err:
                raise DataError(f"{path}: dataset '{key}' cannot be read ({err})") from None
            if array.shape != SHAPES[key] or array.dtype != np.uint8:
                raise DataError(f"{path}: dataset '{key}' is {array.dtype} {array.shape}, "
                                f"expected uint8 {SHAPES[key]}")
            if verify:
                digest = hashlib.sha256(idx_bytes(array)).hexdigest()
                if digest != SHA256[key] or f[key].attrs.get("sha256") != SHA256[key]:
                    raise DataError(f"{path}: dataset '{key}' has SHA-256 {digest} (recorded "
                                    f"{f[key].attrs.get('sha256')}), expected {SHA256[key]}")
            arrays[key] = array.astype(np.int64) if array.ndim == 1 else array
    return MNIST(source=path, **arrays)


# ---- download -----------------------------------------------------------------------------
def fetch(dest=None, mirrors=None, timeout=30.0):
    """Make ``dest`` hold the four verified files and an HDF5 cache; return the cache path.

    Files already in ``dest`` that verify are kept; the others are downloaded from the
    first mirror that serves a file whose decompressed SHA-256 is right. Raises
    :class:`DataError` with instructions when no mirror can be reached (offline machine).
    """
    dest = resolve_data_dir(dest)
    mirrors = MIRRORS if mirrors is None else mirrors
    try:
        os.makedirs(dest, exist_ok=True)
    except OSError as err:
        raise DataError(f"{dest}: cannot create the data directory ({err.strerror})") from None
    arrays = {}
    for key, name in FILES.items():
        path = find_file(dest, name)
        if path is not None:
            try:
                arrays[key] = read_idx(path, key)
                log.info("%s: present and verified", path)
                continue
            except DataError as err:
                log.warning("%s; downloading a fresh copy", err)
        arrays[key] = _download(key, dest, mirrors, timeout)
    cache = os.path.join(dest, CACHE_NAME)
    try:
        write_cache(MNIST(source=dest, **arrays), cache)
    except OSError as err:
        raise DataError(f"{cache}: cannot write the HDF5 cache ({err})") from None
    return cache


def _download(key, dest, mirrors, timeout):
    name = FILES[key] + ".gz"
    errors = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
        except (urllib.error.URLError, OSError, ValueError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(payload)
            array = read_idx(tmp, key)
            os.replace(tmp, os.path.join(dest, name))
            log.info("downloaded %s", url)
            return array
        except DataError as err:
            errors.append(f"{url}: {err}")
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DataError(f"{dest}: disk full while writing {name}") from None
            raise
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise DataError(
        f"could not download {name} from any mirror; this machine looks offline or the "
        f"mirrors are unreachable:\n  " + "\n  ".join(errors) +
        f"\nCopy the four official MNIST files ({', '.join(FILES.values())}, .gz or not) into "
        f"{dest} and run this command again, or point --data-dir / $HPC_ES_DATA at a "
        f"directory that holds them.")
