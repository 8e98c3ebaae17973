"""The noise table: a pure function of (seed, size), one copy per node under MPI."""
import hashlib

import numpy as np
import pytest

from hpc_es import comm, noise


def test_table_is_a_pure_function_of_seed_and_size():
    a = noise.build_table(3, noise.CHUNK * 2 + 1000)
    np.testing.assert_array_equal(a, noise.build_table(3, noise.CHUNK * 2 + 1000))
    assert not np.array_equal(a[:1000], noise.build_table(4, 1000))
    # A shorter table with the same seed is a prefix (chunks are independent streams).
    np.testing.assert_array_equal(a[:noise.CHUNK + 17], noise.build_table(3, noise.CHUNK + 17))
    # Any chunk can be built alone.
    alone = np.empty(1000, np.float32)
    noise.fill_chunks(3, 2, 3, alone, noise.CHUNK * 2 + 1000)
    np.testing.assert_array_equal(alone, a[2 * noise.CHUNK:])


def test_table_is_standard_normal():
    t = noise.build_table(0, 4_000_000).astype(np.float64)
    n = t.size
    assert abs(t.mean()) < 5 / np.sqrt(n)                  # 5 standard errors
    assert abs(t.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(t ** 4) - 3) < 5 * np.sqrt(96 / n)  # Var(x^4) = 105 - 9 = 96


def test_offsets_fit_the_table():
    rng = np.random.default_rng(0)
    off = noise.sample_offsets(rng, 10000, 90, 100)
    assert off.min() >= 0 and off.max() <= 10 and len(set(off)) == 11
    with pytest.raises(ValueError, match="shorter than a perturbation"):
        noise.sample_offsets(rng, 1, 101, 100)


def _pss_kib():
    with open("/proc/self/smaps_rollup") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))


@pytest.mark.mpi
def test_shared_table_equals_serial_build_on_every_rank():
    world = comm.world()
    size = 3 * noise.CHUNK + 12345
    shared = comm.shared_noise_table(world, 11, size)
    digest = hashlib.sha256(shared.array.tobytes()).hexdigest()
    serial = hashlib.sha256(noise.build_table(11, size).tobytes()).hexdigest()
    comm.parallel_assert(world, digest == serial, "shared table differs from the serial build")
    shared.free()


def seen_after_write(sync_comm, shared, writer):
    """Collective over ``sync_comm``: the ``writer`` rank(s) set ``shared.array[0]`` to 12345,
    every rank reads it, then the old value is put back. Returns (value read, old value)."""
    first = float(shared.array[0])
    sync_comm.Barrier()
    if writer:
        shared.array[0] = 12345.0
    sync_comm.Barrier()
    seen = float(shared.array[0])
    sync_comm.Barrier()
    if writer:
        shared.array[0] = first
    return seen, first


@pytest.mark.mpi(min_size=2)
def test_one_copy_per_node():
    """A write by node rank 0 is seen by the others (one memory), and each rank's proportional
    set size grows by table/ranks, not by the whole table."""
    world = comm.world()
    node = comm.node_comm(world)
    size = 64 * noise.CHUNK  # 256 MiB
    before = _pss_kib()
    shared = comm.shared_noise_table(world, 5, size)
    shared.array.sum()  # touch every page on every rank
    world.Barrier()
    grew_mib = (_pss_kib() - before) / 1024
    table_mib = size * 4 / 2**20
    expect = table_mib / node.Get_size()
    comm.parallel_assert(world, abs(grew_mib - expect) < 0.25 * expect,
                         f"PSS grew {grew_mib:.0f} MiB, expected about {expect:.0f} (table {table_mib:.0f} MiB)")
    seen, _ = seen_after_write(node, shared, node.Get_rank() == 0)
    comm.parallel_assert(world, seen == 12345.0, "ranks of one node do not share the table memory")
    shared.free()
    node.Free()


@pytest.mark.parametrize("n", [1, 7, 3000])
def test_fft_aggregation_equals_the_direct_sum(n):
    """TableSpectrum against a float64 sum and the direct numba kernel. Float32 FFTs of length
    L err by about eps32 * log2(L) relative to the size of g (rms); duplicates add up."""
    from hpc_es import kernels
    rng = np.random.default_rng(n)
    L, P = 200_003, 5_000  # L prime: not a power of two, so no special fast path hides a bug
    table = noise.build_table(7, L)
    offsets = np.sort(rng.integers(0, L - P + 1, n))
    offsets[-1] = L - P  # the last window ends at the table's last float: no wrap-around may leak in
    if n > 1:
        offsets[0] = offsets[1]  # a repeated offset
    weights = rng.standard_normal(n)
    ref = sum(w * table[o:o + P].astype(np.float64) for o, w in zip(offsets, weights))
    g = noise.TableSpectrum(table).aggregate(offsets, weights, P)
    assert g.dtype == np.float32 and g.shape == (P,)
    rms = np.sqrt(np.mean(ref ** 2))
    bound = np.finfo(np.float32).eps * np.log2(L) * rms
    assert np.sqrt(np.mean((g - ref) ** 2)) < bound
    assert np.abs(g - ref).max() < 6 * bound
    direct = np.empty(P, np.float32)
    kernels.aggregate_dense(table, offsets, weights, direct)
    assert np.abs(g - direct).max() < 6 * bound


def test_fft_aggregation_rejects_windows_outside_the_table():
    spectrum = noise.TableSpectrum(noise.build_table(7, 1000))
    with pytest.raises(ValueError, match=r"offsets must lie in 0..900 .*got 0..901"):
        spectrum.aggregate(np.array([0, 901]), np.ones(2), 100)
    with pytest.raises(ValueError, match="n_out=1001"):
        spectrum.aggregate(np.array([0]), np.ones(1), 1001)
    with pytest.raises(ValueError, match="equal-length"):
        spectrum.aggregate(np.array([0, 1]), np.ones(3), 10)
    with pytest.raises(ValueError, match="float32 vector"):
        noise.TableSpectrum(np.zeros(10))


def test_fft_aggregation_calls_are_independent(monkeypatch):
    """The scatter vector is kept between calls: nothing of one call may reach the next, even
    after a call that failed half-way (here: the FFT running out of memory)."""
    rng = np.random.default_rng(3)
    table = noise.build_table(7, 50_000)
    spectrum = noise.TableSpectrum(table)
    first, second = rng.integers(0, 49_000, 50), rng.integers(0, 49_000, 40)
    spectrum.aggregate(first, rng.standard_normal(50), 1000)

    class NoMemory:
        def rfft(self, x):
            raise MemoryError("no room for the spectrum")

    fft = spectrum._fft
    monkeypatch.setattr(spectrum, "_fft", NoMemory())
    with pytest.raises(MemoryError):
        spectrum.aggregate(first[:20], rng.standard_normal(20), 1000)
    monkeypatch.setattr(spectrum, "_fft", fft)
    w = rng.standard_normal(40)
    np.testing.assert_array_equal(spectrum.aggregate(second, w, 1000),
                                  noise.TableSpectrum(table).aggregate(second, w, 1000))
