"""Comparing methods over runs: the tests, their smallest p, power, and the paper's inferred test.

Methods trained with independent seeds are independent samples: their primary comparison is
the unpaired two-sided Mann-Whitney U (rank-sum) test, computed exactly (:func:`rank_sum`),
whose smallest possible p with n_a and n_b runs and no ties is 2 / C(n_a + n_b, n_a) (5 vs 5:
2/252 = 0.0079; 3 vs 3: 0.1). Runs of two methods that share a seed also share the initial
theta and the mini-batches, so they pair: the exact paired Wilcoxon signed-rank test is a
secondary line, whose smallest p with n pairs is 2 / 2^n (5 pairs: 0.0625).

The paper reports "the Wilcoxon test" (Sec. 4.1, 4.2) without saying which. Ours, an inference:
its p = 0.75 from 5 vs 5 runs is what the rank-sum statistic's normal approximation
(``scipy.stats.ranksums``, :func:`paper_rank_sum`) gives at U = 11 or 14, a value the exact
rank-sum cannot take. Its Fig. 4 "p < 0.05" from 5 runs each fits more than one test: that
approximation (5 vs 5 fully separated: 0.009) and also the signed-rank test's normal
approximation (5 pairs of one sign: 0.043); only the exact signed-rank test cannot give it.
Approximations reach below the exact floors: 3 vs 3 fully separated gives 0.0495 by the
rank-sum's approximation, so "3 vs 3 runs cannot reach p < 0.05" holds for the exact test only.
Reports show the exact test as ours and the inferred one beside it, each by name.

scipy is a core dependency: these are the numbers a reproduction is judged by.
"""
import itertools
import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import scipy.stats


@dataclass(frozen=True)
class Comparison:
    """The outcome of a two-sample test of a vs b, with what the run counts allow.

    test: its name; n: (runs of a, runs of b) or (pairs,); p: two-sided p-value; min_p: the
    smallest p these run counts allow (exact test, no ties); effect: (name, value) of the
    effect size, +1 when every a is above every b, -1 when below; median_difference: median(a)
    - median(b) (unpaired) or the median of the paired differences.
    """

    test: str
    n: tuple
    p: float
    min_p: float
    effect: tuple
    median_difference: float

    def could_reach(self, p):
        """Whether these run counts can give a p-value below ``p`` at all."""
        return self.min_p < p

    def text(self):
        runs = " vs ".join(map(str, self.n)) + " runs" if len(self.n) == 2 else f"{self.n[0]} pairs"
        return (f"{self.test}, {runs}: p = {self.p:.3g} (smallest possible {self.min_p:.3g}), "
                f"{self.effect[0]} {self.effect[1]:+.2f}")

    def to_dict(self):
        return {"test": self.test, "n": list(self.n), "p": self.p, "min_p": self.min_p,
                "effect": list(self.effect), "median_difference": self.median_difference}


def min_p_rank_sum(n_a, n_b):
    """Smallest two-sided p of the exact Mann-Whitney U test with n_a and n_b samples."""
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a)) if n_a and n_b else 1.0


def min_p_signed_rank(n_pairs):
    """Smallest two-sided p of the exact Wilcoxon signed-rank test with n_pairs pairs."""
    return min(1.0, 2.0 / 2 ** n_pairs) if n_pairs else 1.0


EXACT_SPLITS = 20_000  # up to 8 vs 8 runs (12,870 splits): the exact permutation p, ties or not


def rank_sum(a, b):
    """Two-sided Mann-Whitney U (rank-sum) test of independent samples a, b: the exact p over
    every split of the pooled runs (midranks for ties, :func:`exact_rank_sum_p`) while there are
    at most :data:`EXACT_SPLITS` splits, else scipy's default (exact without ties, the normal
    approximation with them). Accuracies of 10,000 test images tie often, and scipy's default
    would then give 5 vs 5 fully separated runs p = 0.012 instead of 2/252 = 0.0079. Effect size:
    the rank-biserial correlation 2 U_a / (n_a n_b) - 1. None when a sample
    is empty."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    mannwhitneyu = _scipy("mannwhitneyu")
    if not a.size or not b.size:
        return None
    res = mannwhitneyu(a, b, alternative="two-sided")
    u = float(res.statistic)  # U of the first sample: pairs (a_i, b_j) with a_i > b_j, ties 1/2
    p = exact_rank_sum_p(a, b) if math.comb(a.size + b.size, a.size) <= EXACT_SPLITS else float(res.pvalue)
    return Comparison("two-sided Mann-Whitney U (rank-sum)", (a.size, b.size), p,
                      min_p_rank_sum(a.size, b.size), ("rank-biserial r", 2 * u / (a.size * b.size) - 1),
                      float(np.median(a) - np.median(b)))


def paper_rank_sum(a, b):
    """The paper's "Wilcoxon test" as we infer it (ours: by enumeration, ``scipy.stats.ranksums``,
    the rank-sum statistic's normal approximation without continuity correction, is the test
    that gives its p = 0.75 from 5 vs 5 runs, at U = 11 or 14; the exact test cannot take that
    value). Reported beside :func:`rank_sum`, never instead of it; its ``min_p`` is this
    approximation's own for fully separated samples (5 vs 5: 0.0090; 3 vs 3: 0.0495). None when a
    sample is empty."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ranksums = _scipy("ranksums")
    if not a.size or not b.size:
        return None
    u = sum(float(np.sum(x > b) + 0.5 * np.sum(x == b)) for x in a)
    return Comparison("two-sided rank-sum, normal approximation (the paper's test, our inference)",
                      (a.size, b.size), float(ranksums(a, b).pvalue),
                      float(ranksums(np.arange(a.size), a.size + np.arange(b.size)).pvalue),  # fully separated
                      ("rank-biserial r", 2 * u / (a.size * b.size) - 1), float(np.median(a) - np.median(b)))


def signed_rank(a, b):
    """Two-sided paired Wilcoxon signed-rank test of a[i] vs b[i] (scipy); effect size: the
    matched-pairs rank-biserial correlation (W+ - W-) / (W+ + W-). None with fewer than two
    pairs or no non-zero difference."""
    d = np.asarray(a, float) - np.asarray(b, float)
    wilcoxon_ = _scipy("wilcoxon")
    if d.size < 2 or not d.any():
        return None
    nonzero = d[d != 0]
    ranks = _average_ranks(np.abs(nonzero))
    effect = float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())
    return Comparison("two-sided Wilcoxon signed-rank (paired by seed)", (d.size,), float(wilcoxon_(a, b).pvalue),
                      min_p_signed_rank(nonzero.size), ("matched-pairs rank-biserial r", effect),
                      float(np.median(d)))


def rank_sum_power(a, b, n, alpha=0.05, sims=4000, seed=0):
    """Power of the two-sided rank-sum test at level ``alpha`` with ``n`` runs per method, if
    each method's final accuracies were normal with the mean and standard deviation (ddof 1)
    of its runs in ``a`` and ``b`` (ours: a model, stated wherever it is used). ``sims``
    simulated experiments; the test's normal approximation with continuity correction, and 0
    wherever the exact test cannot go below ``alpha`` with n vs n runs."""
    if min_p_rank_sum(n, n) >= alpha:
        return 0.0
    a, b = np.asarray(a, float), np.asarray(b, float)
    sd_a, sd_b = (float(x.std(ddof=1)) if x.size > 1 else 0.0 for x in (a, b))
    if sd_a == 0 and sd_b == 0:  # every simulated experiment separates the two fully, or none does
        return float(a.mean() != b.mean())
    u = _simulated_u(a, b, n, sims, seed)
    mean, sd = n * n / 2, math.sqrt(n * n * (2 * n + 1) / 12)
    z = np.maximum(np.abs(u - mean) - 0.5, 0) / sd
    return float(np.mean(z > NormalDist().inv_cdf(1 - alpha / 2)))


def chance_of_p_at_least(a, b, n, p0, sims=4000, seed=0):
    """How often n vs n runs give a two-sided exact rank-sum p >= ``p0`` under the model of
    :func:`rank_sum_power` (each method normal with its runs' mean and sd): e.g. how likely a
    published p = 0.75 is if the two methods differ as ``a`` and ``b`` do. Exact p per
    experiment from the null distribution of U (no ties: continuous values); n <= 8."""
    if n > 8:
        raise ValueError(f"n = {n}: the exact null distribution is enumerated up to 8 vs 8 runs")
    a, b = np.asarray(a, float), np.asarray(b, float)
    null = np.array([sum(c) for c in itertools.combinations(range(1, 2 * n + 1), n)]) - n * (n + 1) / 2
    centre = n * n / 2
    p_of_u = {u: float(np.mean(np.abs(null - centre) >= abs(u - centre) - 1e-9)) for u in range(n * n + 1)}
    u = _simulated_u(a, b, n, sims, seed)
    return float(np.mean([p_of_u[int(round(x))] >= p0 - 1e-12 for x in u]))


def _simulated_u(a, b, n, sims, seed):
    """U of ``a``'s side in ``sims`` simulated n vs n experiments, each method normal with its
    runs' mean and sd (ddof 1; 0 for one run)."""
    sd_a, sd_b = (float(x.std(ddof=1)) if x.size > 1 else 0.0 for x in (a, b))
    rng = np.random.default_rng(seed)
    both = np.concatenate([a.mean() + sd_a * rng.standard_normal((sims, n)),
                           b.mean() + sd_b * rng.standard_normal((sims, n))], axis=1)
    # with one sample continuous, values tie between the samples with probability 0, so plain
    # ranks give U (ties inside one sample do not change its rank sum)
    ranks = np.empty_like(both)
    np.put_along_axis(ranks, np.argsort(both, axis=1), np.arange(1, 2 * n + 1, dtype=float)[None, :], axis=1)
    return ranks[:, :n].sum(axis=1) - n * (n + 1) / 2


def runs_for_power(a, b, power=0.8, alpha=0.05, max_runs=200, sims=4000, seed=0):
    """(n, its power): the smallest number of runs per method at which :func:`rank_sum_power`
    reaches ``power`` under the same model, or (None, the power at ``max_runs``)."""
    lo, hi = 1, 2
    while rank_sum_power(a, b, hi, alpha, sims, seed) < power:
        if hi >= max_runs:
            return None, rank_sum_power(a, b, max_runs, alpha, sims, seed)
        lo, hi = hi, min(2 * hi, max_runs)
    while hi - lo > 1:  # the smallest n in (lo, hi] that reaches it
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if rank_sum_power(a, b, mid, alpha, sims, seed) >= power else (mid, hi)
    return hi, rank_sum_power(a, b, hi, alpha, sims, seed)


def wilcoxon(a, b):
    """p of :func:`signed_rank`, or None (files of earlier versions report this one test)."""
    res = signed_rank(a, b)
    return None if res is None else res.p


def exact_rank_sum_p(a, b):
    """Two-sided permutation p of the rank-sum statistic: the share of all C(n_a + n_b, n_a)
    splits of the pooled values (midranks for ties) whose first part's rank sum is at least as
    far from its mean n_a (n_a + n_b + 1) / 2 as ``a``'s. Exact, ties or not; for small samples."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ranks = _average_ranks(np.concatenate([a, b]))
    mean = a.size * (ranks.size + 1) / 2
    observed = abs(ranks[:a.size].sum() - mean)
    sums = np.array([ranks[list(c)].sum() for c in itertools.combinations(range(ranks.size), a.size)])
    return float(np.mean(np.abs(sums - mean) >= observed - 1e-9))  # rank sums are multiples of 1/2


def _average_ranks(x):
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size, float)
    ranks[order] = np.arange(1, x.size + 1)
    for value in np.unique(x):  # ties share their average rank
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _scipy(name):
    return getattr(scipy.stats, name)


def jonckheere(groups, permutations=20_000, seed=0):
    """One-sided Jonckheere-Terpstra trend test that ``groups`` (lists of values, in the order of
    the hypothesised increase) rise: J = the sum over group pairs i < j of the pairs (x in i,
    y in j) with x < y (ties 1/2). One test over all arms instead of one per pair (the
    dose-response's multiple comparisons). p by ``permutations`` random relabellings of the
    pooled values (seeded: the same p every time; its resolution is 1 / permutations), and the
    smallest p the counts allow, 1 / (multinomial count of the labellings), for no ties.
    Returns (J, p, smallest p)."""
    sizes = [len(g) for g in groups]
    pooled = np.concatenate([np.asarray(g, float) for g in groups])
    labels = np.repeat(np.arange(len(groups)), sizes)

    def statistic(lab):
        total = 0.0
        for i in range(len(groups)):
            xi = pooled[lab == i]
            for j in range(i + 1, len(groups)):
                yj = pooled[lab == j]
                total += np.sum(xi[:, None] < yj[None, :]) + 0.5 * np.sum(xi[:, None] == yj[None, :])
        return total

    observed = statistic(labels)
    rng = np.random.default_rng(seed)
    hits = sum(statistic(rng.permutation(labels)) >= observed - 1e-9 for _ in range(permutations))
    labellings = math.factorial(len(pooled))
    for n in sizes:
        labellings //= math.factorial(n)
    return float(observed), (hits + 1) / (permutations + 1), 1.0 / labellings
