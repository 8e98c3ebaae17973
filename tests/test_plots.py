"""Figures and the reproduction report, from synthetic results files with known curves."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpc_es import config, io, plots, report, runs as runs_mod


def _write(root, name, preset, seed, acc, rho=None, overrides=(), complete=True):
    cfg = config.load(preset, [f"run.seed={seed}", *overrides]).to_dict()
    it = np.arange(1, len(acc) + 1) * 10
    hist = {"eval_iteration": it, "val_accuracy": np.asarray(acc), "seconds_total": np.ones(len(acc) * 10)}
    if rho is not None:
        hist["rho"] = np.full(len(acc) * 10, rho)
        hist["rho_sgd_self"] = np.full(len(acc) * 10, 0.4)
    out = os.path.join(root, name)
    done = cfg["run"]["iterations"] if complete else int(it[-1])  # complete: as if validated at these points only
    io.save_results(out, cfg, {"completed_iterations": done, "ranks": 2}, hist, np.zeros(4, np.float32))
    return out


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(4):
        base = np.linspace(0.1, 0.8, 6) + 0.01 * seed
        _write(tmp_path, f"es{seed}", "corr_small_local", seed, base, rho=0.09)
        _write(tmp_path, f"sgd{seed}", "sgd_small_local", seed, base + 0.1)
        _write(tmp_path, f"proxy{seed}", "proxy_small_local", seed, base + rng.normal(0, 0.005, 6))
        _write(tmp_path, f"lim{seed}", "limited_small_local", seed, base - 0.02)
        _write(tmp_path, f"nomb{seed}", "es_nominibatch_small_local", seed, base + 0.03)
        _write(tmp_path, f"mb{seed}", "es_nominibatch_small_local", seed, base + 0.01, overrides=["es.mode=minibatch"])
        _write(tmp_path, f"l2{seed}", "es_small99_local", seed, base + 0.05)
    _write(tmp_path, "es0-again", "corr_small_local", 0, np.zeros(5), rho=0.09)  # seed 0 again, shorter: ignored
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


def _offspring_only_units():
    """Unit costs where only evaluating an offspring costs anything (10 ms): projections that a
    test can check by hand."""
    from collections import defaultdict
    units = defaultdict(float, {arch: defaultdict(float, offspring=0.01) for arch in ("tf_tutorial", "small")})
    return units


def _free_network():
    from hpc_es import costs
    return costs.Network(allgatherv=(0.0, 0.0), allreduce=(0.0, 0.0), source="free (test)")


def test_reproduction_report_lists_every_claim_and_keeps_hand_notes(results, tmp_path):
    target = tmp_path / "REPRODUCTION.md"
    target.write_text("old\n<!-- notes -->\nmy verdicts\n<!-- /notes -->\n")
    text = report.reproduction([results], _offspring_only_units(), str(target), network=_free_network())
    for claim in ("Mini-batch ES final accuracy", "SGD final accuracy", "rho(g_ES, g_true)", "SGD self-correlation",
                  "ES and its proxy", "Limited vs full", "No-mini-batch vs mini-batch", "L2 2e-4"):
        assert claim in text, claim
    assert "my verdicts" in text and "| `es_tf_paper` | `jobs/slurm/es_tf_paper.sbatch` | 100 | 5 |" in text
    # the preamble says what the files record, not where we think the runs came from
    assert "reproduce_local" not in text and "Runs as their files record them: 29 on 2 ranks." in text
    # es_tf_paper, when only an offspring costs anything (10 ms): 5 runs of 2,000 iterations on 100
    # ranks, each rank evaluating 10,000 / 100 offspring per iteration: 278 core-hours; memory: the
    # 250,000,000-float table and, for each of the 100 ranks (one node), 6 arrays of P floats
    row = next(line for line in text.splitlines() if line.startswith("| `es_tf_paper`"))
    memory = (4 * 250_000_000 + 100 * 6 * 4 * 3_274_634) / 2**30
    assert row.endswith(f"| 0h33m20s | {memory:.1f} GiB | {5 * 2000 * 100 * 0.01 * 100 / 3600:,.0f} |"), row
    assert "| Mini-batch ES final accuracy (Sec. 4) | 96.99%" in text


def test_every_run_table_tells_runs_of_the_same_name_apart():
    """Runs in different directories may share a directory name (one per seed, one per set): the
    table names each by its path below the folder that holds them all."""
    paths = [os.path.join("runs", "fig2_tf", f"seed{s}", "proxy_tf_paper", "results.h5") for s in (0, 1)]
    paths += [os.path.join("runs", "local", "fig1_es_seed0", "results.h5")]
    assert report.run_labels(paths) == [os.path.join("fig2_tf", "seed0", "proxy_tf_paper"),
                                        os.path.join("fig2_tf", "seed1", "proxy_tf_paper"),
                                        os.path.join("local", "fig1_es_seed0")]
    assert report.run_labels(paths[2:]) == ["fig1_es_seed0"] and report.run_labels([]) == []


def test_a_claims_wall_time_is_the_median_run_with_the_spread_when_runs_differ():
    cfg = config.load("es_small_local").to_dict()
    runs = [runs_mod.Run(f"r{i}/results.h5", cfg, {}, t, 2) for i, t in enumerate((250.0, 973.0, 284.0))]
    assert report._setup(runs).endswith(", 2 ranks, 284 s per run (median; 250-973)")
    assert report._setup(runs[:1]).endswith(", 2 ranks, 250 s per run")
    alike = [runs_mod.Run("a/results.h5", cfg, {}, 100.0, 2), runs_mod.Run("b/results.h5", cfg, {}, 105.0, 2)]
    assert report._setup(alike).endswith(" 102 s per run")


def test_limited_runs_are_compared_with_full_runs_trained_alike(results, tmp_path):
    """Fig. 3's comparator differs from the limited runs only in population and perturbation: a
    full-perturbation curve with more seeds but another sigma is not it."""
    for seed in range(6):
        _write(results, f"sigma{seed}", "corr_small_local", seed, np.full(6, 0.5), overrides=["es.sigma=0.01"])
    text = report.reproduction([results], _offspring_only_units(), str(tmp_path / "R.md"), network=_free_network())
    row = next(line for line in text.splitlines() if line.startswith("| Limited vs full"))
    assert "vs full N = 500 81.50% (range 80.00-83.00), 4 runs" in row, row
    # limited {78, 79, 80, 81}% vs full {80, 81, 82, 83}%: of the 16 pairs limited wins 1 and ties 2,
    # so U = 2 and r = 2 U / 16 - 1 = -0.75; 4 vs 4 runs allow p down to 2 / C(8, 4) = 0.0286
    assert "two-sided Mann-Whitney U (rank-sum), 4 vs 4 runs: p = " in row, row
    assert f"(smallest possible {2 / 70:.3g}), rank-biserial r -0.75; 4 vs 4 runs can detect a difference" in row
    assert "secondary: two-sided Wilcoxon signed-rank (paired by seed), 4 pairs: p = 0.125" in row, row
    row4 = next(line for line in text.splitlines() if line.startswith("| No-mini-batch vs mini-batch"))
    assert "can reach the paper's p < 0.05" in row4, row4


def test_dose_response_reads_accuracy_against_rho_with_tests_and_costs(tmp_path, capsys, caplog):
    """Synthetic SGD and proxy runs, 5 seeds each, validated at iterations 10..60: rho = 1% and
    4% lie wholly below SGD (rank-sum p = 2/252, the smallest 5 vs 5 allows), 16% and 64%
    overlap it; the smallest rho not significantly below SGD is then 16%. A 40%-proxy run
    without a validation at iteration 40 is left out, not read at another iteration."""
    from hpc_es import cli, dose
    rng = np.random.default_rng(3)
    level = {0.01: 0.80, 0.04: 0.90, 0.16: 0.97, 0.64: 0.975}
    for seed in range(5):
        _write(tmp_path, f"sgd{seed}", "sgd_small_local", seed, np.full(6, 0.97) + rng.normal(0, 0.004, 6))
        for rho, acc in level.items():
            _write(tmp_path, f"p{rho}-{seed}", "proxy_small_local", seed, np.full(6, acc) + rng.normal(0, 0.004, 6),
                   overrides=[f"proxy.rho={rho}"])
    _write(tmp_path, "short", "proxy_small_local", 0, np.full(3, 0.5), overrides=["proxy.rho=0.4"])
    runs = runs_mod.load_runs([str(tmp_path)])
    selected, skipped = dose.select(runs, 40)
    groups = dose.collect(selected)
    assert skipped == 1 and list(groups) == [("small", ())] and groups[("small", ())][0] == 40
    arms = groups[("small", ())][1]
    s = dose.summarize(arms)
    assert [r["rho"] for r in s["rhos"]] == [0.01, 0.04, 0.16, 0.64]
    assert [r["below_sgd"] for r in s["rhos"]] == [True, True, False, False]
    assert np.isclose(s["rhos"][0]["test"]["p"], 2 / 252) and s["smallest_rho"] == 0.16 and s["could_reach"]
    # between arms: each against the next smaller by default; 4% wholly above 1% (p = 2/252, r = +1)
    assert [(b["low"], b["high"]) for b in s["between"]] == [(0.01, 0.04), (0.04, 0.16), (0.16, 0.64)]
    assert np.isclose(s["between"][0]["test"]["p"], 2 / 252) and s["between"][0]["test"]["effect"][1] == 1.0
    chosen = dose.summarize(arms, pairs=[(0.64, 0.0100000001), (0.04, 0.3)])["between"]
    assert [(b["low"], b["high"]) for b in chosen] == [(0.01, 0.64)]  # 0.3 has no arm: left out
    n, hours = dose.es_cost(0.2, "tf_tutorial", 2000, _units())
    assert n == 2 * int(np.ceil(0.04 * 3274635 / 0.96)) and hours > 0
    assert cli.main([*"dose --at 40 --pair 0.01,0.16 --out".split(), str(tmp_path / "fig"), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 16% against 1% | " in out and "| 4% against 1% |" not in out
    assert "Smallest rho not significantly below SGD (two-sided rank-sum" in out and ": 16%." in out
    assert (tmp_path / "fig" / "dose_response_small.png").exists() and (tmp_path / "fig" / "dose_response.json").exists()
    assert (tmp_path / "fig" / "dose_curves_small.png").exists()
    # the mean of the last 3 validations up to 40 (iterations 20, 30, 40), and how often 5 vs 5 give p >= 0.75
    one = next(r for r in runs if r.config["run"]["method"] == "sgd" and r.seed == 2)
    assert np.isclose(dose.endpoint(one, 40, 3), np.mean(one.history["val_accuracy"][1:4]))
    assert cli.main([*"dose --at 40 --window 3 --paper-p 0.75 --pair 0.01,0.04 --out".split(), str(tmp_path / "w"),
                     str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mean validation accuracy over the 3 validations ending at iteration 40" in out
    assert "| 4% against 1% | " in out and "| 0.0% (5 vs 5) |" in out  # 10 sd apart: never p >= 0.75
    # another group (other learning rate) validated to iteration 20 only: without --at, each group is
    # read at the last iteration all its own runs reached (small: 30, where the 40%-proxy run ends)
    for seed in range(2):
        _write(tmp_path / "lr", f"sgd{seed}", "sgd_small_local", seed, [0.5, 0.6], overrides=["optim.lr=0.5"])
    each = dose.collect(dose.select(runs_mod.load_runs([str(tmp_path)]))[0])
    assert each[("small", ())][0] == 30 and [at for key, (at, _) in each.items() if key[1]] == [20]
    # per-unit costs for tf_tutorial in one file, the small net's in another: each net priced from its
    # file (tf_tutorial's N for 1%: 2 ceil((P + 1) 1e-4 / (1 - 1e-4)) = 656); one file alone names the
    # unpriced net; a file with costs for no net is refused, naming it
    both, machine = _units(), {k: v for k, v in _units().items() if not isinstance(v, dict)}
    for name, nets_in in (("tf.json", ["tf_tutorial"]), ("small.json", ["small"]), ("none.json", [])):
        with open(tmp_path / name, "w") as f:
            json.dump({"units": {**machine, **{n: both[n] for n in nets_in}}}, f)
    base = ["dose", "--at", "40", "--out", str(tmp_path / "u"), str(tmp_path)]
    assert cli.main(base + ["--units", str(tmp_path / "tf.json"), "--units", str(tmp_path / "small.json")]) == 0
    out = capsys.readouterr().out
    assert "ES N on small (theory)" in out and "| 656 |" in out and "No per-unit costs" not in out
    assert cli.main(base + ["--units", str(tmp_path / "tf.json")]) == 0
    out = capsys.readouterr().out
    assert "ES N on small" not in out and "No per-unit costs given for small: not priced" in out
    assert cli.main(base + ["--units", str(tmp_path / "none.json")]) == 2
    assert "none.json: per-unit costs for none of the nets tf_tutorial, small" in caplog.text
    x, med, q25, q75, n = dose.curves(selected)[("small", ())][0.16]  # the curves up to the iteration read
    accs = [r.history["val_accuracy"][:4] for r in runs if r.config["proxy"]["rho"] == 0.16
            and r.config["run"]["method"] == "proxy"]
    assert list(x) == [10, 20, 30, 40] and n == 5 and np.allclose(med, np.median(accs, axis=0))
    assert np.allclose(q25, np.percentile(accs, 25, axis=0)) and np.allclose(q75, np.percentile(accs, 75, axis=0))
    two = dose.summarize({"sgd": {0: 0.9, 1: 0.91}, 0.01: {0: 0.1, 1: 0.2}})  # 2 vs 2: min p = 1/3
    assert not two["could_reach"] and "cannot reach p < 0.05" in dose.markdown(("small", ()), 40, two)
    # without SGD runs (Fig. 3 as proxies): the rho arms against each other only, table, figure and JSON
    for path in tmp_path.glob("sgd*"):
        for f in path.iterdir():
            f.unlink()
        path.rmdir()
    assert cli.main([*"dose --at 40 --pair 0.01,0.04 --out".split(), str(tmp_path / "nosgd"), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| SGD |" not in out and "No SGD runs trained alike" in out and "| 4% against 1% | " in out
    assert "| proxy, rho = 1% | 5 | " in out and "no SGD runs | - |" in out
    assert (tmp_path / "nosgd" / "dose_response_small.png").exists()
    alone = dose.summarize({0.01: {0: 0.1, 1: 0.2}, 0.04: {0: 0.3, 1: 0.4}})
    assert alone["sgd"] is None and alone["smallest_rho"] is None and not alone["could_reach"]  # 2 vs 2
    with pytest.raises(ValueError, match="one proxy arm and no SGD"):
        dose.summarize({0.01: {0: 0.1}})


def _units():
    """Per-unit costs of a plausible machine (seconds), enough for costs.predict on both nets."""
    per_net = {"offspring": 0.03, "offspring_subset": 0.03, "aggregate_float": 2e-10, "adam_float": 3e-9,
               "proxy_float": 1e-8, "sgd_step": 0.08, "validate_image": 1e-4}
    return {"tf_tutorial": per_net, "small": dict(per_net), "table_fill_float": 4e-9, "process_start": 1.0,
            "data_load": 1.0, "write_byte": 1e-9, "rss_rank": 3e8}


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
    _write(tmp_path, "sgd", "sgd_small_local", 0, np.full(3, 0.9))
    assert cli.main(["plot", "--layers", "--out", str(tmp_path / "fig"), str(tmp_path)]) == 0
    assert (tmp_path / "fig" / "layers_es.png").exists() and not (tmp_path / "fig" / "figure1.png").exists()
    assert cli.main(["plot", "--layers", str(tmp_path / "sgd")]) == 2  # one line: no such run


def test_proxy_gap_finds_the_sigma_where_the_proxy_stops_predicting_es(tmp_path, capsys):
    """ES at three sigmas, 3 seeds each (final accuracies 0.80 +- 0.01 across seeds), each with a
    proxy following its file: within 0.2 points of ES at sigma 0.002 and 0.02, 5 points above
    at 0.2. The proxy then predicts ES up to 0.02 and stops at 0.2; a proxy whose ES run is
    not given is left out and named."""
    from hpc_es import cli, proxy_gap
    for sigma, gap in ((0.002, 0.002), (0.02, -0.002), (0.2, 0.05)):
        for seed in range(3):
            acc = np.linspace(0.3, 0.80 + 0.01 * (seed - 1), 6)
            es = _write(tmp_path, f"es{sigma}-{seed}", "corr_small_local", seed, acc, rho=0.09,
                        overrides=[f"es.sigma={sigma}"])
            _write(tmp_path, f"proxy{sigma}-{seed}", "proxy_small_local", seed, acc + gap,
                   overrides=[f"proxy.rho_from={os.path.join(es, 'results.h5')}"])
    _write(tmp_path, "orphan", "proxy_small_local", 0, np.full(6, 0.5), overrides=["proxy.rho_from=elsewhere.h5"])
    found, orphans = proxy_gap.pairs(runs_mod.load_runs([str(tmp_path)]))
    assert sorted(found) == [("small", 0.002), ("small", 0.02), ("small", 0.2)] and len(orphans) == 1
    summaries = {k: proxy_gap.summarize(v) for k, v in found.items()}
    assert [summaries[("small", s)]["predicts"] for s in (0.002, 0.02, 0.2)] == [True, True, False]
    assert np.isclose(summaries[("small", 0.2)]["median_final_gap"], 0.05)
    assert np.isclose(summaries[("small", 0.2)]["es_spread"], 0.01)
    assert proxy_gap.breakdown(summaries) == {"small": 0.2}
    assert cli.main(["gap", "--out", str(tmp_path / "fig"), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the proxy stops predicting ES from sigma = 0.2 on" in out and "orphan" in out
    assert (tmp_path / "fig" / "proxy_gap_small.png").exists()
    one = {k: proxy_gap.summarize({0: v[0]}) for k, v in found.items()}  # one seed: no spread, no verdict
    assert one[("small", 0.2)]["predicts"] is None and proxy_gap.breakdown(one) == {"small": "undetermined"}
    assert "n/a (one seed)" in proxy_gap.markdown(one)
    # archived elsewhere: the proxies still find their ES runs (by run directory and file name),
    # from the archive alone and with the originals still present
    assert cli.main(["archive", str(tmp_path), "--to", str(tmp_path / "kept")]) == 0
    kept = tmp_path / "kept" / tmp_path.name
    for given in ([str(kept)], [str(kept), str(tmp_path)]):
        again, _ = proxy_gap.pairs(runs_mod.load_runs(given))
        assert {k: sorted(v) for k, v in again.items()} == {k: sorted(v) for k, v in found.items()}
    # another run that only shares the directory name (another start) is not the named run's copy
    # while the named file is there: the proxy beside it finds no ES run
    other = config.load("corr_small_local", ["run.seed=0", "es.sigma=0.2"]).to_dict()
    io.save_results(str(tmp_path / "elsewhere" / "es0.2-0"), other, {"completed_iterations": 200,
                    "started": "2026-11-28T00:00:00"}, {"eval_iteration": [10], "val_accuracy": [0.1],
                    "rho": [0.09], "seconds_total": [1.0]}, np.zeros(4, np.float32))
    proxy = str(tmp_path / "proxy0.2-0")
    alone, orphans = proxy_gap.pairs(runs_mod.load_runs([str(tmp_path / "elsewhere"), proxy]))
    assert not alone and len(orphans) == 1


def test_claims_come_from_finished_training_runs_and_proxies_pair_with_the_es_run_they_model(results, tmp_path):
    """A run still in progress is listed, not quoted; a run from a given theta or of a few
    iterations measures rho but gives no final accuracy and no self-correlation; limited ES has
    no row of full ES's rho; a proxy that follows an ES run's rho pairs with that run only, and
    only at the paper's sigma."""
    extra = tmp_path / "extra"
    _write(extra, "running", "corr_small_local", 7, np.full(3, 0.99), rho=0.09, complete=False)
    _write(tmp_path / "other", "running", "corr_small_local", 6, np.full(2, 0.99), rho=0.09, complete=False)
    trained = config.load("corr_small_local", ["run.seed=8", "run.iterations=1", "net.theta_from=x.h5"]).to_dict()
    io.save_results(str(extra / "trained"), trained, {"completed_iterations": 1},
                    {"eval_iteration": [1], "val_accuracy": [0.97], "rho": [0.091], "rho_sgd_self": [-0.5],
                     "seconds_total": [1.0]}, np.zeros(4, np.float32))
    lim = config.load("limited_small_local", ["run.seed=9", "run.iterations=10"]).to_dict()
    io.save_results(str(extra / "limrho"), lim, {"completed_iterations": 10},
                    {"eval_iteration": [10], "val_accuracy": [0.2], "rho": np.full(10, 0.3),
                     "seconds_total": np.ones(10)}, np.zeros(4, np.float32))
    pop = config.load("population_small_local").to_dict()  # a population's iterations are blocks: done at its target
    curve = {"population_n": [1000, 2000, 3000], "population_rho": [0.1, 0.15, 0.2],
             "population_rho_theory": [0.1, 0.15, 0.2], "seconds_total": np.ones(3)}
    io.save_results(str(extra / "popdone"), pop, {"completed_iterations": 3}, {**curve, "population_reached": [1]},
                    np.zeros(4, np.float32))
    io.save_results(str(extra / "popgoing"), pop, {"completed_iterations": 2}, {k: v[:2] for k, v in curve.items()},
                    np.zeros(4, np.float32))
    es_far = _write(extra, "far", "corr_small_local", 0, np.full(6, 0.3), rho=0.05, overrides=["es.sigma=0.2"])
    _write(extra, "follows", "proxy_small_local", 0, np.full(6, 0.6),
           overrides=[f"proxy.rho_from={es_far}/results.h5"])
    text = report.reproduction([results, str(extra), str(tmp_path / "other")], _offspring_only_units(),
                               str(tmp_path / "R.md"), network=_free_network())
    claims = text.split("<!-- notes -->")[0]
    # named as the every-run table names them: two unfinished runs called 'running' told apart by their folders
    assert "Left out while still running (3 runs that have not done what their configs ask): extra/popgoing " \
        "(N = 2,000 of up to 100,000, rho 15.00%), extra/running (30 of 200 iterations), other/running " \
        "(20 of 200 iterations)." in claims and "99.00%" not in claims
    assert any(line.startswith("| Population for rho = 20%") and "3,000 at rho 20.0%" in line
               for line in claims.splitlines()), claims
    rho_rows = [line for line in claims.splitlines() if line.startswith("| rho(g_ES")]
    assert any("9.10%" in r and "1 it., from given thetas (net.theta_from)" in r for r in rho_rows), rho_rows
    assert not any("30.00%" in r for r in rho_rows)  # limited ES's rho has its own row, beyond the paper
    assert any(r.split(" | ")[2].startswith("5.00%") and "N = 500, sigma 0.2, 200 it." in r for r in rho_rows), rho_rows
    assert "97.00%" not in claims and "-50.00%" not in claims  # the trained-theta run: no accuracy, no self-rho
    fig2 = next(line for line in claims.splitlines() if line.startswith("| ES and its proxy"))
    assert "(4 seed pairs)" in fig2, fig2  # the sigma 0.2 ES run and its follower are not a Fig. 2 pair


def test_reproduction_report_lists_the_findings_beyond_the_paper(tmp_path):
    """Each finding of issue 15 gets a row beside what the paper says, read from its runs."""
    n = 6
    lim = config.load("limited_small_local").to_dict()
    io.save_results(str(tmp_path / "lim"), lim, {}, {"iteration": np.arange(1, n + 1), "rho": np.full(n, 0.22),
                    "rho_theory": np.full(n, 0.2), "eval_iteration": [n], "val_accuracy": [0.5],
                    "seconds_total": np.ones(n)}, np.zeros(4, np.float32))
    es = config.load("corr_small_local").to_dict()
    hist = {"iteration": np.arange(1, n + 1), "rho": np.full(n, 0.09), "eval_iteration": [n], "val_accuracy": [0.5],
            "seconds_total": np.ones(n)}
    for name, level in (("conv1", 0.3), ("fc1", 0.08)):
        hist[f"rho_{name}"], hist[f"rho_theory_{name}"] = np.full(n, level), np.full(n, level)
    io.save_results(str(tmp_path / "layers"), es, {"started": "T0", "completed_iterations": n}, hist,
                    np.zeros(4, np.float32))
    more = {k: np.concatenate([v, v]) if len(v) == n else v for k, v in hist.items()}  # continued to 2n:
    more["iteration"] = np.arange(1, 2 * n + 1)  # its first n iterations are the run above's
    more["rho_conv1"] = more["rho_theory_conv1"] = np.concatenate([np.full(n, 0.3), np.full(n, 0.5)])
    io.save_results(str(tmp_path / "layers_more"), {**es, "run": {**es["run"], "iterations": 2 * n}},
                    {"started": "T0", "completed_iterations": 2 * n}, more, np.zeros(4, np.float32))
    for seed in range(4):
        _write(tmp_path, f"sgd{seed}", "sgd_small_local", seed, np.full(3, 0.97 + 0.001 * seed))
        for rho, acc in ((0.01, 0.8), (0.04, 0.9), (0.16, 0.97), (0.64, 0.975)):
            _write(tmp_path, f"p{rho}-{seed}", "proxy_small_local", seed, np.full(3, acc + 0.001 * seed),
                   overrides=[f"proxy.rho={rho}"])
    lim_tf = config.load("limited_tf_paper", ["run.iterations=4"]).to_dict()  # limited ES's rho on tf_tutorial
    io.save_results(str(tmp_path / "limtf"), lim_tf, {}, {"iteration": np.arange(1, 5), "rho": np.full(4, 0.1005),
                    "rho_theory": np.full(4, 0.1), "eval_iteration": [4], "val_accuracy": [0.2],
                    "seconds_total": np.ones(4)}, np.zeros(4, np.float32))
    for seed in range(5):  # Fig. 3 as proxies: full ES's rho (the paper's 3.9%) and limited ES's, no overlap;
        for rho, acc in ((0.039, 0.965), (0.101, 0.975), (0.5, 0.98)):  # 50%: no limited run measured it
            _write(tmp_path, f"tf{rho}-{seed}", "proxy_tf_paper", seed, np.full(3, acc + 0.001 * seed),
                   overrides=[f"proxy.rho={rho}"])
    smoothing = {"settings": {"net": "small", "offspring": 4000},
                 "rows": [{"theta": "initial", "sigma": 0.2, "rho_es_true": 0.08, "rho_es_smoothed": 0.24,
                           "predicted_rho_es_smoothed": 0.25}]}
    text = report.reproduction([str(tmp_path)], _offspring_only_units(), str(tmp_path / "R.md"),
                               network=_free_network(), smoothing=smoothing)
    section = text.split("## Beyond the paper (ours)")[1].split("## What the full-scale")[0]
    assert "| Limited ES's rho(g, g_true) against our first-order theory | no correlation reported" in section
    assert "22.00% measured vs 20.00% predicted (ratio 1.100, 6 iterations)" in section
    assert "conv1 40.0% vs 40.0%; fc1 8.0% vs 8.0% (measured vs theory, means over 12 iterations) | small, " \
        "1 ES run" in section  # the continued copy only: no iteration counted twice
    assert "smallest rho not significantly below SGD: 16%" in section and "rho 1, 4, 16, 64%, iteration 30" in section
    fig3 = next(line for line in section.splitlines() if line.startswith("| Limited vs full ES (Fig. 3), as ES proxies"))
    assert "p = 0.75 (real ES, 5 runs each) | rho 10.1% (limited, uniform draw) vs 3.9% (full): medians 97.70% vs " \
           "96.70%" in fig3, fig3
    assert sum(line.startswith("| Limited vs full ES (Fig. 3), as ES") for line in section.splitlines()) == 1
    assert "rank-sum p = 0.0079 (smallest possible 0.0079), r = +1.00" in fig3 and "5 vs 5 runs" in fig3
    assert "5 vs 5 runs would give p >= 0.75 in 0.0% of experiments (our model)" in fig3  # 7 sd apart
    assert "tf_tutorial" not in "".join(line for line in section.splitlines() if "dose-response" in line)
    assert "initial sigma 0.2: 8.0% vs 24.0% (theory 25.0%)" in section and section.count("does not address this") == 2


def test_a_run_given_twice_is_counted_once(tmp_path, caplog):
    """A run and its archive under the paths given load as one run, with a warning naming the
    copy left out; a copy continued to more iterations, and a second run of the same config
    started at another time, are runs of their own."""
    from hpc_es import cli
    def save(path, started, done):
        cfg = config.load("sgd_small_local", ["run.seed=3", f"run.iterations={done}"]).to_dict()
        io.save_results(str(path), cfg, {"completed_iterations": done, "started": started},
                        {"eval_iteration": [done], "val_accuracy": [0.5 + done / 1000], "seconds_total": np.ones(done)},
                        np.zeros(4, np.float32))
    save(tmp_path / "runs" / "a", "2026-11-28T10:00:00", 200)
    assert cli.main(["archive", str(tmp_path / "runs"), "--to", str(tmp_path / "kept")]) == 0
    save(tmp_path / "longer" / "a", "2026-11-28T10:00:00", 400)   # the same run, continued in a copy
    save(tmp_path / "again" / "a", "2026-11-28T11:00:00", 200)    # the same config, run again
    with caplog.at_level("WARNING", logger="hpc_es"):
        loaded = runs_mod.load_runs([str(tmp_path / d) for d in ("runs", "kept", "longer", "again")])
    original, archived = str(tmp_path / "runs" / "a" / io.RESULTS), str(tmp_path / "kept" / "runs" / "a" / io.RESULTS)
    paths = sorted(r.path for r in loaded)
    assert len(paths) == 3 and str(tmp_path / "again" / "a" / io.RESULTS) in paths and \
        str(tmp_path / "longer" / "a" / io.RESULTS) in paths and (original in paths) != (archived in paths)
    assert "1 results file(s) are copies of a run given twice, counted once: " in caplog.text
    assert f"{original} (a copy of {archived})" in caplog.text or f"{archived} (a copy of {original})" in caplog.text


def test_the_beyond_section_alone_is_made_again_from_the_runs_given(tmp_path, caplog):
    """`hpc-es report --beyond-only`: the section "Beyond the paper" of an existing report is
    made from the runs given (here: one limited-ES run's rho against its theory) and says so;
    every other line of the report is kept; a report without that section, or no --write, is
    a one-line error."""
    from hpc_es import cli
    lim = config.load("limited_small_local").to_dict()
    io.save_results(str(tmp_path / "runs" / "lim"), lim, {}, {"iteration": [1, 2], "rho": [0.22, 0.22],
                    "rho_theory": [0.2, 0.2], "eval_iteration": [2], "val_accuracy": [0.5],
                    "seconds_total": [1.0, 1.0]}, np.zeros(4, np.float32))
    head = "# Reproduction\n\nGenerated by hand.\n\n## Every claim\n\n| a | b |\n"
    tail = "\n## What the full-scale runs would cost\n\nkept as it was\n"
    old = "## Beyond the paper (ours)\n\n| finding | paper | ours | our setup |\n| --- | --- | --- | --- |\n| old row | | | |\n"
    doc = tmp_path / "R.md"
    doc.write_text(head + old + tail)
    argv = ["report", str(tmp_path / "runs"), "--write", str(doc), "--beyond-only", "--smoothing", ""]
    assert cli.main(argv) == 0
    text = doc.read_text()
    assert text.startswith(head + "## Beyond the paper (ours)\n") and text.endswith(tail) and "old row" not in text
    assert "22.00% measured vs 20.00% predicted (ratio 1.100, 2 iterations)" in text
    assert f"This section alone was made again by `hpc-es report {tmp_path / 'runs'} --write {doc} --beyond-only` " \
           "on " in text and "from 1 finished results file;" in text
    doc.write_text(head + tail)
    assert cli.main(argv) == 2 and doc.read_text() == head + tail
    assert "R.md: no section '## Beyond the paper (ours)' to rewrite" in caplog.text
    assert cli.main(argv[:2] + ["--beyond-only"]) == 2
    assert "needs --write naming an existing report (got None)" in caplog.text


def test_archive_keeps_what_the_analyses_read_without_theta(tmp_path, capsys):
    """`hpc-es archive` copies results files with their config, metadata and history but no theta,
    keeping the layout below the folder given: the copies load as the same runs (same finals,
    same table), are a fraction of the size, and refuse to serve as a theta, saying why."""
    from hpc_es import cli
    runs = tmp_path / "runs"
    for seed in range(2):
        path = _write(runs / "sweep", f"seed{seed}", "sgd_small_local", seed, np.linspace(0.5, 0.9, 6))
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


def test_first_order_runs_pair_with_the_real_es_run_of_their_config_and_seed(tmp_path, capsys):
    """First-order ES twins (same config but run.method, same seed) at two sigmas, 3 seeds: 0.1
    points above ES at 0.002 (within ES's 1-point seed spread), 5 points below at 0.2 (outside);
    a first-order run that differs in another trajectory key (es.n_offspring) has no twin and
    is named; the curves' correlation is 1 for a constant shift. Paired by seed: 3 pairs of one
    sign give the signed-rank test's smallest p, 0.25."""
    from hpc_es import cli, proxy_gap
    for sigma, gap in ((0.002, 0.001), (0.2, -0.05)):
        for seed in range(3):
            acc = np.linspace(0.3, 0.80 + 0.01 * (seed - 1), 6)
            _write(tmp_path, f"es{sigma}-{seed}", "corr_small_local", seed, acc, rho=0.09,
                   overrides=[f"es.sigma={sigma}"])
            _write(tmp_path, f"fo{sigma}-{seed}", "corr_small_local", seed, acc + gap, rho=0.09,
                   overrides=[f"es.sigma={sigma}", "run.method=es_first_order", "run.iterations=400"])
    _write(tmp_path, "lone", "corr_small_local", 0, np.full(6, 0.5),
           overrides=["run.method=es_first_order", "es.n_offspring=1000"])
    found, lone = proxy_gap.twins(runs_mod.load_runs([str(tmp_path)]))
    assert sorted(found) == [("small", 500, 0.002), ("small", 500, 0.2)] and lone == [str(tmp_path / "lone" /
                                                                                           "results.h5")]
    s = {k[2]: proxy_gap.summarize(v, "first_order") for k, v in found.items()}
    assert [s[0.002]["predicts"], s[0.2]["predicts"]] == [True, False]
    assert np.isclose(s[0.2]["median_final_gap"], -0.05) and np.isclose(s[0.002]["median_curve_r"], 1.0)
    assert s[0.2]["paired"]["p"] == pytest.approx(0.25) and s[0.2]["paired"]["min_p"] == pytest.approx(0.25)
    assert cli.main(["gap", "--out", str(tmp_path / "fig"), str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| small | 500 | 0.2 | 3 | 80.00% | 75.00% | -5.00 |" in out and "lone" in out
    assert (tmp_path / "fig" / "first_order_gap.json").exists() and (tmp_path / "fig" / "proxy_gap_small.png").exists()
