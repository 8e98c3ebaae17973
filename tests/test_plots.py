"""Figures and the tables beside them, from synthetic results files with known curves."""
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
    meta = {"completed_iterations": done, "ranks": 2, "run_id": f"test-{os.path.join(str(root), name)}"}
    source = cfg["proxy"].get("rho_from")
    if cfg["run"]["method"] == "proxy" and source and os.path.exists(source):  # as training records it
        meta["rho_from_id"] = io.run_id_of(source)
    io.save_results(out, cfg, meta, hist, np.zeros(4, np.float32))
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
