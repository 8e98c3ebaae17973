"""Driving a job as a separate process: launch it on K ranks, wait for a line of its output,
signal it."""
import os
import signal
import subprocess
import sys
import time

import pytest


def mpiexec(ranks):
    """argv prefix that starts a command on ``ranks`` ranks under this environment's MPI, whichever
    it is, through :mod:`hpc_es.launchers` (its environment for the implementation; more ranks
    than cores allowed; SIGTERM passed on as that launcher needs)."""
    return [sys.executable, "-m", "hpc_es.launchers", "--oversubscribe", "-n", str(ranks)]


def signal_at(cmd, env, marker, sig, timeout=120):
    """Start ``cmd`` (its own session), send ``sig`` once a line of its output contains
    ``marker`` (or at its first line after ``timeout`` s, or when its output ends), and wait for
    it to end; returns (exit code, the output after that line). A job that does not end within
    ``timeout`` s of the signal is killed with its whole session and the test fails."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + timeout
    for line in proc.stdout:
        if marker in line or time.time() > deadline:
            break
    proc.send_signal(sig)
    try:
        rest = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running {timeout} s after {signal.Signals(sig).name}: {' '.join(cmd)}")
    return proc.returncode, rest
