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


class TableSpectrum:
    """Aggregation by FFT (the stretch of issue 4): ``g[j] = sum_k w_k table[o_k + j]``, j < n_out,
    in time independent of the number of perturbations.

    g is the cross-correlation of the table with the sparse vector R (``R[o_k] += w_k``, zero
    elsewhere). For every term ``o_k + j < L`` (a perturbation's window lies inside the table),
    so the circular correlation of length L has no wrap-around and equals g on j < n_out:
    ``g = irfft(conj(rfft(R)) * rfft(table))[:n_out]``. The table's spectrum is computed once
    (``L/2 + 1`` complex64, as large as the table); each aggregation then costs one forward and
    one inverse real FFT of length L plus a scatter of the N weights, whatever N. In float32;
    the error is relative to the size of g as a whole, about ``eps32 * log2(L)`` (tested
    against a float64 sum). Memory: the spectrum and a scatter vector, each as large as the
    table, kept; two more table-sized temporaries per call.

    The direct kernel (:func:`hpc_es.kernels.aggregate_dense`) costs N x n_out multiply-adds and
    shards over ranks; this does not shard (every rank would transform the whole table), so it
    pays only for populations far beyond the paper's 10,000 on few ranks:
    ``benchmarks/fft_aggregation.py`` measures the crossover.
    """

    def __init__(self, table):
        table = np.asarray(table)
        if table.ndim != 1 or table.dtype != np.float32 or table.size < 2:
            raise ValueError(f"table: expected a float32 vector of >= 2 floats, got {table.dtype} {table.shape}")
        self.size = table.size
        self._fft = _fft_module()
        self.spectrum = self._fft.rfft(table)
        self._scatter = None  # R, kept between calls (zero but for the last call's offsets, reset after use)

    def aggregate(self, offsets, weights, n_out):
        """g (float32, n_out) = sum_k ``weights[k] * table[offsets[k] : offsets[k] + n_out]``."""
        offsets, weights = np.asarray(offsets), np.asarray(weights)
        if offsets.ndim != 1 or offsets.shape != weights.shape or offsets.dtype.kind not in "iu":
            raise ValueError(f"offsets and weights: expected equal-length 1-D integer offsets and weights, "
                             f"got {offsets.dtype} {offsets.shape} and {weights.dtype} {weights.shape}")
        if not 1 <= n_out <= self.size:
            raise ValueError(f"n_out={n_out}: expected 1..{self.size} (the table's length)")
        if offsets.size and (offsets.min() < 0 or offsets.max() > self.size - n_out):
            raise ValueError(f"offsets must lie in 0..{self.size - n_out} (table {self.size:,} floats, windows "
                             f"of {n_out:,}), got {offsets.min()}..{offsets.max()}")
        if self._scatter is None:
            self._scatter = np.zeros(self.size, np.float32)
        r = self._scatter
        try:
            np.add.at(r, offsets, weights.astype(np.float32))
            spec = self._fft.rfft(r)
        finally:
            r[offsets] = 0.0
        np.conjugate(spec, out=spec)
        spec *= self.spectrum
        return self._fft.irfft(spec, self.size)[:n_out].astype(np.float32)


def _fft_module():
    """scipy.fft where installed (a core dependency; its real FFT of float32 is about twice as
    fast as numpy's here), else numpy.fft (single precision from numpy 2 on, double before)."""
    try:
        import scipy.fft as fft
    except ImportError:
        fft = np.fft
    return fft
