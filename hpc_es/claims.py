"""The paper's claims, each a small function from the committed archives to a record.

A :class:`Claim` holds the paper's value with where it is and its words, ours, **how ours was
obtained** (:data:`HOW`), the statistics where methods are compared, and a verdict from a fixed
vocabulary (:data:`VERDICTS`) given by a stated rule (:data:`RULES`), never typed by hand.
:mod:`hpc_es.paper_claims` has the claims themselves; :mod:`hpc_es.reproduction` renders them
into docs/REPRODUCTION.md.

Evidence (:class:`Evidence`) is a directory of archived runs (``hpc-es archive``: config,
metadata and history, no theta) and the JSON records commands wrote beside them; a claim whose
runs are not there says so (verdict "not assessed") and names the command that makes them. Every
number in a record is computed here from that evidence; the paper's numbers come from
:mod:`hpc_es.paper`. Nothing here trains, times or knows MPI.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np

from hpc_es import runs as runs_mod, stats

# How our number was obtained, from the most to the least direct (each claim names one).
HOW = {
    "real_es_paper": "real ES at the paper's scale",
    "direct_paper": "run directly at the paper's scale",  # SGD, a benchmark: no ES to stand in for
    "first_order": "first-order ES at the paper's scale (ours: ES's population, first-order rewards)",
    "proxy": "the isotropic proxy at the paper's scale",
    "real_es_local": "real ES at local scale",
    "different_net": "a different net or length (the small net, 28,938 parameters)",
    "projection": "projection (our cost model, per-unit costs measured here)",
    "none": "not obtained",
}

# The verdicts, and the rule that gives each (ours). "reproduced at local scale", "inconsistent via
# an instrument", "not assessed" and "beyond the paper" are ours, beside the issue's vocabulary:
# real runs smaller than the paper's, an instrument that contradicts the paper, claims whose runs
# are not in the archives, questions the paper leaves open.
VERDICTS = ("reproduced", "reproduced at local scale", "reproduced in ordering only",
            "consistent via an instrument", "inconsistent via an instrument", "not reproduced", "not comparable",
            "projected only", "not assessed", "beyond the paper")
RULES = {
    "value": "the paper's value lies within the range of our runs (not a confidence interval), widened by half "
             "a unit of the paper's last printed digit (its rounding)",
    "ordering": "our arms come in the paper's order, each step significant by the exact rank-sum at p < 0.05",
    "no_difference": "the paper's p = 0.75 from 5 vs 5 runs: if each arm's final accuracies were normal with "
                     "the mean and sd of our runs (a model), 5 vs 5 runs would give an exact rank-sum p >= 0.75 "
                     "in at least 5% of experiments; below 5%, our instrument is inconsistent with it",
    "equivalence": "the paper's 'SGD-equivalence at about 20%': the exact rank-sum does not find the 20% arm "
                   "below SGD at p < 0.05",
    "shared_fluctuations": "the paper's 'even fluctuations ... are almost identical': the lowest correlation of "
                           "validation changes over paired runs (same seed: same mini-batches) is above the "
                           "highest over unpaired runs of different seeds, and the largest paired mean gap is "
                           "below the smallest unpaired one",
    "faster": "the method the paper calls faster is faster here, by the ratio shown",
}


@dataclass
class Claim:
    key: str
    what: str          # the claim, in a few words
    where: str         # section, figure or table of the paper
    quote: str         # the paper's words
    paper: str         # the paper's value as it reads there
    ours: str = "-"
    how: str = "none"  # a key of HOW
    verdict: str = "not assessed"
    rule: str = ""     # a key of RULES ("" where the verdict needs none)
    statistics: str = ""
    sources: tuple = ()
    remake: str = ""   # the command that makes missing runs
    beyond: bool = False  # a question the paper leaves open (ours)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"claim {self.key}: verdict {self.verdict!r} is not one of {VERDICTS}")
        if self.how not in HOW or (self.rule and self.rule not in RULES):
            raise ValueError(f"claim {self.key}: how {self.how!r} / rule {self.rule!r} unknown")


@dataclass
class Evidence:
    """The archives under ``root``: finished runs by their directory relative to ``root``, the
    unfinished ones, and JSON records read on demand (paths relative to ``root``)."""
    root: str
    runs: dict = field(default_factory=dict)
    unfinished: list = field(default_factory=list)

    @classmethod
    def load(cls, root):
        ev = cls(root)
        for run in runs_mod.load_runs([root]):
            name = os.path.relpath(os.path.dirname(run.path), root).replace(os.sep, "/")
            if run.complete:
                ev.runs[name] = run
            else:
                ev.unfinished.append(name)
        return ev

    def under(self, prefix):
        """Finished runs whose directory is ``prefix`` or under it, by seed then name."""
        found = [(r.seed, n, r) for n, r in self.runs.items() if n == prefix or n.startswith(prefix + "/")]
        return [r for _, _, r in sorted(found, key=lambda t: t[:2])]

    def record(self, name):
        """The JSON record ``name`` (relative to ``root``), or None if it is not there."""
        path = os.path.join(self.root, name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def name_of(self, run):
        return os.path.relpath(os.path.dirname(run.path), self.root).replace(os.sep, "/")


# ---- numbers into words ------------------------------------------------------------------------
def pct(x, digits=2):
    return f"{100 * x:.{digits}f}%"


def finals(runs):
    return np.array([r.history["val_accuracy"][-1] for r in runs], float)


def spread(values, unit=pct):
    """"96.74% median (96.35-96.99), 5 runs"."""
    v = np.asarray(values, float)
    if v.size == 1:
        return f"{unit(v[0])}, 1 run"
    return f"{unit(np.median(v))} median ({unit(v.min())}-{unit(v.max())}), {v.size} runs"


def half_unit(text):
    """Half a unit of the last printed digit of the paper's value ``text`` ("96.99%" -> 0.005)."""
    digits = text.strip("~%x s").replace(",", "")
    return 0.5 * 10 ** -(len(digits.split(".")[1]) if "." in digits else 0)


def within(values, paper_value, tolerance):
    v = np.asarray(values, float)
    return v.min() - tolerance <= paper_value <= v.max() + tolerance


def compare_text(a, b, names=("a", "b")):
    """Both tests of a vs b final accuracies (exact rank-sum, ours; the paper's inferred test) and the
    paired signed-rank where seeds pair."""
    exact, inferred = stats.rank_sum(a, b), stats.paper_rank_sum(a, b)
    parts = [f"{names[0]} vs {names[1]}: exact two-sided rank-sum (ours), {len(a)} vs {len(b)} runs, "
             f"p = {exact.p:.3g} (smallest possible {exact.min_p:.2g}), r = {exact.effect[1]:+.2f}",
             f"the paper's inferred test (rank-sum, normal approximation; our inference) p = {inferred.p:.3g} "
             f"(smallest possible {inferred.min_p:.2g})"]
    return "; ".join(parts), exact, inferred


def paired_text(by_seed_a, by_seed_b):
    seeds = sorted(set(by_seed_a) & set(by_seed_b))
    w = stats.signed_rank([by_seed_a[s] for s in seeds], [by_seed_b[s] for s in seeds])
    return "" if w is None else (f"; paired by seed: exact signed-rank, {w.n[0]} pairs, p = {w.p:.3g} "
                                 f"(smallest possible {w.min_p:.2g})")


def by_seed(runs):
    return {r.seed: r.history["val_accuracy"][-1] for r in runs}
