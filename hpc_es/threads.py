"""Threads per process: one by default (BLAS and numba), settable.

The count comes from, in order: an explicit ``set_threads(n)``, ``$HPC_ES_THREADS``,
``$SLURM_CPUS_PER_TASK`` (what a Slurm job asked for per rank), else 1. Existing
``OMP_NUM_THREADS``-style variables set by the user are never overwritten.
"""
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
    """Set the BLAS/numba thread variables (unless already set) before numpy loads."""
    n = str(default_threads())
    for var in _BLAS_VARS + ("NUMBA_NUM_THREADS",):
        os.environ.setdefault(var, n)


def set_threads(n):
    """Use ``n`` threads in this process for BLAS and numba from now on.

    Returns the previous numba thread count. BLAS is changed through threadpool control
    when numpy is already loaded (OpenBLAS exposes ``openblas_set_num_threads``), else
    through the environment.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"threads={n}: expected a positive integer")
    for var in _BLAS_VARS:
        os.environ[var] = str(n)
    if "numpy" in sys.modules:
        _set_openblas_threads(n)
    import numba
    previous = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return previous


def _set_openblas_threads(n):
    """Best effort: call OpenBLAS's setter inside numpy's bundled library."""
    import ctypes
    import glob
    import numpy

    libdirs = [os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs"),
               os.path.join(os.path.dirname(numpy.__file__), ".dylibs")]
    for libdir in libdirs:
        for path in glob.glob(os.path.join(libdir, "*openblas*")):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_",
                         "openblas_set_num_threads"):
                setter = getattr(lib, name, None)
                if setter is not None:
                    setter(ctypes.c_int(n))
                    return True
    return False
