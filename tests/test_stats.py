"""The statistics of comparing methods over runs (:mod:`hpc_es.stats`), against exact
enumeration, textbook values and scipy's own exact tests."""
import numpy as np
import pytest

from hpc_es import stats


def test_rank_sum_and_signed_rank_give_the_known_exact_values():
    low, high = [0.961, 0.962, 0.963, 0.964, 0.965], [0.971, 0.972, 0.973, 0.974, 0.975]
    r = stats.rank_sum(high, low)  # 5 vs 5, fully separated: p = 2 / C(10, 5) = 2/252
    assert np.isclose(r.p, 2 / 252) and np.isclose(r.min_p, 2 / 252) and r.effect[1] == 1.0
    assert r.could_reach(0.05) and "5 vs 5 runs" in r.text() and np.isclose(r.median_difference, 0.01)
    assert stats.rank_sum(low, high).effect[1] == -1.0
    tied = stats.rank_sum([0.9919, 0.9906, 0.9914, 0.9891, 0.9904], [0.9838, 0.9852, 0.9838, 0.9864, 0.9829])
    assert np.isclose(tied.p, 2 / 252)  # a tie inside one arm (Table 1's proxy 20%) leaves the exact p as it is
    # A tie across the arms (the two 3s share rank 3.5): the first arm's rank sum is 17.5, 10 below
    # its mean 27.5. Of the 252 splits, 5 have a rank sum <= 17.5 ({1,2,3,3,x} for x = 4, 5, 6:
    # 15, 16, 17; {1,2,3,4,5} with either 3: 17.5) and 5 mirror them at >= 37.5: p = 10/252
    # (scipy's normal approximation says 0.047).
    across = stats.rank_sum([1, 2, 3, 4, 5], [3, 6, 7, 8, 9])
    assert np.isclose(across.p, 10 / 252)
    mixed = stats.rank_sum([1, 3, 5, 7, 9], [2, 4, 6, 8, 10])  # U = 10 of 25: r = -0.2
    assert np.isclose(mixed.effect[1], -0.2) and mixed.p > 0.5
    s = stats.signed_rank(high, low)  # 5 pairs, all one way: p = 2 / 2^5
    assert np.isclose(s.p, 0.0625) and np.isclose(s.min_p, 0.0625) and s.effect[1] == 1.0
    assert not s.could_reach(0.05)  # the paired test on 5 pairs can never give p < 0.05
    assert np.isclose(stats.min_p_rank_sum(20, 20), 2 / 137846528820)
    assert stats.min_p_rank_sum(1, 1) == 1.0 and stats.min_p_signed_rank(6) == 2 / 64
    assert stats.signed_rank([1, 2], [1, 2]) is None and stats.rank_sum([], [1]) is None


def test_runs_for_power_matches_the_textbook_sample_size():
    """Two normal populations one standard deviation apart: a two-sided t-test at 5% needs 17
    runs per group for 80% power, and the rank-sum test 1/0.955 as many (its asymptotic
    relative efficiency, 3/pi), so 18; the simulation must land within one run of that. With
    3 vs 3 runs the exact test cannot reach p < 0.05, so its power there is 0."""
    a, b = np.array([-1.0, 1.0]) / np.sqrt(2), np.array([-1.0, 1.0]) / np.sqrt(2) + 1
    n, power = stats.runs_for_power(a, b)
    assert 17 <= n <= 19 and 0.8 <= power < 0.85
    assert stats.rank_sum_power(a, b, 3) == 0.0 and stats.rank_sum_power([0, 0.1], [5, 5.1], 4) == 1.0
    assert stats.runs_for_power([0.0, 0.1], [0.0, 0.1], max_runs=8)[0] is None  # no difference: never


def test_chance_of_a_large_p_matches_scipys_exact_test_on_simulated_experiments():
    """How often 5 vs 5 runs give p >= 0.75 (and >= 0.05) when the methods differ by 1.4 standard
    deviations, against scipy's exact Mann-Whitney p on 2,000 experiments drawn independently;
    with no difference, p >= 0.75 has the exact null's probability 1 - p(U = 10) = 0.31 by hand:
    U in 11..14 of 0..25 (counts 19, 20, 20, 19 of 252 splits -> 78/252)."""
    import scipy.stats as scipy_stats
    a, b = np.array([0.0, 1.0, 2.0, 1.0, 1.0]) + 1.4 * np.std([0, 1, 2, 1, 1], ddof=1), np.array([0.0, 1, 2, 1, 1])
    rng = np.random.default_rng(5)
    draws = [(a.mean() + a.std(ddof=1) * rng.standard_normal(5), b.mean() + b.std(ddof=1) * rng.standard_normal(5))
             for _ in range(2000)]
    scipy_p = np.array([scipy_stats.mannwhitneyu(x, y, method="exact").pvalue for x, y in draws])
    for p0 in (0.75, 0.05):
        assert abs(stats.chance_of_p_at_least(a, b, 5, p0) - np.mean(scipy_p >= p0)) < 0.035, p0
    assert abs(stats.chance_of_p_at_least(b, b, 5, 0.75, sims=20000) - 78 / 252) < 0.012
    with pytest.raises(ValueError, match="up to 8 vs 8"):
        stats.chance_of_p_at_least(a, b, 9, 0.75)


def test_paper_rank_sum_gives_the_papers_p_where_the_exact_test_cannot():
    """5 vs 5 at U = 11 (our inference of the paper's test): p = 0.754 by the normal
    approximation, 0.841 exact; 3 vs 3 fully separated: 0.0495 (below 0.05, which the exact
    test's 0.1 cannot reach). U counted by hand: a = 1..5, b = 0.5, 2.5, 3.5, 4.5, 6."""
    import itertools
    import math
    a, b = [1, 2, 3, 4, 5], [0.5, 2.5, 3.5, 4.5, 6]  # U_a = 5 + 3 + 2 + 1 + 0 = 11

    def normal_p(u, m, n):  # two-sided, no continuity correction: z = (U - mn/2) / sqrt(mn(m+n+1)/12)
        return math.erfc(abs(u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12) / math.sqrt(2))

    # exact: the share of the 252 splits of ranks 1..10 into 5 and 5 whose U is as far from 12.5
    u_of = [sum(r - i - 1 for i, r in enumerate(sorted(c))) for c in itertools.combinations(range(1, 11), 5)]
    exact_p = sum(abs(u - 12.5) >= 1.5 for u in u_of) / len(u_of)
    paper, exact = stats.paper_rank_sum(a, b), stats.rank_sum(a, b)
    assert paper.p == pytest.approx(normal_p(11, 5, 5)) and round(paper.p, 3) == 0.754  # the paper's 0.75
    assert exact.p == pytest.approx(exact_p) and round(exact.p, 3) == 0.841  # the exact test: not 0.75
    assert paper.effect[1] == pytest.approx(2 * 11 / 25 - 1)
    separated = stats.paper_rank_sum([1, 2, 3], [4, 5, 6])
    assert separated.p == pytest.approx(normal_p(0, 3, 3)) == separated.min_p and separated.p < 0.05
    assert stats.paper_rank_sum([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]).min_p == pytest.approx(normal_p(0, 5, 5))


def test_signed_rank_normal_approximation_reaches_below_005_on_five_pairs():
    """Why the paper's Fig. 4 p < 0.05 from 5 runs does not identify its test: the signed-rank
    test's normal approximation gives 5 pairs of one sign p = 0.043, the exact test 0.0625."""
    import scipy.stats as scipy_stats
    a, b = [2, 4, 6, 8, 10], [1, 2, 3, 4, 5]  # differences 1..5: no ties
    assert scipy_stats.wilcoxon(a, b, method="approx").pvalue == pytest.approx(0.043, abs=1e-3)
    assert stats.signed_rank(a, b).p == pytest.approx(0.0625)


def test_jonckheere_on_two_groups_is_the_one_sided_exact_rank_sum():
    """With two groups J is Mann-Whitney's U of the second over the first, so its permutation p
    must match scipy's exact one-sided test (to the permutations' resolution); three fully
    ordered groups of 3 give the smallest p, 1/1680, and no trend gives a large p."""
    import scipy.stats as scipy_stats
    low, high = [0.1, 0.4, 0.35, 0.8], [0.5, 0.9, 0.7, 0.2]
    j, p, floor = stats.jonckheere([low, high], permutations=20_000)
    exact = scipy_stats.mannwhitneyu(high, low, alternative="greater", method="exact")
    assert j == exact.statistic and p == pytest.approx(exact.pvalue, abs=0.01) and floor == 1 / 70
    _, p, floor = stats.jonckheere([[1, 2, 3], [4, 5, 6], [7, 8, 9]], permutations=20_000)
    assert floor == 1 / 1680 and p < 0.002
    assert stats.jonckheere([[3, 2, 1], [1, 2, 3]], permutations=2000)[1] > 0.4
