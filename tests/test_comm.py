"""The MPI layer. Tests marked ``mpi`` also run under ``mpiexec -n 2`` (see README)."""
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hpc_es import comm, data, nets, train
from tests.procs import mpiexec


@pytest.fixture(scope="module")
def world():
    w = comm.world()
    yield w
    w.Barrier()


def test_split_range_covers_everything_once():
    for n in (0, 1, 7, 10000):
        for size in (1, 2, 3, 64):
            parts = [comm.split_range(n, r, size) for r in range(size)]
            assert parts[0][0] == 0 and parts[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
            assert max(b - a for a, b in parts) - min(b - a for a, b in parts) <= 1


@pytest.mark.mpi
def test_parallel_assert_raises_on_every_rank(world):
    comm.parallel_assert(world, True, "all fine")
    failing = world.Get_size() - 1
    with pytest.raises(AssertionError, match=rf"failed on ranks \[{failing}\]"):
        comm.parallel_assert(world, world.Get_rank() != failing, "last rank fails")


def load_data_messages(world, data_dir):
    """Collective: every rank loads MNIST from its own ``data_dir`` through train._load_data;
    the DataError message each rank ended with (None if it loaded)."""
    from hpc_es import config, train
    cfg = config.load("sgd_small_local", [f'data.dir="{data_dir}"'])
    try:
        train._load_data(world, cfg)
        message = None
    except data.DataError as err:
        message = str(err)
    return world.allgather(message)


@pytest.mark.mpi(min_size=2)
def test_a_data_directory_missing_on_one_rank_stops_every_rank_with_one_message(world, mnist_dir, tmp_path):
    """Rank 0 loads MNIST, the last rank cannot see the directory (a path visible on the login
    node only): every rank raises the same DataError naming that rank, none waits for ever."""
    missing = world.bcast(str(tmp_path / "not-on-this-node"), root=0)
    last = world.Get_size() - 1
    messages = load_data_messages(world, missing if world.Get_rank() == last else mnist_dir)
    comm.parallel_assert(world, len(set(messages)) == 1 and messages[0] is not None
                         and messages[0].startswith(f"rank {last} on ") and "not-on-this-node" in messages[0],
                         f"ranks ended with {messages}")


@pytest.mark.mpi
def test_from_root_and_every_rank_turn_one_ranks_failure_into_everyones(world):
    """Rank 0 acts for all (from_root), or every rank acts and they agree (every_rank): a
    failure seen on one rank becomes the same error, naming that rank, on every rank."""
    rank, last = world.Get_rank(), world.Get_size() - 1
    assert comm.from_root(world, lambda: rank * 10 + 7, ValueError) == 7
    assert comm.from_root(world, lambda: "mine", ValueError, share=False) == ("mine" if rank == 0 else None)

    def fails_on_root():
        raise ValueError("only rank 0 saw this")

    def preempted():  # every collective error can be rebuilt from its message (a preemption too)
        raise train.Preempted.after(signal.SIGUSR1, 12, "runs/x")

    outcomes = []
    for action in (lambda: comm.from_root(world, fails_on_root, ValueError),
                   lambda: comm.every_rank(world, lambda: 1 / (rank != last), ZeroDivisionError, "(hint)"),
                   lambda: comm.every_rank(world, preempted, train.COLLECTIVE_ERRORS)):
        try:
            action()
            outcomes.append(None)
        except (ValueError, ZeroDivisionError, train.Preempted) as err:
            outcomes.append((type(err).__name__, str(err)))
    seen = world.allgather(outcomes)
    comm.parallel_assert(world, all(o == seen[0] for o in seen), f"ranks disagree: {seen}")
    assert seen[0][0] == ("ValueError", "only rank 0 saw this")
    assert seen[0][1][0] == "ZeroDivisionError" and seen[0][1][1].startswith(f"rank {last} on ")
    assert seen[0][2][0] == "Preempted" and "rank 0 on " in seen[0][2][1]
    assert "received SIGUSR1: checkpoint written after iteration 12 in runs/x" in seen[0][2][1]
    assert seen[0][1][1].endswith("division by zero (hint)")
    assert comm.every_rank(world, lambda: rank, ZeroDivisionError) == rank


@pytest.mark.mpi
def test_accuracy_split_over_ranks_equals_serial(world, mnist_dir):
    """Validation split across ranks and summed gives the serial count exactly."""
    ds = data.load_mnist(mnist_dir)
    net = nets.small()
    theta = net.init_theta(seed=3, scheme="he")
    start, stop = comm.split_range(len(ds.test_labels), world.Get_rank(), world.Get_size())
    mine = net.n_correct(theta, ds.test_images[start:stop], ds.test_labels[start:stop], chunk=250)
    total = comm.sum_int(world, mine)
    serial = net.n_correct(theta, ds.test_images, ds.test_labels, chunk=100)
    comm.parallel_assert(world, total == serial, f"distributed {total} != serial {serial}")


def test_serial_stand_in_gathers_like_mpi():
    s = comm.SerialComm()
    recv = np.empty(3)
    comm.allgatherv(s, np.arange(3.0), recv, np.array([3]))
    assert list(recv) == [0, 1, 2] and s.allgather(5) == [5] and s.Get_size() == 1
    assert comm.sum_int(s, 4) == 4 and comm.max_int(s, 7) == 7


@pytest.mark.mpi
def test_allgatherv_in_place_and_from_a_separate_buffer():
    world = comm.world()
    rank, size = world.Get_rank(), world.Get_size()
    counts = np.array([3 + r for r in range(size)], np.int64)
    lo = int(counts[:rank].sum())
    expect = np.concatenate([np.full(c, r, np.float32) for r, c in enumerate(counts)])
    out = np.full(counts.sum(), -1, np.float32)
    out[lo:lo + counts[rank]] = rank
    comm.allgatherv(world, out[lo:lo + counts[rank]], out, counts)   # in place
    separate = np.empty(counts.sum())
    comm.allgatherv(world, np.full(counts[rank], float(rank)), separate, counts)
    comm.parallel_assert(world, np.array_equal(out, expect) and np.array_equal(separate, expect),
                         "allgatherv assembled the wrong array")


@pytest.mark.parametrize("launch", [["-m", "mpi4py"], []], ids=["python-m-mpi4py", "hpc_es-excepthook"])
def test_one_failing_rank_ends_the_job_instead_of_hanging(launch, tmp_path):
    """Rank 1 raises while rank 0 waits in a Barrier: the job must end non-zero, fast."""
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        from hpc_es import comm
        w = comm.world()
        comm.install_excepthook(w)
        if w.Get_rank() == 1:
            raise RuntimeError("rank 1 fails on purpose")
        w.Barrier()
    """))
    proc = subprocess.run([*mpiexec(2), sys.executable, *launch, str(script)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stdout + proc.stderr


def test_strings_from_mpi_are_cleaned_where_read(monkeypatch, tmp_path):
    """Open MPI's library version ends in a NUL byte, which HDF5's strings refuse: every run
    under Open MPI failed at its first results write until the string was cleaned."""
    from mpi4py import MPI

    from hpc_es import io, text
    open_mpi = "Open MPI v5.0.8, package: Open MPI root@builder Distribution, ident: 5.0.8, repo rev: v5.0.8\x00"
    monkeypatch.setattr(MPI, "Get_library_version", lambda: open_mpi)
    versions = comm.library_versions()
    assert versions["mpi"] == open_mpi[:-1]
    assert text.printable("a\x00b\x07\tc\n") == "ab\tc"
    io.save_results(str(tmp_path), {}, {**versions, "completed_iterations": 0}, {}, np.zeros(3, np.float32))
    assert io.read_results(str(tmp_path / "results.h5"))["mpi"] == open_mpi[:-1]
