"""The run catalogue (:mod:`hpc_es.runs`): one record per run id."""
import os

import numpy as np
import pytest

from hpc_es import config, io, report, runs as runs_mod
from tests.synthetic import write_run


def test_a_run_given_twice_is_counted_once(tmp_path, caplog):
    """One record per run id: a run, its archive and a copy continued further load as one run,
    the one furthest along, with a warning naming the copies left out; another run of the same
    config (another id) is a run of its own; files of versions without ids get one derived from
    their start stamp and config, the same for each copy."""
    from hpc_es import cli
    def save(path, run_id, done, started="2026-11-28T10:00:00"):
        cfg = config.load("sgd_small_local", ["run.seed=3", "run.iterations=400"]).to_dict()
        meta = {"completed_iterations": done, "started": started, **({"run_id": run_id} if run_id else {})}
        io.save_results(str(path), cfg, meta, {"eval_iteration": [done], "val_accuracy": [0.5 + done / 1000],
                                              "seconds_total": np.ones(done)}, np.zeros(4, np.float32))
    save(tmp_path / "runs" / "a", "id-a", 200)
    assert cli.main(["archive", str(tmp_path / "runs"), "--to", str(tmp_path / "kept")]) == 0
    save(tmp_path / "longer" / "a", "id-a", 400)   # the same run, continued in a copy
    save(tmp_path / "again" / "a", "id-b", 200)    # the same config, run again
    with caplog.at_level("WARNING", logger="hpc_es"):
        loaded = runs_mod.load_runs([str(tmp_path / d) for d in ("runs", "kept", "longer", "again")])
    assert sorted((r.run_id, r.completed) for r in loaded) == [("id-a", 400), ("id-b", 200)]
    assert "2 results file(s) are copies of a run given twice, counted once: " in caplog.text
    assert f"{tmp_path / 'runs' / 'a' / io.RESULTS} (a copy of {tmp_path / 'longer' / 'a' / io.RESULTS})" in caplog.text
    save(tmp_path / "old" / "a", None, 200)  # written before run ids
    assert cli.main(["archive", str(tmp_path / "old"), "--to", str(tmp_path / "old_kept")]) == 0
    old = runs_mod.load_runs([str(tmp_path / "old"), str(tmp_path / "old_kept")])
    assert len(old) == 1 and old[0].run_id.startswith("legacy-")


def test_archive_keeps_what_the_analyses_read_without_theta(tmp_path, capsys):
    """`hpc-es archive` copies results files with their config, metadata and history but no theta,
    keeping the layout below the folder given: the copies load as the same runs (same finals,
    same table), are a fraction of the size, and refuse to serve as a theta, saying why."""
    from hpc_es import cli
    runs = tmp_path / "runs"
    for seed in range(2):
        path = write_run(runs / "sweep", f"seed{seed}", "sgd_small_local", seed, np.linspace(0.5, 0.9, 6))
        big = np.random.default_rng(seed).normal(size=200_000).astype(np.float32)  # incompressible theta
        res = io.read_results(os.path.join(path, io.RESULTS))
        io.save_results(path, res["config"], {"completed_iterations": res["completed_iterations"], "ranks": 2,
                                              "hosts": ["n1", "n2"]}, res["history"], big)
    assert cli.main(["archive", str(runs / "sweep"), "--to", str(tmp_path / "keep")]) == 0
    assert "archived 2 results files without theta" in capsys.readouterr().out
    for seed in range(2):
        src, dst = (os.path.join(d, f"seed{seed}", io.RESULTS) for d in (runs / "sweep", tmp_path / "keep" / "sweep"))
        a, b = io.read_results(src), io.read_results(dst)
        assert a["config"] == b["config"] and a["hosts"] == b["hosts"] == ["n1", "n2"]
        assert b["theta_dropped"] == 200_000 and b["theta"].size == 0
        assert all(np.array_equal(a["history"][k], b["history"][k]) for k in a["history"]) and \
            set(a["history"]) == set(b["history"])
        assert os.path.getsize(dst) < os.path.getsize(src) / 20
        with pytest.raises(io.RunDirError, match="archived copy without its theta"):
            io.load_theta(dst, 200_000)
    before, after = (report.report(runs_mod.find_results([str(d)])).split("\n\n")[0] for d in (runs, tmp_path / "keep"))
    assert before == after  # the same runs, named alike, with the same numbers
    assert cli.main(["archive", str(runs / "sweep" / "seed0"), "--to", str(runs / "sweep")]) == 2  # onto itself
    assert cli.main(["archive", str(runs / "nothing"), "--to", str(tmp_path / "x")]) == 2
