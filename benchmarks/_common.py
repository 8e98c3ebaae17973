"""Shared plumbing of the benchmark scripts: timing, machine record, JSON output."""
import json
import os
import platform
import socket
import subprocess
import sys
import time

import numpy as np

from hpc_es.costs import time_call  # noqa: F401 (the benchmarks' timer: the cost model's)


def gemm_rate(m, k, n, repeats):
    """GFLOP/s of a float32 (m, k) @ (k, n) product into a preallocated output."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
    c = np.empty((m, n), np.float32)
    reps = max(3, int(repeats * min(1.0, 2e9 / (2 * m * k * n))))
    seconds, _ = time_call(lambda: np.matmul(a, b, out=c), reps)
    return 2 * m * k * n / seconds / 1e9


def machine_record(threads, ranks=1):
    import numba
    import h5py
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        sha = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    from hpc_es.threads import blas_threads
    return {
        "blas_threads_in_effect": blas_threads(), "numba_threads_in_effect": numba.get_num_threads(),
        "host": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(), "ranks": ranks, "threads": threads,
        "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
        "h5py": h5py.__version__, "git_sha": sha, "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(path, record):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {path}")
