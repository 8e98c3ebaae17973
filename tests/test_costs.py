"""The cost model (hpc_es.costs): its formulas against hand computation, the job scripts'
layout, unit measurement through the loop's code, and `hpc-es plan`."""
import json
import math
import subprocess
import sys
from collections import defaultdict

import pytest

from hpc_es import config, costs, data


def _units(**per_arch):
    """Unit costs that are zero except those given (for both nets): predictions checkable by hand."""
    return defaultdict(float, {arch: defaultdict(float, per_arch) for arch in ("tf_tutorial", "small")})


def test_collectives_follow_the_alpha_beta_formula():
    net = costs.Network(allgatherv=(1e-5, 1e-9), allreduce=(2e-6, 0.0), source="test")
    assert net.time("allgatherv", 1, 10**6) == 0.0 and net.time("allreduce", 1) == 0.0
    # p = 6: ceil(log2 6) = 3 steps; 1 MB gathered, of which 5/6 arrive from the others
    assert net.time("allgatherv", 6, 10**6) == pytest.approx(3e-5 + 1e-9 * 10**6 * 5 / 6)
    assert net.time("allreduce", 1000) == pytest.approx(2 * 2e-6 * 10)


def test_es_iteration_splits_evaluation_and_sharded_aggregation_over_the_ranks():
    cfg = config.load("es_small_local", ["es.n_offspring=10", "run.eval_every=2", "run.iterations=4",
                                         "run.checkpoint_every=0"])
    P = 28_938
    units = _units(offspring=0.1, aggregate_float=1e-9, adam_float=1e-9, validate_image=1e-4)
    net = costs.Network(allgatherv=(0.0, 0.0), allreduce=(0.0, 0.0))
    p = costs.predict(cfg, 3, units, net)
    assert p.phases["evaluate"] == pytest.approx(4 * 0.1)  # ceil(10 / 3) offspring on the busiest rank
    assert p.phases["aggregate"] == pytest.approx(5 * P / 3 * 1e-9)  # 5 pairs, a third of g each
    assert p.phases["update"] == pytest.approx(P / 3 * 1e-9)  # sharded: Adam on a third of theta per rank
    assert p.phases["validate"] == pytest.approx(math.ceil(10_000 / 3) * 1e-4 / 2)
    replicated = costs.predict(config.load("es_small_local", ["es.n_offspring=10", "es.aggregation=replicated"]),
                               3, units, net)
    assert replicated.phases["aggregate"] == pytest.approx(5 * P * 1e-9)
    assert replicated.phases["update"] == pytest.approx(P * 1e-9)  # Adam on every rank
    assert p.wall == pytest.approx(p.startup + 4 * p.per_iteration + p.writes)
    # writes: checkpoint (theta, m, v) + results (theta) at iterations 2 and 4, the last one once
    saved = costs.predict(config.load("es_small_local", ["run.iterations=4", "run.checkpoint_every=2"]), 3,
                          defaultdict(float, small=units["small"], write_byte=1e-9), net)
    assert saved.writes == pytest.approx(2 * 4 * 4 * P * 1e-9)


def test_first_order_es_pays_one_backward_pass_and_its_share_of_the_derivatives():
    """ceil(K/R) directional derivatives of P floats per rank plus one backward pass on every
    rank; K floats gathered; the aggregation as ES's; g_true costs nothing extra. Limited: the
    derivatives over the mean drawn bucket. A units file without the derivative's cost prices
    it as the aggregation's, and says so."""
    P = 28_938
    units = _units(sgd_step=0.05, directional_float=2e-9, aggregate_float=1e-9, directional_sparse_float_2000=4e-9,
                   aggregate_sparse_float_2000=3e-9)
    net = costs.Network(allgatherv=(0.0, 1e-9), allreduce=(0.0, 0.0))
    cfg = config.load("corr_small_local", ["run.method=es_first_order", "es.n_offspring=10",
                                           "measure.sgd_self_correlation=false"])
    p = costs.predict(cfg, 3, units, net)
    assert p.phases["evaluate"] == pytest.approx(0.05 + 2 * P * 2e-9)  # ceil(5 / 3) derivatives
    assert p.phases["aggregate"] == pytest.approx(5 * P / 3 * 1e-9) and p.phases["measure"] == 0
    # K rewards' derivatives, theta's Allgatherv, and g gathered on rank 0 for rho
    assert p.phases["communicate"] == pytest.approx(1e-9 * (8 * 5 + 4 * P + 4 * P) * 2 / 3)
    from hpc_es import limited, nets
    b = limited.partition(nets.build("small").layout, 2000)
    mean = float((b.probabilities("uniform") * b.size).sum())
    lim = costs.predict(config.load("corr_small_local", ["run.method=es_first_order", "es.n_offspring=10",
                                                         "es.perturbation=limited", "es.bucket_size=2000"]), 1,
                        units, net)
    assert lim.phases["evaluate"] == pytest.approx(0.05 + 5 * mean * 4e-9)
    assert lim.phases["aggregate"] == pytest.approx(5 * mean * 3e-9)
    old = costs.predict(cfg, 3, _units(sgd_step=0.05, aggregate_float=1e-9), net)
    assert old.phases["evaluate"] == pytest.approx(0.05 + 2 * P * 1e-9)
    assert any("no directional_float" in n for n in old.notes)


def test_measurements_spread_over_three_ranks():
    """g_true on rank 0, the self-correlation's two gradients on ranks 1 and 2 % R: three
    backward passes on one rank, two on two ranks (rank 0: g_true and the second), one on three."""
    units = _units(sgd_step=0.1, offspring=0.01)
    cfg = config.load("corr_small_local")
    assert cfg.measure.correlation and cfg.measure.sgd_self_correlation
    got = [costs.predict(cfg, r, units).phases["measure"] for r in (1, 2, 3, 100)]
    assert got == pytest.approx([0.3, 0.2, 0.1, 0.1])


def test_limited_es_prices_the_slowest_ranks_deal_and_a_base_pass_shared_by_the_node():
    """The slowest rank's deal of buckets (es.deal, costly buckets spread), by simulation,
    against cases computed by hand: one tensor costly (c per offspring), the others free. With
    one rank, the expectation 2 c K q (q: the tensor's share of the uniform draw); with more
    ranks than costly pairs the slowest holds one (2 c); in between, ceil(costly / R). The
    base pass: a node's ranks share its blocks of 10 images."""
    from hpc_es import limited, nets
    net = nets.build("tf_tutorial")
    names = [p.name for p in net.layout]
    b = limited.partition(net.layout, 5000)
    per = dict.fromkeys(names, 0.0)
    per["conv2.w"] = 1.0
    q = -(-5 * 5 * 32 * 64 // 5000) / sum(-(-p.size // 5000) for p in net.layout)  # conv2.w's share of buckets, drawn uniformly
    one = costs.slowest_share(per, net, b, "uniform", 1000, 1, 50, True, draws=200)
    assert one == pytest.approx(2 * 1000 * q, rel=0.05)
    assert costs.slowest_share(per, net, b, "uniform", 1000, 100, 50, True) == pytest.approx(2.0)  # ~17 costly pairs
    assert costs.slowest_share(per, net, b, "uniform", 25000, 100, 50, True) == pytest.approx(2 * 5, abs=2.01)
    units = _units(base_pass_5000=0.05, limited_offspring_5000=0.0,
                   limited_tensor_5000={n: 0.0 for n in names})
    cfg = config.load("limited_tf_paper")
    per_node = {rpn: costs.predict(cfg, 64, units, ranks_per_node=rpn).phases["evaluate"] for rpn in (1, 2, 5, 32)}
    assert per_node == pytest.approx({1: 0.05, 2: 0.03, 5: 0.01, 32: 0.01})  # 5 blocks: ceil(5 / k) of them


def test_sgd_does_not_speed_up_and_population_stops_at_the_theorys_n():
    units = _units(sgd_step=0.2, offspring=0.01)
    sgd = config.load("sgd_tf_paper")
    one, many = costs.predict(sgd, 1, units), costs.predict(sgd, 64, units)
    assert one.phases["evaluate"] == many.phases["evaluate"] == 0.2
    pop = config.load("population_tf_paper")
    p = costs.predict(pop, 100, units)
    # N for rho = 0.2 with P = 3,274,634: 2 rho^2 (P + 1) / (1 - rho^2) = 272,886 -> 273 blocks of 1,000
    assert p.iterations == 273 and p.phases["evaluate"] == pytest.approx(10 * 0.01)
    capped = costs.predict(config.load("population_tf_paper", ["population.max_offspring=3000"]), 100, units)
    assert capped.iterations == 3


def test_job_scripts_give_ranks_and_runs():
    path, header = costs.job_script("es_tf_paper")
    assert path.endswith("jobs/slurm/es_tf_paper.sbatch") and header == {"ntasks": 100, "runs": 5}
    assert costs.job_script("es_small_local") == (None, {})


def test_units_are_measured_through_the_loops_code(mnist_dir):
    units = costs.measure_units([config.load("es_small_local")], data.load_mnist(mnist_dir), table_floats=1 << 22)
    small = units["small"]
    for key in ("offspring", "offspring_subset", "sgd_step", "validate_image", "aggregate_float", "adam_float"):
        assert 0 < small[key] < 1, (key, small[key])
    assert units["process_start"] > 0 and units["rss_rank"] > 50e6


def test_plan_prints_wall_time_core_hours_and_the_job_script(tmp_path):
    path = tmp_path / "units.json"
    units = {"tf_tutorial": dict(_units(offspring=0.01)["tf_tutorial"]), "process_start": 0.0, "data_load": 0.0,
             "table_fill_float": 0.0, "write_byte": 0.0, "rss_rank": 0.0}
    for key in ("sgd_step", "validate_image", "aggregate_float", "adam_float", "proxy_float", "offspring_subset"):
        units["tf_tutorial"][key] = 0.0
    path.write_text(json.dumps({"units": units}))
    free = tmp_path / "network.json"  # collectives that cost nothing
    free.write_text(json.dumps({"fit": {"allgatherv": [0, 0], "allreduce": [0, 0]}}))
    proc = subprocess.run([sys.executable, "-m", "hpc_es", "plan", "es_tf_paper", "--ranks", "100,1000", "--units",
                           str(path), "--network", str(free)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # 2,000 iterations x 100 offspring x 10 ms on 100 ranks: 2,000 s, 55.6 core-hours; 5 runs
    assert "wall time 0h33m20s, 55.6 core-hours" in proc.stdout and "all 5 runs: 277.8 core-hours" in proc.stdout
    assert "wall time 0h03m20s" in proc.stdout  # 1,000 ranks: 10 offspring each
    assert "sbatch --ntasks=R jobs/slurm/es_tf_paper.sbatch" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "hpc_es", "plan", "es_tf_paper", "--ranks", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--ranks '0': expected positive integers" in bad.stdout

