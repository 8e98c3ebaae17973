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


def _cli(*args, **env):
    clean = {k: v for k, v in os.environ.items() if "THREADS" not in k and k != "SLURM_CPUS_PER_TASK"}
    return subprocess.run([sys.executable, "-m", "hpc_es", *args], capture_output=True, text=True,
                          env={**clean, **env}, timeout=120)


def test_bad_thread_counts_are_one_line_naming_the_option_exit_2():
    for args, env, culprit in ((("--threads", "-3"), {}, "argument --threads: '-3'"),
                               (("--threads", "x"), {}, "argument --threads: 'x'"),
                               ((), {"HPC_ES_THREADS": "-1"}, "$HPC_ES_THREADS='-1'"),
                               ((), {"SLURM_CPUS_PER_TASK": "x"}, "$SLURM_CPUS_PER_TASK='x'")):
        proc = _cli("train", "sgd_small_local", "--set", "run.iterations=1", *args, **env)
        lines = (proc.stdout + proc.stderr).strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and culprit in lines[0], (args, env, lines)
        assert "expected a positive integer, or 0" in lines[0]


def test_zero_threads_means_every_cpu_available_to_the_rank():
    cpus = len(os.sched_getaffinity(0))
    assert _run(PROBE, HPC_ES_THREADS="0") == [str(cpus), str(cpus)]
    # a launcher that announces 2 ranks on this node: each gets half
    assert _run(PROBE, HPC_ES_THREADS="0", MPI_LOCALNRANKS="2") == [str(max(1, cpus // 2))] * 2
    # as `hpc-es --threads 0` does it: before numba is imported (numba fixes its pool size then)
    code = ("import hpc_es, numpy; from hpc_es.threads import set_threads, blas_threads; "
            "set_threads(0); import numba; print(blas_threads(), numba.get_num_threads())")
    assert _run(code) == [str(cpus), str(cpus)]
