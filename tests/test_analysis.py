"""The paper's instruments against theory: Eq. (3), the ES proxy, rho = sqrt(n / (n + P + 1))."""
import os
import signal
import sys

import numpy as np
import pytest

from hpc_es import analysis, comm, config, data, es, experiments, io, nets, noise, runs, train
from tests.procs import signal_at


def test_pearson_is_numpys_corrcoef():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(1000) + 3, rng.standard_normal(1000) * 2 - 1
    b += 0.3 * a
    assert np.isclose(analysis.pearson(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-12)
    assert analysis.pearson(a.astype(np.float32), a) > 1 - 1e-7


def test_layer_slices_cover_theta(net):
    covered = np.zeros(net.n_params, int)
    for s in analysis.layer_slices(net).values():
        covered[s] += 1
    assert (covered == 1).all()


def test_theory_reproduces_the_papers_numbers():
    P = 3_274_634
    assert round(100 * float(analysis.expected_rho(5000, P)), 1) == 3.9   # N = 10,000: paper 3.9%
    assert 270_000 < 2 * analysis.pairs_for_rho(0.2, P) < 276_000          # paper: ~274,000
    assert np.isclose(analysis.expected_rho(analysis.pairs_for_rho(0.37, 1000), 1000), 0.37)
    assert analysis.pairs_for_rho(1.0, 1000) == float("inf")


@pytest.mark.parametrize("rho", [0.04, 0.2, -0.03])
def test_proxy_reaches_its_target_correlation(rho):
    """Realised correlation of g_true + m g_noise with g_true, over P = 3,274,634 heavy-tailed
    'gradient' entries: the sampling error of a correlation is about (1 - rho^2) / sqrt(P) =
    5.5e-4, so 5 of those bound the deviation for every one of 5 noise draws."""
    P = 3_274_634
    rng = np.random.default_rng(1)
    g_true = (rng.laplace(size=P) * rng.exponential(size=P)).astype(np.float32) + 0.01
    out = np.empty(P, np.float32)
    for seed in range(5):
        noise_vec = np.random.default_rng(100 + seed).standard_normal(P, dtype=np.float32)
        realised = analysis.pearson(analysis.proxy_gradient(g_true, rho, noise_vec, out), g_true)
        assert abs(realised - rho) < 5 * (1 - rho ** 2) / np.sqrt(P)


def test_es_correlation_agrees_with_theory_on_the_small_net():
    """At a fixed theta and mini-batch of the small net (P = 28,938), the correlation of g_ES
    from n antithetic pairs (sigma 0.002) with the exact gradient matches sqrt(n/(n+P+1)).

    For n << P, g_ES . g / |g|^2 is a mean of n squared standard normals, so rho has a relative
    sampling error of about sqrt(2/n); the test allows 4 of those (n = 100: 57%, n = 1,600: 14%)."""
    net = nets.small()
    theta = net.init_theta(seed=3)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), rng.integers(0, 10, 10)
    g_true = -net.grad(theta, x, y)
    table = noise.build_table(7, 2_000_000)
    cfg = config.from_dict({"run": {"method": "es"}, "net": {"arch": "small"}, "noise": {"size": table.size},
                            "es": {"n_offspring": 3200}}).es
    pop = es.sample_population(cfg, 5, 0, net.n_params, table.size, 10, 10)
    rewards = np.empty(3200)
    es.evaluate(net, theta, table, pop, 0.002, x, y, 0, 3200, rewards, np.empty_like(theta))
    for n in (100, 400, 1600):
        sub = es.Population(pop.offsets[:n], pop.member[:2 * n], pop.sign[:2 * n], pop.batch)
        g = es.gradient(table, sub, rewards[:2 * n], 0.002, np.empty_like(theta))
        rho, theory = analysis.pearson(g, g_true), float(analysis.expected_rho(n, net.n_params))
        assert abs(rho / theory - 1) < 4 * np.sqrt(2 / n), f"n = {n}: rho {rho:.4f} vs theory {theory:.4f}"


@pytest.mark.mpi
def test_population_curve_is_rank_independent_and_follows_theory(mnist_dir):
    world = comm.world()
    cfg = config.load("population_small_local", ["population.step=200", "population.max_offspring=1000",
                                                  "noise.size=1000000", "data.batch_size=10"])
    ds = data.load_mnist(mnist_dir)
    _, hist = experiments.population(cfg, world, dataset=ds, quiet=True)
    _, serial = experiments.population(cfg, comm.SerialComm(), dataset=ds, quiet=True)
    comm.parallel_assert(world, hist["population_rho"] == serial["population_rho"], "rho(N) depends on ranks")
    n = np.array(hist["population_n"]) // 2
    rho, theory = np.array(hist["population_rho"]), np.sqrt(n / (n + 28938 + 1))  # the closed form, typed here
    comm.parallel_assert(world, list(hist["population_n"]) == [200, 400, 600, 800, 1000] and
                         (np.abs(rho / theory - 1) < 4 * np.sqrt(2 / n)).all(),
                         f"rho(N) {rho} vs theory {theory}")


def test_population_preempted_checkpoints_and_resumes_its_curve_bit_for_bit(mnist_dir, tmp_path, monkeypatch,
                                                                            caplog):
    """SIGUSR1 to a population experiment: a checkpoint (the running sum S and the curve so far),
    exit 75; --resume (with a raised cap, which only says where it stops) continues the curve
    exactly as one uninterrupted run draws it, and only then is the run finished; resumed once
    more, it has nothing to do and loads no data. One stopped at its target goes on, as one run,
    when resumed with a higher target."""
    sets = ["population.step=20", "population.max_offspring=300", "data.batch_size=10", "noise.size=1000000",
            "population.target_rho=0.99", "run.checkpoint_every=1000", "run.log_every=1"]
    cfg = config.load("population_small_local", sets)
    ds = data.load_mnist(mnist_dir)
    _, whole = experiments.population(cfg, comm.SerialComm(), dataset=ds, quiet=True)
    out = str(tmp_path / "pop")
    env = dict(os.environ, HPC_ES_DATA=mnist_dir, HPC_ES_FAULT="")
    capped = [s.replace("max_offspring=300", "max_offspring=240") for s in sets]
    cmd = [sys.executable, "-m", "hpc_es", "train", "population_small_local", "--out", out,
           *[a for s in capped for a in ("--set", s)]]
    returncode, rest = signal_at(cmd, env, "N = 60 ", signal.SIGUSR1)
    assert returncode == 75 and "received SIGUSR1: checkpoint written after iteration" in rest, rest
    first = io.read_results(os.path.join(out, io.RESULTS))
    blocks = first["completed_iterations"]
    assert 3 <= blocks < 12 and not runs.finished(first["config"], first["history"], blocks)
    _, resumed = experiments.population(cfg, comm.SerialComm(), out=out, resume=True, dataset=ds, quiet=True)
    assert resumed["population_n"] == whole["population_n"] == list(range(20, 301, 20))
    assert resumed["population_rho"] == whole["population_rho"], "the resumed curve differs"
    done = io.read_results(os.path.join(out, io.RESULTS))
    assert runs.finished(done["config"], done["history"], done["completed_iterations"])
    monkeypatch.setenv("HPC_ES_DATA", str(tmp_path / "no-mnist-here"))  # loading data would fail
    before = open(os.path.join(out, io.RESULTS), "rb").read()
    with caplog.at_level("INFO", logger="hpc_es"):
        _, again = experiments.population(cfg, comm.SerialComm(), out=out, resume=True, quiet=True)
    assert "nothing to do: the population stopped at N = 300" in caplog.text, caplog.text
    assert again["population_rho"] == whole["population_rho"]
    assert open(os.path.join(out, io.RESULTS), "rb").read() == before
    # Stopped at a target instead, then the target raised: unfinished again, and it goes on as one run.
    at_block_5 = f"target_rho={whole['population_rho'][4]!r}"
    target = config.load("population_small_local", [s.replace("target_rho=0.99", at_block_5) for s in sets])
    early = str(tmp_path / "early")
    _, reached = experiments.population(target, comm.SerialComm(), out=early, dataset=ds, quiet=True)
    assert reached["population_n"] == [20, 40, 60, 80, 100] and reached["population_reached"] == [1]
    _, resumed = experiments.population(cfg, comm.SerialComm(), out=early, resume=True, dataset=ds, quiet=True)
    assert resumed["population_rho"] == whole["population_rho"]


def test_proxy_and_measurement_modes_run_and_log(mnist_dir):
    ds = data.load_mnist(mnist_dir)
    cfg = config.load("sgd_small_local", ["run.method=proxy", "proxy.rho=0.2", "run.iterations=3",
                                          "measure.correlation=true", "measure.sgd_self_correlation=true"])
    _, hist = train.run(cfg, comm.SerialComm(), dataset=ds, quiet=True)
    assert all(abs(r - 0.2) < 5 / np.sqrt(28938) for r in hist["rho"])
    assert set(hist) >= {"rho_conv1", "rho_conv2", "rho_fc1", "rho_sgd_self"}
    assert all(0 < r < 1 for r in hist["rho_sgd_self"])
    with pytest.raises(config.ConfigError, match=r"measure.correlation = true needs run.method = 'es', 'es_first_order' or 'proxy'"):
        config.load("sgd_small_local", ["measure.correlation=true"])


def test_proxy_follows_a_rho_schedule_read_from_an_es_run(mnist_dir, tmp_path):
    """proxy.rho_from: iteration t's proxy is built for the rho an ES run's file holds for t; the
    realised correlation with g_true (measured independently by rank 0) follows the schedule
    within the sampling error of a correlation over P = 28,938 (5 (1 - rho^2) / sqrt(P)), a
    negative rho (as ES measures at large sigma) included."""
    from hpc_es import io
    theta = np.zeros(nets.small().n_params, np.float32)
    es_run = tmp_path / "es"
    es_run.mkdir()
    schedule = [0.05, -0.3, 0.8, 0.6]
    es_cfg = config.load("corr_small_local").to_dict()
    io.save_results(str(es_run), es_cfg, {}, {"iteration": [1, 2, 3, 4], "rho": schedule}, theta)
    cfg = config.load("sgd_small_local", ["run.method=proxy", f"proxy.rho_from={es_run / 'results.h5'}",
                                          "run.iterations=3", "measure.correlation=true", "run.eval_every=0"])
    _, hist = train.run(cfg, comm.SerialComm(), dataset=data.load_mnist(mnist_dir), quiet=True)
    assert list(hist["rho_target"]) == schedule[:3]
    for realised, target in zip(hist["rho"], schedule):
        assert abs(realised - target) < 5 * (1 - target ** 2) / np.sqrt(28938), (realised, target)

    def fails(path, match, iterations=3):
        c = config.load("sgd_small_local", ["run.method=proxy", f"proxy.rho_from={path}",
                                            f"run.iterations={iterations}"])
        with pytest.raises(io.RunDirError, match=match):
            train.run(c, comm.SerialComm(), dataset=data.load_mnist(mnist_dir), quiet=True)

    fails(es_run / "results.h5", r"holds rho for iterations 1\.\.4, expected 1\.\.5", iterations=5)
    fails(tmp_path / "nowhere.h5", "nowhere.h5: no such file")
    for name, hist_ in (("sgd", {"iteration": [1, 2, 3], "loss": [1.0] * 3}),
                        ("zero", {"iteration": [1, 2, 3], "rho": [0.1, 0.0, 0.2]}),
                        ("nan", {"iteration": [1, 2, 3], "rho": [0.1, 0.2, np.nan]})):
        (tmp_path / name).mkdir()
        io.save_results(str(tmp_path / name), es_cfg, {}, hist_, theta)
    fails(tmp_path / "sgd" / "results.h5", "no measured rho in its history .*measure.correlation = true")
    fails(tmp_path / "zero" / "results.h5", r"iteration 2 has rho = 0; a proxy needs 0 < \|rho\| <= 1")
    fails(tmp_path / "nan" / "results.h5", r"iteration 3 has rho = nan; a proxy needs 0 < \|rho\| <= 1")
    with pytest.raises(config.ConfigError, match=r"proxy.rho_from = .* needs run.method = 'proxy' \(got 'sgd'\)"):
        config.load("sgd_small_local", [f"proxy.rho_from={es_run / 'results.h5'}"])


def test_layer_theory_matches_monte_carlo_on_a_linear_objective():
    """On a linear objective ES's estimate from n antithetic pairs is exactly
    1/n sum (eps . g) eps; its per-part correlation with g, averaged over 40 draws, matches
    expected_layer_rho for parts of very different size and share of |g|^2 (relative error of
    the mean of 40 draws: a few %)."""
    rng = np.random.default_rng(11)
    sizes, scales = (50, 2000, 6000), (3.0, 0.3, 0.05)
    g = np.concatenate([s * rng.standard_normal(m) for m, s in zip(sizes, scales)])
    g -= g.mean()
    bounds = np.cumsum((0,) + sizes)
    slices = {f"part{i}": slice(bounds[i], bounds[i + 1]) for i in range(3)}
    slices["all"] = slice(0, g.size)
    n = 400
    measured = {name: [] for name in slices}
    for _ in range(40):
        eps = rng.standard_normal((n, g.size))
        g_hat = (eps @ g) @ eps / n
        for name, s in slices.items():
            measured[name].append(analysis.pearson(g_hat[s], g[s]))
    theory = analysis.expected_layer_rho(g, slices, n)
    assert np.isclose(theory["all"], analysis.expected_rho(n, g.size))
    for name in slices:
        m, sem = np.mean(measured[name]), np.std(measured[name]) / np.sqrt(40)
        assert abs(m - theory[name]) < 4 * sem + 0.01 * theory[name], (name, m, theory[name])


def test_smoothed_gradient_finds_the_smoothed_not_the_local_gradient():
    """f(theta) = sum a_j cos(k_j theta_j): its Gaussian-smoothed gradient is known in closed
    form, -a_j k_j sin(k_j theta_j) exp(-k_j^2 sigma^2 / 2), and at sigma = 0.5 points elsewhere
    than the local gradient (high frequencies damped). The estimate must correlate with it as
    well as its own half-split reliability says, and much better than with the local gradient."""
    rng = np.random.default_rng(5)
    P = 4000
    a, k, theta = rng.uniform(0.5, 2, P), rng.choice([0.5, 1.0, 4.0, 8.0], P), rng.uniform(-3, 3, P)
    sigma = 0.5

    def grad(point):
        return -a * k * np.sin(k * point)

    smooth = -a * k * np.sin(k * theta) * np.exp(-(k * sigma) ** 2 / 2)
    local = grad(theta)
    est, half_r, rho_ref = analysis.smoothed_gradient(grad, theta, sigma, 200, np.random.default_rng(6))
    realised = analysis.pearson(est, smooth)
    assert 0.5 < rho_ref < 1 and abs(realised - rho_ref) < 0.02, (realised, rho_ref, half_r)
    assert analysis.pearson(smooth, local) < 0.8 and analysis.pearson(est, local) < realised - 0.1
    with pytest.raises(ValueError, match="n_pairs = 1"):
        analysis.smoothed_gradient(grad, theta, sigma, 1, rng)


def test_es_runs_log_their_theory_beside_the_measured_rho(mnist_dir):
    """With measure.correlation, full ES logs sqrt(n/(n+P+1)) and the per-layer theory, limited
    ES its own expected rho, each iteration beside the measured one (n = 100 pairs: relative
    sampling spread sqrt(2/n) = 14%, 4 of those allowed)."""
    ds = data.load_mnist(mnist_dir)
    base = ["run.iterations=1", "run.eval_every=0", "es.n_offspring=200", "measure.correlation=true",
            "noise.size=2000000", "data.batch_size=10", "measure.sgd_self_correlation=false"]
    _, full = train.run(config.load("corr_small_local", base), comm.SerialComm(), dataset=ds, quiet=True)
    assert np.allclose(full["rho_theory"], np.sqrt(100 / (100 + 28938 + 1)))  # the closed form, typed here
    for name in ("conv1", "conv2", "fc1"):
        assert all(0 < r < 1 for r in full[f"rho_theory_{name}"])
        assert all(abs(m / p - 1) < 4 * np.sqrt(2 / 100) for m, p in zip(full[f"rho_{name}"], full[f"rho_theory_{name}"]))
    _, lim = train.run(config.load("limited_small_local", base + ["es.bucket_size=2000"]), comm.SerialComm(),
                       dataset=ds, quiet=True)
    assert all(abs(m / p - 1) < 4 * np.sqrt(2 / 100) for m, p in zip(lim["rho"], lim["rho_theory"]))
    assert "rho_theory_conv1" not in lim
    shares = np.array([full[f"gshare_{name}"] for name in ("conv1", "conv2", "fc1")])
    assert np.allclose(shares.sum(axis=0), 1) and (shares > 0).all()


def test_es_correlation_with_the_smoothed_gradient_follows_the_finite_sigma_theory():
    """On f = sum a_j cos(k_j theta_j) at sigma = 0.5 (high frequencies damped: ES follows the
    smoothed gradient, not the local one), ES's estimate from n pairs correlates with the exact
    smoothed gradient as expected_rho_smoothed predicts from the pairs' mean squared reward
    difference, well below the finite-difference theory sqrt(n / (n + P + 1)); 20 populations,
    the mean within 4 standard errors (plus 2%) of the prediction."""
    rng = np.random.default_rng(8)
    P, n, sigma = 3000, 400, 0.5
    a, k, theta = rng.uniform(0.5, 2, P), rng.choice([0.5, 1.0, 4.0, 8.0], P), rng.uniform(-3, 3, P)

    def f(x):
        return np.sum(a * np.cos(k * x), axis=-1)

    smooth = -a * k * np.sin(k * theta) * np.exp(-(k * sigma) ** 2 / 2)
    measured, predicted = [], []
    for _ in range(20):
        eps = rng.standard_normal((n, P))
        d = (f(theta + sigma * eps) - f(theta - sigma * eps)) / (2 * sigma)
        measured.append(analysis.pearson(d @ eps / n, smooth))
        predicted.append(analysis.expected_rho_smoothed(n, P, np.mean(d ** 2), np.dot(smooth, smooth)))
    m, sem = np.mean(measured), np.std(measured) / np.sqrt(20)
    assert abs(m - np.mean(predicted)) < 4 * sem + 0.02 * m, (m, np.mean(predicted))
    assert np.mean(predicted) < 0.8 * analysis.expected_rho(n, P)
