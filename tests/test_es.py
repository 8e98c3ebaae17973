"""ES maths against plain numpy and against theory."""
import numpy as np
import pytest

from hpc_es import config, es, nets, noise


def _es_cfg(**kw):
    return config.from_dict({"run": {"method": "es"}, "noise": {"size": 100_000}, "net": {"arch": "small"},
                             "es": kw}).es


def test_population_structure_and_determinism():
    cfg = _es_cfg(n_offspring=10)
    pop = es.sample_population(cfg, seed=1, t=4, n_params=100, table_size=1000, n_train=600, batch_size=5)
    assert pop.offsets.shape == (5,) and list(pop.member) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert list(pop.sign) == [1, -1] * 5 and pop.batch.shape == (5,)
    again = es.sample_population(cfg, seed=1, t=4, n_params=100, table_size=1000, n_train=600, batch_size=5)
    assert np.array_equal(pop.offsets, again.offsets) and np.array_equal(pop.batch, again.batch)
    # The shared mini-batch is the SGD baseline's for the same (seed, t).
    assert np.array_equal(pop.batch, es.minibatch(1, 4, 600, 5))
    plain = es.sample_population(_es_cfg(n_offspring=7, antithetic=False), 1, 4, 100, 1000, 600, 5)
    assert plain.offsets.shape == (7,) and (plain.sign == 1).all()
    nomb = es.sample_population(_es_cfg(n_offspring=8, mode="nominibatch"), 1, 4, 100, 1000, 600, 5)
    assert nomb.batch.shape == (4, 5) and np.array_equal(nomb.batch_of(2), nomb.batch_of(3))
    # the paper's literal no-mini-batch: every pseudo-offspring its own subset, partners included
    lit = es.sample_population(_es_cfg(n_offspring=8, mode="nominibatch", subset="offspring"), 1, 4, 100, 1000, 600, 5)
    assert lit.batch.shape == (8, 5) and not np.array_equal(lit.batch_of(2), lit.batch_of(3))
    assert np.array_equal(lit.batch_of(3), lit.batch[3])


def test_subsets_have_no_repeats_within_a_row():
    idx = es.subsets(0, 0, 2000, 60, 50)  # tiny pool forces many duplicate draws
    assert all(len(set(row)) == 50 for row in idx)


def test_centered_ranks():
    # ranks 3, 0, 4, 1, 2 (0 = lowest), mapped to rank / (n - 1) - 0.5 (Salimans et al.'s centred ranks)
    f = es.fitness(np.array([3.0, -1.0, 10.0, 0.0, 2.0]), "centered_ranks")
    np.testing.assert_allclose(f, [0.25, -0.5, 0.5, -0.25, 0.0])
    assert es.fitness(np.array([1.0, 2.0]), "raw").tolist() == [1.0, 2.0]


def test_gradient_equals_equation_1_written_out():
    """Eq. (1), 1/(N sigma^2) sum_i v_i r_i with v_i = sigma * sign_i * eps_i, in float64."""
    rng = np.random.default_rng(1)
    P, sigma = 300, 0.01
    table = rng.standard_normal(5000).astype(np.float32)
    cfg = _es_cfg(n_offspring=40)
    pop = es.sample_population(cfg, 3, 0, P, table.size, 100, 5)
    r = rng.standard_normal(40)
    g = es.gradient(table, pop, es.fitness(r, "raw"), sigma, np.empty(P, np.float32))
    ref = np.zeros(P)
    for i in range(40):
        v = sigma * pop.sign[i] * table[pop.offsets[pop.member[i]]:][:P].astype(np.float64)
        ref += v * r[i]
    ref /= 40 * sigma ** 2
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_estimate_is_unbiased_on_a_linear_objective():
    """For f(theta) = a . theta the antithetic estimate has mean a; its per-coordinate
    variance is (|a|^2 + a_j^2) / n for n pairs, so the mean of M estimates lies within
    5 standard errors of a."""
    rng = np.random.default_rng(2)
    P, sigma, n_pairs, M = 50, 0.1, 20, 400
    a = rng.standard_normal(P)
    table = noise.build_table(9, 200_000)
    cfg = _es_cfg(n_offspring=2 * n_pairs)
    total = np.zeros(P)
    for t in range(M):
        pop = es.sample_population(cfg, 0, t, P, table.size, 10, 1)
        r = np.array([a @ (sigma * s * table[pop.offsets[m]:pop.offsets[m] + P])
                      for m, s in zip(pop.member, pop.sign)])
        total += es.gradient(table, pop, es.fitness(r, "raw"), sigma, np.empty(P, np.float32))
    stderr = np.sqrt((a @ a + a ** 2) / n_pairs / M)
    assert (np.abs(total / M - a) < 5 * stderr).all()


def test_evaluate_matches_direct_loss():
    net = nets.small()
    theta = net.init_theta(0)
    table = noise.build_table(1, 100_000)
    rng = np.random.default_rng(3)
    x, y = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8), rng.integers(0, 10, 200)
    for mode in ("minibatch", "nominibatch"):
        pop = es.sample_population(_es_cfg(n_offspring=6, mode=mode), 0, 0, net.n_params, table.size, 200, 8)
        rewards = np.empty(4)
        es.evaluate(net, theta, table, pop, 0.002, x, y, 1, 5, rewards, np.empty_like(theta))
        for j, i in enumerate(range(1, 5)):
            o = pop.offsets[pop.member[i]]
            th = theta + np.float32(pop.sign[i] * 0.002) * table[o:o + net.n_params]
            b = pop.batch_of(i)
            assert np.isclose(rewards[j], -net.loss(th, x[b], y[b]), rtol=1e-6)


@pytest.mark.parametrize("override,message", [
    ("es.sigma=0", r"es.sigma = 0.0: expected a value in"),
    ("es.n_offspring=9", r"es.n_offspring = 9: must be even with es.antithetic = true"),
    ("noise.size=1000", r"noise.size = 1000: shorter than one perturbation of net.arch = 'small' \(28938"),
    ("es.fitness=rank", r"es.fitness = 'rank': expected one of \['raw', 'centered_ranks'\]"),
    ("run.method=es_first_order es.mode=nominibatch", r"run.method = 'es_first_order' needs es.mode = 'minibatch' "
                                                      r"\(got 'nominibatch'\): with a subset per pair every pair"),
])
def test_es_config_errors(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load("es_small_local", override.split())


def test_random_streams_are_distinct():
    """SeedSequence ignores trailing zeros; no two purposes may share a stream."""
    draws = {}
    for seed in (0, 1):
        for t in (0, 1):
            for which in (es.DATA_STREAM, es.NOISE_STREAM, noise.TABLE_STREAM):
                draws[(seed, t, which)] = tuple(es.stream(seed, t, which).integers(0, 2**62, 4))
    draws["plain seed 0"] = tuple(np.random.default_rng(0).integers(0, 2**62, 4))
    assert len(set(draws.values())) == len(draws)


def test_sharded_gradient_slices_equal_the_whole_bit_for_bit():
    rng = np.random.default_rng(5)
    table = rng.standard_normal(40_000).astype(np.float32)
    cfg = _es_cfg(n_offspring=30)
    pop = es.sample_population(cfg, 0, 0, 7000, table.size, 100, 5)
    f = rng.standard_normal(30)
    whole = es.gradient(table, pop, f, 0.01, np.empty(7000, np.float32))
    parts = np.full(7000, np.nan, np.float32)
    for lo, hi in [(0, 2500), (2500, 2501), (2501, 7000)]:
        es.gradient(table, pop, f, 0.01, parts, lo, hi)
    assert np.array_equal(whole, parts)


@pytest.mark.parametrize("limited_draw", [None, "uniform", "size"])
def test_first_order_estimate_equals_es_on_a_quadratic(limited_draw):
    """F(theta) = b . theta - theta' A theta / 2: an antithetic pair's difference F(theta + s eps)
    - F(theta - s eps) is exactly 2 s eps . grad F, so with raw fitness first-order ES is ES
    (full and limited perturbation, same population). Rewards of real ES by plain numpy."""
    from types import SimpleNamespace

    from hpc_es import limited
    rng = np.random.default_rng(12)
    layout = [SimpleNamespace(offset=0, size=600), SimpleNamespace(offset=600, size=20)]  # a weight, a bias
    P, sigma = 620, 0.05
    a = rng.standard_normal((P, P)) / P
    A, b = a @ a.T, rng.standard_normal(P)
    theta = rng.standard_normal(P).astype(np.float32)
    table = rng.standard_normal(50_000).astype(np.float32)

    def F(th):
        th = th.astype(np.float64)
        return b @ th - th @ A @ th / 2

    kw = {"perturbation": "limited", "bucket_size": 150, "bucket_choice": limited_draw} if limited_draw else {}
    cfg = _es_cfg(n_offspring=60, **kw)
    buckets = limited.partition(layout, 150) if limited_draw else None
    pop = es.sample_population(cfg, 4, 2, P, table.size, 100, 5, buckets)
    real = np.empty(pop.size)
    for i in range(pop.size):
        m = pop.member[i]
        start, length = (pop.start[m], pop.length[m]) if pop.limited else (0, P)
        th = theta.astype(np.float64)
        th[start:start + length] += pop.sign[i] * sigma * table[pop.offsets[m]:pop.offsets[m] + length]
        real[i] = F(th)
    grad_f = (b - A @ theta.astype(np.float64)).astype(np.float32)
    d = es.directional_derivatives(table, pop, grad_f, 0, pop.offsets.size, np.empty(pop.offsets.size))
    first = es.first_order_rewards(F(theta), d, pop, sigma)
    g_es = es.gradient(table, pop, es.fitness(real, "raw"), sigma, np.empty(P, np.float32))
    g_fo = es.gradient(table, pop, es.fitness(first, "raw"), sigma, np.empty(P, np.float32))
    np.testing.assert_allclose(g_fo, g_es, rtol=0, atol=1e-5 * np.abs(g_es).max())
    assert np.corrcoef(g_es, g_fo)[0, 1] > 1 - 1e-9


def test_first_order_agrees_with_es_on_the_small_net_at_the_papers_sigma():
    """rho(g_ES, g_first_order) >= 0.999 at sigma = 0.002 on the small net (real rewards by
    es.evaluate, a population of 400 offspring drawn for this test alone: seed 8128, t = 31)."""
    net = nets.small()
    theta = net.init_theta(3)
    table = noise.build_table(5, 2_000_000)
    rng = np.random.default_rng(8128)
    x, y = rng.integers(0, 256, (500, 28, 28), dtype=np.uint8), rng.integers(0, 10, 500)
    pop = es.sample_population(_es_cfg(n_offspring=400), 8128, 31, net.n_params, table.size, 500, 50)
    rewards = np.empty(pop.size)
    es.evaluate(net, theta, table, pop, 0.002, x, y, 0, pop.size, rewards, np.empty_like(theta))
    xb, yb = x[pop.batch], y[pop.batch]
    grad = net.grad(theta, xb, yb).copy()
    d = es.directional_derivatives(table, pop, grad, 0, pop.offsets.size, np.empty(pop.offsets.size))
    first = es.first_order_rewards(-net.loss(theta, xb, yb), -d, pop, 0.002)
    g_es = es.gradient(table, pop, es.fitness(rewards, "raw"), 0.002, np.empty_like(theta))
    g_fo = es.gradient(table, pop, es.fitness(first, "raw"), 0.002, np.empty_like(theta))
    assert np.corrcoef(g_es, g_fo)[0, 1] >= 0.999


def test_deal_gives_every_rank_an_equal_share_of_the_costly_perturbations():
    """es.deal: snake order over perturbations sorted by cost; pairs stay together; counts depend
    on K and the ranks only; every offspring dealt once. 7 costly of 40 pairs over 3 ranks: no
    rank gets more than ceil(7 / 3) of them (an index split of this draw gives one rank all 7)."""
    cost = np.zeros(40)
    cost[10:17] = 5.0
    counts, order = es.deal(cost, 3, True)
    # snake order 0 1 2 2 1 0 | ...: six rounds of 6 pairs give each rank 12, the last 4 pairs go
    # to ranks 0, 1, 2, 2: 13, 13, 14 pairs of 2 offspring
    assert counts.tolist() == [26, 26, 28] and sorted(order.tolist()) == list(range(80))
    assert np.all(order[0::2] % 2 == 0) and np.all(order[1::2] == order[0::2] + 1)  # pairs together
    starts = np.concatenate([[0], np.cumsum(counts)])
    costly = [int(np.sum(cost[order[a:b:2] // 2] > 0)) for a, b in zip(starts[:-1], starts[1:])]
    assert max(costly) == 3 and sum(costly) == 7
    assert np.array_equal(es.deal(np.random.default_rng(0).random(40), 3, True)[0], counts)
    single, order1 = es.deal(cost, 4, False)
    assert single.tolist() == [10, 10, 10, 10] and sorted(order1.tolist()) == list(range(40))
