"""Threads per process: one by default (BLAS and numba), settable.

The count comes from, in order: an explicit ``set_threads(n)`` (``--threads N``),
``$HPC_ES_THREADS``, ``$SLURM_CPUS_PER_TASK`` (what a Slurm job asked for per rank), else 1.
``0`` means one thread per CPU available to the rank (:func:`auto_threads`). Thread variables
the user set (``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ...) are never overwritten.

Environment variables only reach OpenBLAS if they are set before numpy loads it. When numpy
was imported before hpc_es, the count is applied to numpy's OpenBLAS directly
(``openblas_set_num_threads``), unless the user set a BLAS thread variable; likewise numba's
thread count when numba was imported first.
"""
import ctypes
import glob
import os
import sys

_BLAS_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def auto_threads():
    """What ``0`` threads means: the CPUs this process may run on (its affinity mask, which srun
    and most launchers set per rank when they bind), shared among the ranks of this node when
    the launcher announces their number (:data:`hpc_es.launchers.LOCAL_SIZE_VARIABLES`:
    ``$MPI_LOCALNRANKS`` from Hydra, ``$OMPI_COMM_WORLD_LOCAL_SIZE`` from Open MPI); at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    from hpc_es.launchers import LOCAL_SIZE_VARIABLES
    for var in LOCAL_SIZE_VARIABLES:
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return max(1, cpus // int(value))
    return max(1, cpus)


def resolve(value, source):
    """Threads asked for by ``value`` (from ``source``, e.g. "--threads" or "$HPC_ES_THREADS"):
    a positive integer, or 0 for :func:`auto_threads`. Anything else is a ValueError whose
    message names the source and the value."""
    text = str(value).strip()
    if not text.isdigit():
        raise ValueError(f"{source}={value!r}: expected a positive integer, or 0 for one thread per "
                         f"available CPU")
    n = int(text)
    return auto_threads() if n == 0 else n


def environment_threads():
    """(threads, problem): from ``$HPC_ES_THREADS``, else ``$SLURM_CPUS_PER_TASK``, else 1. A
    value that is not a count gives 1 and the problem in words (never an exception, so that
    importing hpc_es cannot fail; the command line reports it, see :func:`check_environment`)."""
    for var in ("HPC_ES_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var)
        if value:
            try:
                return resolve(value, f"${var}"), None
            except ValueError as err:
                return 1, str(err)
    return 1, None


def check_environment():
    """Raise ValueError naming the variable if a thread variable of the environment is bad."""
    problem = environment_threads()[1]
    if problem:
        raise ValueError(problem)


def default_threads():
    """Threads per process from the environment (see module docstring); 1 if it is bad."""
    return environment_threads()[0]


def apply_thread_defaults():
    """Set the BLAS/numba thread variables (unless the user did); reach a loaded OpenBLAS too."""
    user_blas = any(var in os.environ for var in _BLAS_VARS)
    user_numba = "NUMBA_NUM_THREADS" in os.environ
    n = default_threads()
    for var in _BLAS_VARS + ("NUMBA_NUM_THREADS",):
        os.environ.setdefault(var, str(n))
    if "numpy" in sys.modules and not user_blas:
        _openblas_call("set_num_threads", n)
    if "numba" in sys.modules and not user_numba:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def set_threads(n):
    """Use ``n`` threads in this process for BLAS and numba from now on (0: :func:`auto_threads`);
    overrides everything."""
    n = resolve(n, "threads")
    for var in _BLAS_VARS:
        os.environ[var] = str(n)
    if "numpy" in sys.modules:
        _openblas_call("set_num_threads", n)
    if "numba" in sys.modules:
        import numba
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ["NUMBA_NUM_THREADS"] = str(n)


def blas_threads():
    """Threads numpy's OpenBLAS will use now, or None if numpy's BLAS is not OpenBLAS."""
    return _openblas_call("get_num_threads")


def _openblas_call(what, *args):
    """Call ``openblas_<what>`` in the OpenBLAS bundled with numpy (wheel builds); None if absent."""
    import numpy

    here = os.path.dirname(numpy.__file__)
    paths = glob.glob(os.path.join(here, os.pardir, "numpy.libs", "*openblas*")) + \
        glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
    names = [f"scipy_openblas_{what}64_", f"openblas_{what}64_", f"openblas_{what}"]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            fn = getattr(lib, name, None)
            if fn is not None:
                return fn(*[ctypes.c_int(a) for a in args])
    return None
