"""One thread per process by default, settable; checked in fresh interpreters."""
import os
import subprocess
import sys

PROBE = ("import numpy, numba; import hpc_es; from hpc_es.threads import blas_threads; "
         "print(blas_threads(), numba.get_num_threads())")


def _run(code, **env):
    clean = {k: v for k, v in os.environ.items() if "THREADS" not in k and k != "SLURM_CPUS_PER_TASK"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_default_is_one_thread_even_if_numpy_was_imported_first():
    assert _run(PROBE) == ["1", "1"]


def test_hpc_es_threads_and_slurm_cpus_per_task_set_the_count():
    assert _run(PROBE, HPC_ES_THREADS="2") == ["2", "2"]
    assert _run(PROBE, SLURM_CPUS_PER_TASK="2") == ["2", "2"]


def test_user_blas_setting_wins_and_set_threads_overrides():
    assert _run(PROBE, OPENBLAS_NUM_THREADS="2", NUMBA_NUM_THREADS="2") == ["2", "2"]
    code = ("import hpc_es, numpy, numba; from hpc_es.threads import set_threads, blas_threads; "
            "set_threads(2); print(blas_threads(), numba.get_num_threads())")
    assert _run(code, NUMBA_NUM_THREADS="4") == ["2", "2"]
