"""The table of runs beside the paper (:mod:`hpc_es.report`)."""
import os

from hpc_es import report


def test_every_run_table_tells_runs_of_the_same_name_apart():
    """Runs in different directories may share a directory name (one per seed, one per set): the
    table names each by its path below the folder that holds them all."""
    paths = [os.path.join("runs", "fig2_tf", f"seed{s}", "proxy_tf_paper", "results.h5") for s in (0, 1)]
    paths += [os.path.join("runs", "local", "fig1_es_seed0", "results.h5")]
    assert report.run_labels(paths) == [os.path.join("fig2_tf", "seed0", "proxy_tf_paper"),
                                        os.path.join("fig2_tf", "seed1", "proxy_tf_paper"),
                                        os.path.join("local", "fig1_es_seed0")]
    assert report.run_labels(paths[2:]) == ["fig1_es_seed0"] and report.run_labels([]) == []
