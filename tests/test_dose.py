"""Accuracy against rho (:mod:`hpc_es.dose`), from synthetic SGD and proxy runs with known levels."""
import json

import numpy as np
import pytest

from hpc_es import runs as runs_mod
from tests.synthetic import plausible_units, write_run


def test_dose_response_reads_accuracy_against_rho_with_tests_and_costs(tmp_path, capsys, caplog):
    """Synthetic SGD and proxy runs, 5 seeds each, validated at iterations 10..60: rho = 1% and
    4% lie wholly below SGD (rank-sum p = 2/252, the smallest 5 vs 5 allows), 16% and 64%
    overlap it; the smallest rho not significantly below SGD is then 16%. A 40%-proxy run
    without a validation at iteration 40 is left out, not read at another iteration."""
    from hpc_es import cli, dose
    rng = np.random.default_rng(3)
    level = {0.01: 0.80, 0.04: 0.90, 0.16: 0.97, 0.64: 0.975}
    for seed in range(5):
        write_run(tmp_path, f"sgd{seed}", "sgd_small_local", seed, np.full(6, 0.97) + rng.normal(0, 0.004, 6))
        for rho, acc in level.items():
            write_run(tmp_path, f"p{rho}-{seed}", "proxy_small_local", seed, np.full(6, acc) + rng.normal(0, 0.004, 6),
                   overrides=[f"proxy.rho={rho}"])
    write_run(tmp_path, "short", "proxy_small_local", 0, np.full(3, 0.5), overrides=["proxy.rho=0.4"])
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
    n, hours = dose.es_cost(0.2, "tf_tutorial", 2000, plausible_units())
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
        write_run(tmp_path / "lr", f"sgd{seed}", "sgd_small_local", seed, [0.5, 0.6], overrides=["optim.lr=0.5"])
    each = dose.collect(dose.select(runs_mod.load_runs([str(tmp_path)]))[0])
    assert each[("small", ())][0] == 30 and [at for key, (at, _) in each.items() if key[1]] == [20]
    # per-unit costs for tf_tutorial in one file, the small net's in another: each net priced from its
    # file (tf_tutorial's N for 1%: 2 ceil((P + 1) 1e-4 / (1 - 1e-4)) = 656); one file alone names the
    # unpriced net; a file with costs for no net is refused, naming it
    both, machine = plausible_units(), {k: v for k, v in plausible_units().items() if not isinstance(v, dict)}
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
