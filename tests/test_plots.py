"""Figures and the tables beside them (:mod:`hpc_es.plots`), from synthetic results files with known curves."""
import os
import subprocess
import sys

import numpy as np
import pytest

from hpc_es import config, io, plots, runs as runs_mod
from tests.synthetic import write_run


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(4):
        base = np.linspace(0.1, 0.8, 6) + 0.01 * seed
        write_run(tmp_path, f"es{seed}", "corr_small_local", seed, base, rho=0.09)
        write_run(tmp_path, f"sgd{seed}", "sgd_small_local", seed, base + 0.1)
        write_run(tmp_path, f"proxy{seed}", "proxy_small_local", seed, base + rng.normal(0, 0.005, 6))
        write_run(tmp_path, f"lim{seed}", "limited_small_local", seed, base - 0.02)
        write_run(tmp_path, f"nomb{seed}", "es_nominibatch_small_local", seed, base + 0.03)
        write_run(tmp_path, f"mb{seed}", "es_nominibatch_small_local", seed, base + 0.01, overrides=["es.mode=minibatch"])
        write_run(tmp_path, f"l2{seed}", "es_small99_local", seed, base + 0.05)
    write_run(tmp_path, "es0-again", "corr_small_local", 0, np.zeros(5), rho=0.09)  # seed 0 again, shorter: ignored
    return str(tmp_path)


def test_curves_are_median_and_quartiles_across_seeds(results):
    runs = runs_mod.load_runs([results])
    c = runs_mod.curves(runs, 1)
    sgd = c["SGD (Adam) [small]"]
    accs = np.array([np.linspace(0.1, 0.8, 6) + 0.01 * s + 0.1 for s in range(4)])
    assert sgd[4] == 4 and np.array_equal(sgd[0], np.arange(1, 7) * 10)
    np.testing.assert_allclose(sgd[1], np.median(accs, axis=0))
    np.testing.assert_allclose(sgd[2], np.percentile(accs, 25, axis=0))
    np.testing.assert_allclose(sgd[3], np.percentile(accs, 75, axis=0))
    es = c["ES, N = 500 [small]"]
    assert es[4] == 4 and es[2].min() > 0.1  # es0-again (seed 0, fewer iterations) is not counted
    assert set(runs_mod.curves(runs, 3)) == {"ES, N = 500 [small]", "ES, N = 1,000 [small]",
                                          "limited ES, N = 2,500 (buckets <= 500) [small]"}
    assert set(runs_mod.curves(runs, 5)) == {"no-mini-batch ES, N = 1,000, L2 0.0002 [small]"}


def test_figures_draw_the_curves_in_one_colour_per_method_with_plain_legends(results, tmp_path):
    runs = runs_mod.load_runs([results])
    sgd = runs_mod.curves(runs, 1)["SGD (Adam) [small]"]
    colour_of = {}
    for n in plots.FIGURES:
        fig = plots.figure(runs, n)
        ax = fig.axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend and not any("[small]" in t or "median of" in t for t in legend), legend
        caption = " ".join(t.get_text() for t in fig.texts)
        assert "small net" in caption and "median across runs" in caption and "Runs per curve" in caption
        assert ax.get_title().startswith(f"Figure {n}: ") and ax.get_xlabel() == "Iteration"
        for line, text in zip(ax.get_lines(), legend):
            colour_of.setdefault(text, set()).add(line.get_color())
        if n == 1:  # the drawn data are the curves' medians, in percent
            line = ax.get_lines()[legend.index("SGD (Adam)")]
            np.testing.assert_allclose(line.get_xdata(), sgd[0])
            np.testing.assert_allclose(line.get_ydata(), 100 * sgd[1])
        fig.clf()
    assert colour_of["ES, N = 500"] == {plots.COLOURS["es"]}  # in Figs. 1, 2 and 3 alike
    assert colour_of["ES proxy, rho = 9.25%"] == {plots.COLOURS["proxy"]}
    assert colour_of["SGD (Adam)"] == {plots.COLOURS["sgd"]}


def test_a_figure_missing_one_side_says_so_and_files_are_print_quality(results, tmp_path):
    runs = runs_mod.load_runs([results])
    limited_only = [r for r in runs if runs_mod.method_key(r.config) == "limited"]
    assert plots.missing(limited_only, 3) == ["full-perturbation ES"]
    fig = plots.figure(limited_only, 3)
    assert any("Not shown (no such run given): full-perturbation ES" in t.get_text() for t in fig.axes[0].texts)
    paths = plots.draw(runs, 1, str(tmp_path / "fig"))
    import struct
    with open(paths[0], "rb") as f:
        width = struct.unpack(">I", f.read(24)[16:20])[0]
    assert width >= 150 * 7  # 7-inch figure at >= 150 dpi
    only_sgd = [r for r in runs if r.config["run"]["method"] == "sgd"]
    with pytest.raises(ValueError, match="figure 5 .*none of the 4 runs"):
        plots.draw(only_sgd, 5, str(tmp_path / "fig"))


def test_plot_command_writes_beside_the_results_never_into_docs(results, tmp_path):
    cwd = tmp_path / "checkout"
    os.makedirs(cwd / "docs" / "figures")
    proc = subprocess.run([sys.executable, "-m", "hpc_es", "plot", results, "--figure", "3"], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.exists(os.path.join(results, "figures", "figure3.pdf")) and not os.listdir(cwd / "docs" / "figures")
    proc = subprocess.run([sys.executable, "-m", "hpc_es", "plot", results, "--figure", "3", "--out",
                           str(tmp_path / "cli")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and os.path.exists(tmp_path / "cli" / "figure3.png"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "hpc_es", "plot", str(tmp_path / "nothing")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nothing: no such file or directory" in proc.stdout


def test_layers_figure_draws_measured_and_theory_per_layer(tmp_path):
    from hpc_es import cli
    cfg = config.load("corr_small_local").to_dict()
    n = 30
    hist = {"iteration": np.arange(1, n + 1), "eval_iteration": [n], "val_accuracy": [0.5], "seconds_total": np.ones(n)}
    for name, level in (("conv1", 0.3), ("conv2", 0.07), ("fc1", 0.09)):
        hist[f"rho_{name}"] = np.full(n, level)
        hist[f"rho_theory_{name}"] = np.full(n, level * 1.02)
        hist[f"gshare_{name}"] = np.full(n, 1 / 3)
    io.save_results(str(tmp_path / "es"), cfg, {}, hist, np.zeros(4, np.float32))
    write_run(tmp_path, "sgd", "sgd_small_local", 0, np.full(3, 0.9))
    assert cli.main(["plot", "--layers", "--out", str(tmp_path / "fig"), str(tmp_path)]) == 0
    assert (tmp_path / "fig" / "layers_es.png").exists() and not (tmp_path / "fig" / "figure1.png").exists()
    assert cli.main(["plot", "--layers", str(tmp_path / "sgd")]) == 2  # one line: no such run
