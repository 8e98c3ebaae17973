"""What differs between MPI implementations (hpc_es.launchers), and hpc_es without an MPI library."""
import json
import os
import subprocess
import sys

from hpc_es import io, launchers

NAMES = {"mpich": "MPICH", "openmpi": "Open MPI", "impi": "Intel(R) MPI"}


def test_the_launcher_is_told_apart_as_the_mpi_library_names_itself():
    """identify() reads the tools beside mpiexec; the library mpi4py loaded names itself."""
    from mpi4py import MPI
    impl = launchers.identify()
    assert impl in launchers.IMPLEMENTATIONS, launchers.find_mpiexec()
    assert MPI.Get_library_version().startswith(NAMES[impl]) or NAMES[impl] in MPI.Get_library_version()


def test_open_mpi_gets_its_variables_and_the_users_own_are_kept():
    base = {"OMPI_MCA_osc": "pt2pt", "PATH": "/bin"}
    env = launchers.environment("openmpi", oversubscribe=True, base=base)
    assert env["OMPI_MCA_osc"] == "pt2pt" and env["PRTE_MCA_rmaps_default_mapping_policy"] == ":oversubscribe"
    assert ("OMPI_ALLOW_RUN_AS_ROOT" in env) == (os.geteuid() == 0)
    assert "PRTE_MCA_rmaps_default_mapping_policy" not in launchers.environment("openmpi", base=base)
    for impl in ("mpich", "impi", "unknown"):
        assert launchers.environment(impl, oversubscribe=True, base=base) == base


def _no_mpi(*args, timeout=120, **env):
    """hpc-es in a process where mpi4py finds no MPI library (as on a cluster before mpi4py is
    rebuilt against the site's MPI): MPI4PY_LIBMPI names a file that does not exist."""
    base = {k: v for k, v in os.environ.items() if k not in launchers.RANK_VARIABLES + launchers.SIZE_VARIABLES}
    env = {**base, "MPI4PY_LIBMPI": os.path.join(os.sep, "nonexistent", "libmpi.so"), **env}
    return subprocess.run([sys.executable, "-m", "hpc_es", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_without_an_mpi_library_the_commands_work_and_train_runs_on_one_process(mnist_dir, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "from mpi4py import MPI"], capture_output=True, text=True,
                           env={**os.environ, "MPI4PY_LIBMPI": "/nonexistent/libmpi.so"}, timeout=60)
    assert "cannot load MPI library" in probe.stderr  # the condition the test stands for
    out = str(tmp_path / "run")
    train = _no_mpi("train", "sgd_small_local", "--set", "run.iterations=2", "--data-dir", mnist_dir, "--out", out)
    assert train.returncode == 0, train.stdout + train.stderr
    assert "no MPI (cannot load MPI library): running on one process with the serial stand-in" in train.stdout
    res = io.read_results(os.path.join(out, io.RESULTS))
    assert res["completed_iterations"] == 2 and res["mpi"].startswith("none (cannot load MPI library)")
    units = tmp_path / "units.json"
    per_unit = dict.fromkeys(("offspring", "sgd_step", "validate_image", "aggregate_float", "adam_float",
                              "proxy_float", "offspring_subset"), 0.0)
    units.write_text(json.dumps({"units": {"tf_tutorial": per_unit, "process_start": 0.0, "data_load": 0.0,
                                           "table_fill_float": 0.0, "write_byte": 0.0, "rss_rank": 0.0}}))
    commands = [("presets",), ("data", "verify", "--data-dir", mnist_dir), ("report", out),
                ("archive", out, "--to", str(tmp_path / "kept")), ("plot", out, "--out", str(tmp_path / "fig")),
                ("dose", out), ("gap", out), ("plan", "es_tf_paper", "--ranks", "100", "--units", str(units))]
    for args in commands:
        proc = _no_mpi(*args)
        text = proc.stdout + proc.stderr
        # gap finds no proxy following an ES run here: its one-line verdict, exit 2, is the answer
        assert proc.returncode == (2 if args[0] == "gap" else 0), f"{args}: {text}"
        assert "Traceback" not in text and "cannot load MPI" not in text, f"{args}: {text}"
    assert os.path.exists(tmp_path / "kept" / "run" / io.RESULTS)


def test_without_an_mpi_library_a_launch_of_several_ranks_stops_with_one_line(tmp_path):
    """Each process of a 2-rank launch would run alone into the same files: both stop, exit 2,
    rank 0 (from the launcher's variables) says why and what to install."""
    lines = []
    for rank in (0, 1):
        proc = _no_mpi("train", "sgd_small_local", "--out", str(tmp_path / "run"), PMI_RANK=str(rank), PMI_SIZE="2")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
        lines.append([line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()])
    assert len(lines[0]) == 1 and not lines[1], lines
    assert ("the launcher started 2 ranks but this Python has no MPI (cannot load MPI library)" in lines[0][0] and
            '".[mpich]", ".[openmpi]", ".[impi]"' in lines[0][0] and "Building mpi4py" in lines[0][0])
    assert not os.path.exists(tmp_path / "run")
