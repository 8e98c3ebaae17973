"""The shared noise table of OpenAI-ES (Salimans et al. 2017, Sec. 2.1 of Zhang et al. 2017).

Content is a pure function of (seed, size): standard normal float32 generated in chunks of
:data:`CHUNK` floats, chunk c drawn by its own generator ``PCG64([seed, c, TABLE_STREAM])``
(the tag keeps these streams apart from the per-iteration streams of :mod:`hpc_es.es`). Any process can
therefore build any chunk, and the table is identical whether one rank builds it all or 500
ranks each build their share (:func:`hpc_es.comm.shared_noise_table`). Tables of different
sizes with one seed agree on their common prefix.

An offspring's perturbation is the view ``table[offset : offset + n_params]``; offsets come
from the iteration's generator (:func:`sample_offsets`), so only the offset, never the P
floats, identifies a perturbation.
"""
import numpy as np

CHUNK = 1 << 20  # floats per independently generated chunk (4 MiB)
TABLE_STREAM = 3  # nonzero: SeedSequence ignores trailing zeros


def n_chunks(size):
    return -(-size // CHUNK)


def fill_chunks(seed, first, last, out, size):
    """Write chunks [first, last) of the table (seed, size) into ``out``, a view of table[first*CHUNK:].

    ``out`` must hold exactly the floats of those chunks (the last chunk may be short).
    """
    expected = min(last * CHUNK, size) - first * CHUNK
    if out.shape != (expected,) or out.dtype != np.float32:
        raise ValueError(f"out: expected float32 ({expected},), got {out.dtype} {out.shape}")
    for c in range(first, last):
        lo = (c - first) * CHUNK
        hi = min(lo + CHUNK, expected)
        rng = np.random.Generator(np.random.PCG64([seed, c, TABLE_STREAM]))
        rng.standard_normal(out=out[lo:hi], dtype=np.float32)


def build_table(seed, size):
    """The whole table, built in this process (serial runs and tests)."""
    table = np.empty(size, np.float32)
    fill_chunks(seed, 0, n_chunks(size), table, size)
    return table


def sample_offsets(rng, count, length, size):
    """``count`` offsets, uniform over the table positions where ``length`` floats fit."""
    if length > size:
        raise ValueError(f"noise table of {size} floats is shorter than a perturbation of {length}")
    return rng.integers(0, size - length + 1, size=count, dtype=np.int64)
