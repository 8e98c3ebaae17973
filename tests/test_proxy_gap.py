"""ES beside its proxy and its first-order twin (:mod:`hpc_es.proxy_gap`), from synthetic runs with known gaps."""
import os

import numpy as np
import pytest

from hpc_es import config, io, runs as runs_mod
from tests.synthetic import write_run


def test_proxy_gap_finds_the_sigma_where_the_proxy_stops_predicting_es(tmp_path, capsys):
    """ES at three sigmas, 3 seeds each (final accuracies 0.80 +- 0.01 across seeds), each with a
    proxy following its file: within 0.2 points of ES at sigma 0.002 and 0.02, 5 points above
    at 0.2. The proxy then predicts ES up to 0.02 and stops at 0.2; a proxy whose ES run is
    not given is left out and named."""
    from hpc_es import cli, proxy_gap
    for sigma, gap in ((0.002, 0.002), (0.02, -0.002), (0.2, 0.05)):
        for seed in range(3):
            acc = np.linspace(0.3, 0.80 + 0.01 * (seed - 1), 6)
            es = write_run(tmp_path, f"es{sigma}-{seed}", "corr_small_local", seed, acc, rho=0.09,
                        overrides=[f"es.sigma={sigma}"])
            write_run(tmp_path, f"proxy{sigma}-{seed}", "proxy_small_local", seed, acc + gap,
                   overrides=[f"proxy.rho_from={os.path.join(es, 'results.h5')}"])
    write_run(tmp_path, "orphan", "proxy_small_local", 0, np.full(6, 0.5), overrides=["proxy.rho_from=elsewhere.h5"])
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
            write_run(tmp_path, f"es{sigma}-{seed}", "corr_small_local", seed, acc, rho=0.09,
                   overrides=[f"es.sigma={sigma}"])
            write_run(tmp_path, f"fo{sigma}-{seed}", "corr_small_local", seed, acc + gap, rho=0.09,
                   overrides=[f"es.sigma={sigma}", "run.method=es_first_order", "run.iterations=400"])
    write_run(tmp_path, "lone", "corr_small_local", 0, np.full(6, 0.5),
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
