"""hpc_es: OpenAI-ES vs SGD on MNIST (Zhang, Clune & Stanley 2017), numpy/numba + MPI.

Importing the package pins BLAS and numba to one thread per process unless the user
chose otherwise (``HPC_ES_THREADS`` or the usual ``OMP_NUM_THREADS`` family): under MPI
every rank is a process, and oversubscribed BLAS threads are the most common way an HPC
job loses half its speed. This only takes effect if numpy has not been imported yet;
``hpc_es.threads.set_threads`` changes it later (numba at run time, BLAS via env for
children).
"""
from hpc_es.threads import apply_thread_defaults as _apply_thread_defaults

_apply_thread_defaults()

__version__ = "0.1.0"
