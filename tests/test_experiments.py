"""Multi-run experiments: Table 1 spread over ranks, statistics, the report."""
import os

import numpy as np
import pytest

from hpc_es import comm, config, data, experiments, io, report


def test_summary_statistics_and_paired_wilcoxon():
    acc = {("a", s): v for s, v in enumerate([0.90, 0.91, 0.92, 0.93, 0.94, 0.95])}
    acc.update({("b", s): v - 0.01 * (s + 1) for s, v in enumerate([0.90, 0.91, 0.92, 0.93, 0.94, 0.95])})
    summary = experiments.summarize(acc, ["a", "b"], 6)
    assert np.isclose(summary["methods"]["a"]["mean"], 0.925)
    assert np.isclose(summary["methods"]["a"]["std"], np.std([0.90, 0.91, 0.92, 0.93, 0.94, 0.95], ddof=1))
    # b is below a in all 6 pairs: the exact two-sided signed-rank p-value is 2 / 2^6.
    assert np.isclose(summary["wilcoxon_p"]["a vs b"], 2 / 64)
    text = report.table1_markdown({**summary, "net": "small", "iterations": 1})
    assert "| a | 92.50% |" in text
    # b's runs are all 0.89, a's 0.90-0.95: 4 runs each (the fewest that can give p < 0.05) suffice
    assert summary["tests"]["a vs b"]["runs_for_power"] == 4 and "| 0.0312 (0.031) | 4 |" in text


@pytest.mark.mpi
def test_table1_runs_every_task_once_across_ranks(mnist_dir, tmp_path):
    world = comm.world()
    out = world.bcast(str(tmp_path), root=0)
    cfg = config.load("sgd_small_local", ["run.iterations=2", "run.eval_every=0"])
    summary = experiments.table1(world, cfg, [0.2], 2, out, dataset=data.load_mnist(mnist_dir))
    runs = sorted(os.listdir(out))
    comm.parallel_assert(world, runs == ["proxy_0.2-seed0", "proxy_0.2-seed1", "sgd-seed0", "sgd-seed1",
                                         "table1.h5"], f"run directories {runs}")
    kind, saved = io.read_summary(os.path.join(out, "table1.h5"))
    comm.parallel_assert(world, kind == "table1" and saved["methods"] == summary["methods"] and
                         len(summary["methods"]["sgd"]["runs"]) == 2, "table1.h5 differs from the summary")
    text = report.report([os.path.join(out, "sgd-seed0", "results.h5")])
    comm.parallel_assert(world, "| sgd-seed0 | small | sgd |" in text, text)
    world.Barrier()
    # run again: every run is kept as it is (resumed: nothing to do), the same summary comes back
    stamps = {r: os.path.getmtime(os.path.join(out, r, "results.h5")) for r in runs if r != "table1.h5"}
    again = experiments.table1(world, cfg, [0.2], 2, out, dataset=data.load_mnist(mnist_dir))
    comm.parallel_assert(world, again["methods"] == summary["methods"], "a second table1 run changed the summary")
    comm.parallel_assert(world, all(os.path.getmtime(os.path.join(out, r, "results.h5")) == t
                                    for r, t in stamps.items()), "a finished run was redone")
    world.Barrier()


def test_paired_curves_measure_likeness(tmp_path):
    a = np.array([0.10, 0.50, 0.70, 0.80, 0.78, 0.85])
    for name, acc in (("es", a), ("proxy", a + 0.01)):
        os.makedirs(tmp_path / name)
        io.save_results(str(tmp_path / name), {"run": {}}, {}, {"eval_iteration": [5, 10, 15, 20, 25, 30],
                                                               "val_accuracy": acc}, np.zeros(3))
    c = report.paired_curves(str(tmp_path / "es" / io.RESULTS), str(tmp_path / "proxy" / io.RESULTS))
    assert c["points"] == 6 and np.isclose(c["curve_correlation"], 1.0) and np.isclose(c["change_correlation"], 1.0)
    assert np.isclose(c["mean_abs_difference"], 0.01)
