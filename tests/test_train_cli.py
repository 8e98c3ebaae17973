"""The SGD training loop and the command line, run as a user would."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hpc_es import config, data, es, train


def test_minibatches_are_a_pure_function_of_seed_and_iteration():
    a = es.minibatch(1, 5, 60000, 50)
    assert np.array_equal(a, es.minibatch(1, 5, 60000, 50))
    assert len(set(a)) == 50 and not np.array_equal(a, es.minibatch(1, 6, 60000, 50))


def test_sgd_learns(mnist_dir):
    """60 Adam steps on the small net take test accuracy from chance to well above it."""
    ds = data.load_mnist(mnist_dir)
    cfg = config.load("sgd_small_local", ["run.iterations=60", "run.eval_every=0"])
    theta, history = train.run(cfg, dataset=ds)
    assert np.mean(history["loss"][-10:]) < 0.6 * np.mean(history["loss"][:5])
    assert history["eval_iteration"] == [60] and history["val_accuracy"][-1] > 0.7


def _cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "hpc_es", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_train_smoke(mnist_dir, tmp_path):
    proc = _cli("train", "sgd_small_local", "--set", "run.iterations=3", "--data-dir", mnist_dir,
                "--out", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert "final validation accuracy (10,000 test images):" in proc.stdout and "1 rank," in proc.stdout
    # one name for the accuracy on the 10,000 test images (the paper's "validation accuracy")
    assert "val. accuracy" in proc.stdout and "val_acc" not in proc.stdout and "test accuracy" not in proc.stdout


def test_presets_say_what_each_runs_and_a_typo_gets_a_suggestion():
    proc = _cli("presets")
    assert proc.returncode == 0
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  ")}
    assert "ES, N = 500 on small, 200 iterations" in lines["es_small_local"]
    assert "limited ES, N = 50,000 (buckets <= 5,000) on tf_tutorial" in lines["limited_tf_paper"]
    assert "Table 1" in lines["table1_tf_paper"] and "rho = 20%" in lines["population_tf_paper"]
    proc = _cli("train", "es_smal_local")
    assert proc.returncode == 2 and "did you mean 'es_small_local'" in proc.stdout


def test_cli_errors_are_one_clear_line(tmp_path):
    proc = _cli("train", "sgd_small_local", "--set", "run.iterations=-1")
    assert proc.returncode == 2 and "run.iterations = -1: expected a value in" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = _cli("train", "sgd_small_local", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "train-images-idx3-ubyte: not found" in proc.stdout
    proc = _cli("data", "verify", "--data-dir", str(tmp_path / "none"))
    assert proc.returncode == 2 and "does not exist" in proc.stdout


def _mpiexec_cli(*args):
    from tests.procs import mpiexec
    return subprocess.run([*mpiexec(2), sys.executable, "-m", "mpi4py", "-m", "hpc_es", *args],
                          capture_output=True, text=True, timeout=300)


def test_cli_under_mpiexec_trains_es_and_rejects_bad_input_on_every_rank(mnist_dir, tmp_path):
    out = str(tmp_path / "run")
    proc = _mpiexec_cli("train", "es_small_local", "--set", "es.n_offspring=20", "--set", "run.iterations=3",
                        "--set", "noise.size=100000", "--data-dir", mnist_dir, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("final validation accuracy (10,000 test images):") == 1 and "2 ranks," in proc.stdout
    assert "[1/2]" not in proc.stdout  # rank 1 prints nothing when all is well
    from hpc_es import io
    assert io.read_results(os.path.join(out, io.RESULTS))["ranks"] == 2
    # Another run into the same directory: refused by both ranks, exit 2, no traceback, no hang.
    proc = _mpiexec_cli("train", "es_small_local", "--set", "run.iterations=3", "--data-dir", mnist_dir,
                        "--out", out)
    assert proc.returncode == 2 and "holds another run" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    proc = _mpiexec_cli("train", "es_small_local", "--set", "es.n_offspring=11")
    assert proc.returncode == 2 and proc.stdout.count("es.n_offspring = 11: must be even") == 1


def test_resume_of_a_finished_run_changes_nothing_and_a_real_resume_keeps_the_metadata(mnist_dir, tmp_path):
    from hpc_es import io
    out = str(tmp_path / "run")
    base = ("train", "sgd_small_local", "--set", "run.eval_every=1", "--data-dir", mnist_dir, "--out", out)
    assert _cli(*base, "--set", "run.iterations=3").returncode == 0
    path = os.path.join(out, io.RESULTS)
    before, stamp = open(path, "rb").read(), os.stat(path).st_mtime_ns
    first = io.read_results(path)
    assert first["resumes"] == [] and first["command"].startswith("hpc-es train sgd_small_local")
    proc = _cli(*base, "--set", "run.iterations=3", "--resume")
    assert proc.returncode == 0 and "nothing to do" in proc.stdout, proc.stdout + proc.stderr
    assert "iterations 4..3" not in proc.stdout
    assert open(path, "rb").read() == before and os.stat(path).st_mtime_ns == stamp
    proc = _cli(*base, "--set", "run.iterations=5", "--resume", "auto")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = io.read_results(path)
    assert res["completed_iterations"] == 5 and res["started"] == first["started"] and res["ranks"] == 1
    assert [(r["iteration"], r["ranks"]) for r in res["resumes"]] == [(3, 1)]
    assert "--resume auto" in res["resumes"][0]["command"]
    assert len(first["run_id"]) == 32 and res["run_id"] == first["run_id"]  # the run's identity survives resumes
    # validation starts at theta_0, so every curve starts at iteration 0
    assert list(res["history"]["eval_iteration"]) == [0, 1, 2, 3, 4, 5]
    # a run that reads another records that run's id: a proxy following this run's (fake) rho
    res["history"]["rho"] = np.full(5, 0.1)
    io.save_results(out, res["config"], {"run_id": res["run_id"], "completed_iterations": 5}, res["history"],
                    res["theta"])
    proxy = str(tmp_path / "proxy")
    assert _cli("train", "sgd_small_local", "--set", "run.method=proxy", "--set", f"proxy.rho_from={path}",
                "--set", "run.iterations=2", "--set", "run.eval_every=0", "--data-dir", mnist_dir,
                "--out", proxy).returncode == 0
    assert io.read_results(os.path.join(proxy, io.RESULTS))["rho_from_id"] == first["run_id"]


def test_resume_auto_starts_a_new_run_where_there_is_no_checkpoint(mnist_dir, tmp_path):
    out = str(tmp_path / "fresh")
    proc = _cli("train", "sgd_small_local", "--set", "run.iterations=2", "--data-dir", mnist_dir, "--out", out,
                "--resume", "auto")
    assert proc.returncode == 0 and "resuming" not in proc.stdout, proc.stdout + proc.stderr
    assert "final validation accuracy" in proc.stdout and "1 rank," in proc.stdout


def test_data_errors_under_mpiexec_are_printed_once(tmp_path):
    proc = _mpiexec_cli("train", "es_small_local", "--data-dir", str(tmp_path / "nowhere"), "--out",
                        str(tmp_path / "run"))
    assert proc.returncode == 2 and proc.stdout.count("does not exist") == 1, proc.stdout + proc.stderr
    proc = _mpiexec_cli("train", "es_small_local", "--threads", "-3")
    assert proc.returncode == 2 and (proc.stdout + proc.stderr).count("argument --threads") == 1, proc.stderr


def test_a_run_can_start_from_another_runs_theta(mnist_dir, tmp_path):
    """net.theta_from: the run starts from that theta (its validation at iteration 0 is the
    other run's final one); a missing file is an error naming the key."""
    from hpc_es import comm, io
    ds = data.load_mnist(mnist_dir)
    first = str(tmp_path / "first")
    cfg = config.load("sgd_small_local", ["run.iterations=2", "run.eval_every=0"])
    theta, hist = train.run(cfg, comm.SerialComm(), out=first, dataset=ds, quiet=True)
    cfg = config.load("sgd_small_local", ["run.iterations=1", "run.eval_every=1",
                                          f'net.theta_from="{os.path.join(first, io.RESULTS)}"'])
    _, second = train.run(cfg, comm.SerialComm(), dataset=ds, quiet=True)
    assert second["eval_iteration"][0] == 0 and second["val_accuracy"][0] == hist["val_accuracy"][-1]
    cfg = config.load("sgd_small_local", ['net.theta_from="nowhere.h5"'])
    with pytest.raises(io.RunDirError, match="net.theta_from = nowhere.h5: no such file"):
        train.run(cfg, comm.SerialComm(), dataset=ds, quiet=True)


def test_output_cut_short_by_its_reader_is_no_error():
    """`hpc-es presets | head -1`: the reader closes the pipe early; no traceback, exit 0."""
    proc = subprocess.Popen([sys.executable, "-m", "hpc_es", "presets"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=0)
    proc.stdout.read(1)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and "Traceback" not in err, err


def test_kept_thetas_are_the_thetas_of_shorter_runs_and_name_their_run(mnist_dir, tmp_path):
    """run.keep_theta: theta after iteration 2 of a 3-iteration run is bit for bit the final theta
    of the same run stopped at 2; a run started from it records the source's run id; a bad list
    is refused naming the key."""
    from hpc_es import config, io
    base = ("train", "sgd_small_local", "--set", "run.eval_every=0", "--data-dir", mnist_dir)
    long, short = str(tmp_path / "long"), str(tmp_path / "short")
    assert _cli(*base, "--out", long, "--set", "run.iterations=3", "--set", "run.keep_theta=1,2").returncode == 0
    assert _cli(*base, "--out", short, "--set", "run.iterations=2").returncode == 0
    kept = os.path.join(long, "theta_2.h5")
    assert os.path.exists(os.path.join(long, "theta_1.h5"))
    n = io.read_results(os.path.join(short, io.RESULTS))["theta"].size
    assert np.array_equal(io.load_theta(kept, n), io.read_results(os.path.join(short, io.RESULTS))["theta"])
    after = str(tmp_path / "after")
    assert _cli(*base, "--out", after, "--set", "run.iterations=1", "--set", f"net.theta_from={kept}").returncode == 0
    assert io.read_results(os.path.join(after, io.RESULTS))["theta_from_id"] == io.read_results(
        os.path.join(long, io.RESULTS))["run_id"]
    with pytest.raises(config.ConfigError, match="run.keep_theta = '250,x'"):
        config.load("sgd_small_local", ["run.keep_theta=250,x"])
