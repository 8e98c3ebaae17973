"""The run catalogue (:mod:`hpc_es.runs`): one record per run id."""
import numpy as np

from hpc_es import config, io, runs as runs_mod


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
