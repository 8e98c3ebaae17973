"""Threads per process: one by default (BLAS and numba), settable.

The count comes from, in order: an explicit ``set_threads(n)``, ``$HPC_ES_THREADS``,
``$SLURM_CPUS_PER_TASK`` (what a Slurm job asked for per rank), else 1. Thread variables
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


def default_threads():
    """Threads per process from the environment (see module docstring)."""
    for var in ("HPC_ES_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var)
        if value:
            try:
                n = int(value)
            except ValueError:
                raise ValueError(f"${var}={value!r}: expected a positive integer") from None
            if n < 1:
                raise ValueError(f"${var}={value!r}: expected a positive integer")
            return n
    return 1


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
    """Use ``n`` threads in this process for BLAS and numba from now on; overrides everything."""
    n = int(n)
    if n < 1:
        raise ValueError(f"threads={n}: expected a positive integer")
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
