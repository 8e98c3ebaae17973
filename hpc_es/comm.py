"""The only MPI layer: world communicator, a serial stand-in, collective asserts, abort-on-error.

Every collective function takes ``comm`` as a parameter (tests pass ``COMM_SELF`` or the
serial stand-in); nothing here holds a module-level communicator. When mpi4py is missing,
:func:`world` returns :class:`SerialComm`, which implements the few methods the package
calls with single-process semantics; so does it when mpi4py is installed but finds no MPI
library to load (a cluster install before mpi4py was rebuilt): the commands that need no MPI
then work as on a laptop, and :func:`check_launch` stops a launch that expects several ranks.
What differs between MPI implementations and launchers is in :mod:`hpc_es.launchers`.
"""
import logging
import os
import socket
import sys
import time
import traceback

import numpy as np

from hpc_es import launchers
from hpc_es.text import printable

log = logging.getLogger(__name__)

SITE_MPI_SECTION = "README, 'Building mpi4py against a cluster's MPI'"
_no_mpi = []  # why MPI could not be loaded, once known (importing mpi4py.MPI is tried once)


class MPIUnavailable(RuntimeError):
    """A launch of several ranks, or a command that needs MPI, without an MPI library to load."""


def world():
    """``MPI.COMM_WORLD``, or a :class:`SerialComm` when mpi4py cannot be imported or cannot
    load an MPI library (see :func:`mpi_missing`)."""
    if _no_mpi:
        return SerialComm()
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as err:  # RuntimeError: "cannot load MPI library"
        _no_mpi.append(printable(str(err)).splitlines()[0] if str(err) else type(err).__name__)
        return SerialComm()
    return MPI.COMM_WORLD


def _mpi():
    """The ``mpi4py.MPI`` module, or None when :func:`world` found none to load."""
    world()  # tries the import once, recording why it failed
    if _no_mpi:
        return None
    from mpi4py import MPI
    return MPI


def mpi_missing():
    """Why MPI is unavailable ("No module named 'mpi4py'", "cannot load MPI library"), or None
    when it loaded (or has not been asked for yet: call after :func:`world`)."""
    return _no_mpi[0] if _no_mpi else None


def check_launch(comm):
    """For commands that use MPI: if ``comm`` is the serial stand-in because MPI could not be
    loaded, raise :class:`MPIUnavailable` (one line) when the launcher started several ranks (each
    would run alone, as rank 0 of 1, into the same files), else log that this one process runs
    on the serial stand-in."""
    reason = mpi_missing()
    if reason is None or not isinstance(comm, SerialComm):
        return
    extras = ", ".join(f'".[{e}]"' for e in launchers.EXTRAS.values())
    size = size_from_environment()
    if size > 1:
        raise MPIUnavailable(f"the launcher started {size} ranks but this Python has no MPI ({reason}): install "
                             f"an MPI wheel with an extra (pip install -e {extras}) or build mpi4py against "
                             f"the site's MPI ({SITE_MPI_SECTION})")
    log.warning("no MPI (%s): running on one process with the serial stand-in (for MPI: pip install -e %s, or "
                "%s)", reason, extras, SITE_MPI_SECTION)


class SerialComm:
    """A one-process communicator with the subset of the mpi4py API that hpc_es uses."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Barrier(self):
        pass

    def Abort(self, errorcode=1):
        sys.exit(errorcode)

    def bcast(self, obj, root=0):
        return obj

    def allgather(self, obj):
        return [obj]

    def allreduce(self, obj, op=None):
        return obj


def split_range(n, rank, size):
    """[start, stop) of rank's share of n items in contiguous, near-equal blocks."""
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def share_counts(n, size):
    """(size,) int64: how many of n items each rank gets from :func:`split_range` (the
    ``counts`` of :func:`allgatherv`)."""
    return np.array([b - a for a, b in (split_range(n, r, size) for r in range(size))], np.int64)


def rank_from_environment():
    """This process's world rank as the launcher announced it, without initialising MPI
    (for messages printed before or without MPI, e.g. a bad command line); 0 if none did."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        return mpi.COMM_WORLD.Get_rank()
    for var in launchers.RANK_VARIABLES:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 0


def size_from_environment():
    """The world size the launcher announced to this process, without initialising MPI; 1 if
    none did."""
    for var in launchers.SIZE_VARIABLES:
        value = os.environ.get(var, "")
        if value.isdigit():
            return int(value)
    return 1


def leave(code):
    """Finalize MPI after an outcome every rank shares (they all call this) and return ``code``
    for the caller's ``sys.exit``.

    ``python -m mpi4py`` turns a non-zero exit of a live MPI into ``MPI_Abort``, which srun
    reports as a cancelled step with killed tasks instead of the code; after ``Finalize`` it lets
    the code through. The process must then leave through a normal interpreter exit: with
    ``os._exit`` MPICH's launcher saw a process vanish and killed the ranks still finishing
    (exit 9 instead of the code, about one job in ten with 3 ranks on 2 cores). The barrier after
    flushing keeps any rank from exiting before rank 0 has printed the outcome: Open MPI's
    launcher kills the whole job as soon as one rank exits non-zero, and without it the user
    saw Open MPI's banner and no message (1 run in 8 of test_train_cli's "printed once" here).
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized() or mpi.COMM_WORLD.Get_size() == 1:
        return code
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    mpi.COMM_WORLD.Barrier()
    mpi.Finalize()
    return code


def library_versions():
    """{"mpi4py": version, "mpi": the MPI library's first version line}; without MPI, "none"
    and why (the serial stand-in ran); cleaned where read (:func:`hpc_es.text.printable`), as
    they go into the run's files."""
    MPI = _mpi()
    if MPI is None:
        import importlib.util
        found = importlib.util.find_spec("mpi4py") is not None
        return {"mpi4py": __import__("mpi4py").__version__ if found else "none",
                "mpi": f"none ({mpi_missing()}): the serial stand-in"}
    import mpi4py
    lines = printable(MPI.Get_library_version()).splitlines() or [""]
    return {"mpi4py": mpi4py.__version__, "mpi": lines[0]}


def hostnames(comm):
    """Collective over ``comm``: the sorted distinct host names of all ranks."""
    return sorted(set(comm.allgather(printable(socket.gethostname()))))


def from_root(comm, action, errors, share=True):
    """Collective over ``comm``: rank 0 calls ``action()`` and broadcasts the outcome; every
    rank returns its value (``share=False``: rank 0 alone, the others None), or raises the same
    error (the type rank 0 caught among ``errors``, rebuilt from its message). For what one
    rank does for all (read the config or a checkpoint, write results): no rank can fail alone
    and leave the others waiting in the next collective."""
    value, problem = None, None
    if comm.Get_rank() == 0:
        try:
            value = action()
        except errors as err:
            problem = (type(err), str(err))
    problem, shared = comm.bcast((problem, value if share else None), root=0)
    if problem:
        raise problem[0](problem[1])
    return shared if share or comm.Get_rank() != 0 else value


def every_rank(comm, attempt, errors, hint=""):
    """Collective over ``comm``: every rank calls ``attempt()``; if any rank raised one of
    ``errors``, every rank raises the same error (the first failing rank's type) naming each
    failing rank, its host and its cause, then ``hint``. Returns this rank's value."""
    value, mine = None, None
    try:
        value = attempt()
    except errors as err:
        mine = (type(err), f"rank {comm.Get_rank()} on {socket.gethostname()}: {err}")
    failures = [f for f in comm.allgather(mine) if f]
    if failures:
        raise failures[0][0]("; ".join(text for _, text in failures) + (f" {hint}" if hint else ""))
    return value


class RankFailure(RuntimeError):
    """A failure that some ranks saw (a bug, memory, a node's file system), now known to every
    rank through an agreement: all raise it alike, so the job ends with one message."""


class StateDrift(RankFailure):
    """The ranks' copies of theta and the optimizer state differ (:mod:`hpc_es.drift`): known to
    every rank through the same gather, raised on all alike."""


def agree(comm, signum, digest):
    """Collective over ``comm``: one small gather per iteration that gives every rank (the
    largest preemption signal number any rank received, 0 for none; every rank's ``digest`` in
    rank order)."""
    if comm.Get_size() == 1:
        return int(signum), [digest]
    pairs = comm.allgather((int(signum), digest))
    return max(sig for sig, _ in pairs), [d for _, d in pairs]


def all_hostnames(comm):
    """Collective over ``comm``: each rank's host name, in rank order (cleaned where read)."""
    return comm.allgather(printable(socket.gethostname()))


def describe_failure(err):
    """One line for an unexpected exception: its type, message and innermost frame."""
    import traceback as tb
    frames = tb.extract_tb(err.__traceback__)
    where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def parallel_assert(comm, condition, message):
    """Collective over ``comm``: raise AssertionError on every rank if any rank's condition is false.

    The message names the failing ranks, so a test fails on all ranks instead of one rank
    raising while the others wait in the next collective.
    """
    flags = comm.allgather(bool(condition))
    failed = [r for r, ok in enumerate(flags) if not ok]
    if failed:
        raise AssertionError(f"{message} (failed on ranks {failed} of {len(flags)})")


def sum_int(comm, value):
    """Collective over ``comm``: the sum of an integer over all ranks."""
    return int(comm.allreduce(int(value)))


def max_int(comm, value):
    """Collective over ``comm``: the maximum of an integer over all ranks."""
    if isinstance(comm, SerialComm) or comm.Get_size() == 1:
        return int(value)
    from mpi4py import MPI
    return int(comm.allreduce(int(value), op=MPI.MAX))


ABORT_GRACE_S = 1.0  # how long a failing rank waits between its traceback and MPI_Abort


def install_excepthook(comm):
    """On an uncaught exception: log rank + traceback, then ``Abort`` so no rank hangs.

    ``python -m mpi4py`` does the same; this covers launches without it. The traceback goes out
    in one write, then the rank waits :data:`ABORT_GRACE_S` before aborting: the launcher's proxy
    forwards a rank's output over a pipe, and an abort drops what it has not forwarded yet (seen
    with MPICH's Hydra on a loaded 2-core machine: the header arrived, the traceback did not).
    """
    if comm.Get_size() == 1:
        return
    previous = sys.excepthook

    def hook(exc_type, exc, tb):
        sys.stderr.write(f"[rank {comm.Get_rank()}/{comm.Get_size()}] uncaught exception, aborting job:\n"
                         + "".join(traceback.format_exception(exc_type, exc, tb)))
        sys.stderr.flush()
        time.sleep(ABORT_GRACE_S)
        try:
            comm.Abort(1)
        finally:
            previous(exc_type, exc, tb)

    sys.excepthook = hook


VIRTUAL_NODES_VARIABLE = "HPC_ES_RANKS_PER_NODE"


def ranks_per_virtual_node():
    """k from ``$HPC_ES_RANKS_PER_NODE`` (a testing aid: see :func:`node_comm`), or None when
    unset; ValueError naming the variable for anything but a positive integer."""
    text = os.environ.get(VIRTUAL_NODES_VARIABLE, "").strip()
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{VIRTUAL_NODES_VARIABLE}={text!r}: expected a positive integer (ranks per virtual "
                         f"node), or unset for the real nodes")
    return int(text)


def node_comm(comm):
    """Collective over ``comm``: the sub-communicator of ranks sharing this node's memory.

    With ``$HPC_ES_RANKS_PER_NODE=k`` (a testing aid) each real node is cut further into
    "virtual nodes" of k consecutive ranks of ``comm`` (rank // k), so one machine runs the
    layout of several nodes: one table copy per virtual node, filled by its own ranks."""
    if isinstance(comm, SerialComm) or comm.Get_size() == 1:
        return comm
    from mpi4py import MPI
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED)
    k = ranks_per_virtual_node()
    if k is None:
        return shared
    virtual = shared.Split(comm.Get_rank() // k, comm.Get_rank())
    shared.Free()
    return virtual


class SharedArray:
    """A float32 array of ``size`` held once per node in an MPI-3 shared window.

    Node rank 0 allocates the memory; every rank of the node maps all of it (``array``).
    ``free()`` (collective over the node) releases it. With one process it is a plain
    numpy array.
    """

    def __init__(self, comm, size):
        self.comm = node_comm(comm)
        self._owns_comm = self.comm is not comm
        self._win = None
        if self.comm.Get_size() == 1:
            self.array = np.empty(size, np.float32)
            return
        from mpi4py import MPI
        itemsize = np.dtype(np.float32).itemsize
        nbytes = size * itemsize if self.comm.Get_rank() == 0 else 0
        self._win = MPI.Win.Allocate_shared(nbytes, itemsize, comm=self.comm)
        buf, _ = self._win.Shared_query(0)
        self.array = np.ndarray(buffer=buf, dtype=np.float32, shape=(size,))

    def free(self):
        """Collective over the node: release the window (the array must not be used after)."""
        if self._win is not None:
            self.array = None
            self._win.Free()
            self._win = None
        if self._owns_comm:
            self.comm.Free()
            self._owns_comm = False


def shared_noise_table(comm, seed, size):
    """Collective over ``comm``: the noise table (seed, size), one copy per node.

    Each rank of a node generates a contiguous range of chunks into the node's shared
    window, then the node synchronises; every rank then reads the whole table through
    ``.array``. Returns the :class:`SharedArray` (keep it alive; ``free()`` at the end). If
    the allocation or the fill fails on any rank (e.g. a node out of memory), every rank
    raises :class:`RankFailure` naming the ranks, hosts and causes (nothing is freed: a
    collective free could wait for a rank that holds no window).
    """
    from hpc_es import faults, noise

    def build():
        shared = SharedArray(comm, size)
        faults.point("table_alloc", 0, comm.Get_rank())
        local = shared.comm
        first, last = split_range(noise.n_chunks(size), local.Get_rank(), local.Get_size())
        lo, hi = first * noise.CHUNK, min(last * noise.CHUNK, size)
        if last > first:
            noise.fill_chunks(seed, first, last, shared.array[lo:hi], size)
        shared.filled = (lo, hi) if last > first else (lo, lo)  # what this rank wrote (tests)
        return shared

    errors = (MemoryError, OSError) + _mpi_exception()
    shared = every_rank(comm, lambda: _as_failure(build, errors), RankFailure,
                        f"(building the noise table of {size * 4 / 2**20:,.0f} MiB per node: fewer ranks per "
                        f"node, or a smaller noise.size, needs less memory)")
    shared.comm.Barrier()
    return shared


def _mpi_exception():
    MPI = _mpi()
    return () if MPI is None else (MPI.Exception,)


def _as_failure(action, errors):
    """``action()``, with ``errors`` turned into :class:`RankFailure` (described in one line)."""
    try:
        return action()
    except errors as err:
        raise RankFailure(describe_failure(err)) from err


def move(comm, array, source, dest, out):
    """Collective in effect (ranks ``source`` and ``dest`` take part, the others return at
    once): ``array`` of rank ``source`` into ``out`` of rank ``dest``, which it returns there
    (``array`` itself when source == dest); None elsewhere."""
    rank = comm.Get_rank()
    if source == dest:
        return array if rank == source else None
    if rank == source:
        comm.Send(array, dest=dest, tag=11)
    elif rank == dest:
        comm.Recv(out, source=source, tag=11)
        return out
    return None


def gatherv(comm, mine, out, counts, root=0):
    """Collective over ``comm``: every rank's ``mine`` concatenated in rank order into ``out`` on
    ``root`` only (``out`` is untouched elsewhere); as :func:`allgatherv` otherwise."""
    if isinstance(comm, SerialComm) or comm.Get_size() == 1:
        if mine.ctypes.data != out.ctypes.data:
            out[:] = mine
        return out
    from mpi4py import MPI
    displs = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=displs[1:])
    mpi_type = {np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.float32): MPI.FLOAT}[out.dtype]
    if comm.Get_rank() != root:
        comm.Gatherv([mine, mpi_type], None, root=root)
    elif mine.ctypes.data == out[int(displs[root]):].ctypes.data:
        comm.Gatherv(MPI.IN_PLACE, [out, (counts, displs), mpi_type], root=root)
    else:
        comm.Gatherv([mine, mpi_type], [out, (counts, displs), mpi_type], root=root)
    return out


def allgatherv(comm, mine, out, counts):
    """Collective over ``comm``: every rank's ``mine`` concatenated in rank order into ``out``.

    ``counts[r]`` is rank r's length; ``out`` has ``counts.sum()`` elements of ``mine``'s
    dtype (float64 rewards, or float32 slices of a gradient). ``mine`` may be a view of
    ``out`` at this rank's place (in-place gather).
    """
    if isinstance(comm, SerialComm) or comm.Get_size() == 1:
        if mine.ctypes.data != out.ctypes.data:
            out[:] = mine
        return out
    from mpi4py import MPI
    displs = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=displs[1:])
    mpi_type = {np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.float32): MPI.FLOAT}[out.dtype]
    lo = int(displs[comm.Get_rank()])
    if mine.ctypes.data == out[lo:].ctypes.data:
        comm.Allgatherv(MPI.IN_PLACE, [out, (counts, displs), mpi_type])
    else:
        comm.Allgatherv([mine, mpi_type], [out, (counts, displs), mpi_type])
    return out
