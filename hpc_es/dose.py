"""Accuracy as a function of gradient correlation: the ES proxy's dose-response (ours).

The paper's Table 1 has two points (rho = 4% and 20%) beside SGD; this maps the curve. From
SGD runs and constant-rho proxy runs (``hpc-es table1 ... --rhos 0.01,0.02,...``; runs of one
seed share initialisation and mini-batches), each group (below) at one validation iteration T
(given, or the last one every run of the group reached):

* per rho: the runs' accuracies at T (median, quartiles), and the unpaired two-sided rank-sum
  test against SGD's runs with its effect size and the smallest p the run counts allow
  (:func:`hpc_es.stats.rank_sum`);
* the runs per method a rank-sum test would need for 80% power against SGD
  (:func:`hpc_es.stats.runs_for_power`, a normal model of each arm's runs);
* between rho arms (by default each against the next smaller one; ``pairs`` names others, e.g.
  limited ES's rho against full ES's): the same test, effect size and runs for 80% power, so
  "does more correlation buy accuracy here" has its own answer, with or without SGD beside it;
* the smallest rho whose accuracy is not significantly below SGD's (p >= alpha or a median at
  or above SGD's), at that rho and at every larger one; with run counts that cannot reach
  p < alpha the answer is "every rho" and says so (a group without SGD runs has only the
  comparisons between its arms);
* what each rho costs as real ES, by the finite-difference theory (N = 2 (P + 1) rho^2 /
  (1 - rho^2) pseudo-offspring) on each net, and in core-hours for T iterations by the cost
  model (:func:`hpc_es.costs.predict`, per-unit costs measured on some machine).

Runs are grouped by net and by every training setting that departs from the paper's
(:func:`hpc_es.runs.departures`); each group is its own curve. Nothing here trains or knows MPI.
"""
import math

import numpy as np

from hpc_es import analysis, runs as runs_mod, stats

ALPHA = 0.05
COST_NETS = ("tf_tutorial", "small")  # the nets each rho is priced on as real ES


def collect(selected, window=1):
    """{(net, departures): (iteration, {"sgd" or rho: {seed: accuracy}})}: each group's runs of
    :func:`select` read at its validation iteration. ``window``: see :func:`endpoint`."""
    return {key: (at, {arm: {seed: endpoint(r, at, window) for seed, r in by_seed.items()}
                       for arm, by_seed in arms.items()})
            for key, (at, arms) in selected.items()}


def endpoint(run, at, window=1):
    """A run's accuracy read at validation iteration ``at``: that validation's, or with ``window``
    K > 1 the mean of the K validations ending there (ours: one validation's noise, a few tenths
    of a point on tf_tutorial, can hide a difference the curves show)."""
    done = list(np.asarray(run.history["eval_iteration"]))
    end = done.index(at) + 1
    return float(np.mean(run.history["val_accuracy"][max(0, end - window):end]))


def curves(selected):
    """{(net, departures): {arm: (x, median, q25, q75, n_runs)}}: the validation curves of the runs
    of :func:`select`, each group's up to the iteration it is read at (median and quartiles across
    seeds)."""
    out = {}
    for key, (at, arms) in selected.items():
        for arm, by_seed in arms.items():
            curve = runs_mod.band(by_seed.values())
            if curve is not None:
                x, med, q25, q75, n = curve
                keep = x <= at
                out.setdefault(key, {})[arm] = (x[keep], med[keep], q25[keep], q75[keep], n)
    return out


def select(runs, at=None):
    """({(net, departures): (iteration, {"sgd" or rho: {seed: run}})}, skipped): the SGD and
    constant-rho proxy runs among ``runs`` with a validation at the iteration their group is read
    at, grouped by net and departures. ``at`` None: per group, the largest validation iteration
    every run of that group reached (a 10,000-iteration curve is not read at another group's
    2,000); runs without a validation at their group's iteration are left out and counted."""
    chosen = [r for r in runs if r.config["run"]["method"] in ("sgd", "proxy")
              and not r.config["proxy"].get("rho_from") and len(r.history.get("eval_iteration", []))]
    if not chosen:
        raise ValueError("no SGD or constant-rho proxy run with a validation among the runs given")
    by_key = {}
    for r in chosen:
        by_key.setdefault((r.config["net"]["arch"], tuple(runs_mod.departures(r.config))), []).append(r)
    selected, skipped = {}, 0
    for key, members in by_key.items():
        read = at if at is not None else int(min(r.history["eval_iteration"][-1] for r in members))
        arms = {}
        for r in members:
            if read not in list(np.asarray(r.history["eval_iteration"])):
                skipped += 1
                continue
            arm = "sgd" if r.config["run"]["method"] == "sgd" else float(r.config["proxy"]["rho"])
            arms.setdefault(arm, {})[r.seed] = r
        if arms:
            selected[key] = (read, arms)
    return selected, skipped


def summarize(arms, alpha=ALPHA, pairs=None, paper_p=None):
    """One group's curve: {"sgd": stats or None, "rhos": [stats per rho, ascending], "between": [rho
    against rho], "smallest_rho": rho or None, "could_reach": bool}; stats = runs, median, q25, q75,
    and for a rho its test against SGD. ``pairs``: [(rho_a, rho_b)] to compare (those of this group
    with runs in both arms; default: each rho against the next smaller). Without SGD runs (``sgd``
    None) the arms are compared with each other only: no test against SGD, no smallest rho, and
    ``could_reach`` says whether any comparison between arms can reach p < alpha. ``paper_p``: each
    comparison between arms also says how often its run counts would give p >= ``paper_p``
    (:func:`hpc_es.stats.chance_of_p_at_least`), e.g. how likely a published p is."""
    rhos = sorted(k for k in arms if k != "sgd")
    if "sgd" not in arms and len(rhos) < 2:
        raise ValueError("one proxy arm and no SGD runs: nothing to compare it with")
    sgd = _stats(arms["sgd"]) if "sgd" in arms else None
    rows = []
    for rho in rhos:
        row = {"rho": rho, **_stats(arms[rho])}
        test = stats.rank_sum(row["runs"], sgd["runs"]) if sgd else None
        row["test"] = test and test.to_dict()
        row["below_sgd"] = bool(test is not None and test.p < alpha and row["median"] < sgd["median"])
        row["runs_for_power"] = stats.runs_for_power(row["runs"], sgd["runs"], alpha=alpha)[0] if sgd else None
        rows.append(row)
    smallest = None
    for row in reversed(rows if sgd else []):  # the smallest rho from which on no arm is significantly below SGD
        if row["below_sgd"]:
            break
        smallest = row["rho"]
    pairs_between = between(rows, pairs, alpha, paper_p)
    could = any(t["test"] and t["test"]["min_p"] < alpha for t in (rows if sgd else pairs_between))
    return {"sgd": sgd, "rhos": rows, "between": pairs_between, "smallest_rho": smallest,
            "could_reach": could, "alpha": alpha}


def between(rows, pairs=None, alpha=ALPHA, paper_p=None):
    """Rank-sum tests between rho arms of one group (``rows`` as in :func:`summarize`): each pair
    (lower rho, higher rho) with the test of the higher against the lower (effect > 0: more
    correlation, more accuracy) and the runs per arm a rank-sum test would need for 80% power.
    ``pairs`` None: each rho against the next smaller; else only the pairs whose rhos are here."""
    by_rho = {r["rho"]: r for r in rows}
    if pairs is None:
        chosen = list(zip(sorted(by_rho), sorted(by_rho)[1:]))
    else:
        chosen = [tuple(sorted(p)) for p in pairs if all(_match(x, by_rho) is not None for x in p)]
        chosen = [(_match(a, by_rho), _match(b, by_rho)) for a, b in chosen]
    out = []
    for lo, hi in chosen:
        a, b = by_rho[hi]["runs"], by_rho[lo]["runs"]
        test = stats.rank_sum(a, b)
        out.append({"low": lo, "high": hi, "test": test and test.to_dict(),
                    "runs_for_power": stats.runs_for_power(a, b, alpha=alpha)[0]})
        n = min(len(a), len(b))
        if paper_p is not None and 2 <= n <= 8:
            out[-1]["chance_of_paper_p"] = {"p": paper_p, "runs": n,
                                            "chance": stats.chance_of_p_at_least(a, b, n, paper_p)}
    return out


def _match(rho, by_rho):
    """The arm of ``by_rho`` whose rho equals ``rho`` to printing precision (0.039 == 0.0390), or None."""
    return next((r for r in by_rho if math.isclose(r, rho, rel_tol=1e-6)), None)


def _stats(by_seed):
    acc = np.array([by_seed[s] for s in sorted(by_seed)])
    q25, med, q75 = np.percentile(acc, [25, 50, 75])
    return {"runs": acc.tolist(), "seeds": sorted(by_seed), "median": float(med), "q25": float(q25),
            "q75": float(q75)}


def es_cost(rho, arch, iterations, units, ranks=100, ranks_per_node=32):
    """(N, core-hours): the pseudo-offspring real ES needs on ``arch`` for ``rho`` by the theory
    (rounded up to an even count), and the cost model's core-hours for ``iterations`` of
    mini-batch ES with that N on ``ranks`` ranks (the paper's other settings)."""
    from hpc_es import config, costs, nets
    P = nets.build(arch).n_params
    n = 2 * math.ceil(analysis.pairs_for_rho(rho, P))
    cfg = config.from_dict({"net": {"arch": arch}, "run": {"method": "es", "iterations": iterations},
                            "es": {"n_offspring": max(n, 2)}})
    return n, costs.predict(cfg, ranks, units, ranks_per_node=ranks_per_node).core_hours


def markdown(key, at, summary, units=None, cost_nets=COST_NETS):
    """The table of one group's curve, its reading, and (with ``units``) the cost of each rho as ES
    on each of ``cost_nets`` that ``units`` has costs for (the others are named, not priced)."""
    net, departures = key
    unpriced = [n for n in cost_nets if units and n not in units]
    cost_nets = [n for n in cost_nets if not units or n in units]
    s, alpha, window = summary["sgd"], summary["alpha"], summary.get("window", 1)
    setting = (f"{net}, validation accuracy at iteration {at:,}" if window == 1 else
               f"{net}, mean validation accuracy over the {window} validations ending at iteration {at:,}")
    setting += "".join(f", {d}" for d in departures)
    head = "| arm | runs | median | quartiles | rank-sum vs SGD: p (smallest possible), r | runs for 80% power |"
    cols = "| --- | ---: | ---: | ---: | ---: | ---: |"
    if units:
        head += "".join(f" ES N on {n} (theory) | ES core-hours on {n}, {at:,} it. (model) |" for n in cost_nets)
        cols += " ---: | ---: |" * len(cost_nets)
    lines = [f"Accuracy against rho ({setting})", "", head, cols]
    if s:
        lines.append(f"| SGD | {len(s['runs'])} | {100 * s['median']:.2f}% | {100 * s['q25']:.2f}-{100 * s['q75']:.2f}% "
                     "| - | - |" + (" - | - |" * len(cost_nets) if units else ""))
    for row in summary["rhos"]:
        t = row["test"]
        test = "no SGD runs" if s is None else "n/a" if t is None else \
            f"{t['p']:.3g} ({t['min_p']:.2g}), {t['effect'][1]:+.2f}"
        power = "-" if s is None else row["runs_for_power"] or "> 200"
        line = (f"| proxy, rho = {100 * row['rho']:g}% | {len(row['runs'])} | {100 * row['median']:.2f}% | "
                f"{100 * row['q25']:.2f}-{100 * row['q75']:.2f}% | {test} | {power} |")
        if units:
            for n in cost_nets:
                count, hours = es_cost(row["rho"], n, at, units)
                line += f" {count:,} | {hours:,.0f} |" if hours >= 10 else f" {count:,} | {hours:.2g} |"
        lines.append(line)
    lines += _between_lines(summary)
    lines.append("")
    if s is None:
        lines.append("No SGD runs trained alike: the arms are compared with each other only (two-sided "
                     "rank-sum)." + ("" if summary["could_reach"] else
                                     f" These run counts cannot reach p < {alpha} in any of those comparisons."))
    elif not summary["could_reach"]:
        lines.append(f"These run counts cannot reach p < {alpha} in any comparison: no rho can be called "
                     f"significantly below SGD with them.")
    elif summary["smallest_rho"] is None:
        lines.append(f"Every rho measured is significantly below SGD (two-sided rank-sum, p < {alpha}).")
    else:
        lines.append(f"Smallest rho not significantly below SGD (two-sided rank-sum, p >= {alpha} or a median "
                     f"at or above SGD's, there and at every larger rho): {100 * summary['smallest_rho']:g}%.")
    lines.append("Runs for 80% power: per method, for the rank-sum test at this alpha, if each arm's accuracies "
                 "were normal with its runs' mean and standard deviation (ours: a model)" +
                 ("; chance of p >= P: how often that many runs per arm would give a two-sided exact rank-sum "
                  "p >= P under the same model." if any("chance_of_paper_p" in p for p in summary["between"]) else "."))
    if units:
        lines.append("ES N: the theory's pseudo-offspring for that rho, 2 (P + 1) rho^2 / (1 - rho^2) (ours); "
                     "core-hours: our cost model on 100 ranks (32 per node), per-unit costs as measured." +
                     (f" No per-unit costs given for {', '.join(unpriced)}: not priced "
                      f"(`hpc-es plan PRESET --save-units FILE` on a preset of that net measures them)." if unpriced else ""))
    return "\n".join(lines)


def _between_lines(summary):
    """The table of rho arms against each other (and the chance of the paper's p), if any."""
    lines = []
    if summary.get("between"):
        lines += ["", "| higher rho against lower | medians | rank-sum: p (smallest possible), r | runs for 80% power |",
                  "| --- | ---: | ---: | ---: |"]
        by_rho = {r["rho"]: r for r in summary["rhos"]}
        chance = [p["chance_of_paper_p"] for p in summary["between"] if "chance_of_paper_p" in p]
        if chance:
            lines[-2] += f" chance of p >= {chance[0]['p']:g} |"
            lines[-1] += " ---: |"
        for pair in summary["between"]:
            t, hi, lo = pair["test"], by_rho[pair["high"]], by_rho[pair["low"]]
            test = "n/a" if t is None else f"{t['p']:.3g} ({t['min_p']:.2g}), {t['effect'][1]:+.2f}"
            line = (f"| {100 * pair['high']:g}% against {100 * pair['low']:g}% | {100 * hi['median']:.2f}% vs "
                    f"{100 * lo['median']:.2f}% | {test} | {pair['runs_for_power'] or '> 200'} |")
            if chance:
                c = pair.get("chance_of_paper_p")
                line += f" {c['chance']:.1%} ({c['runs']} vs {c['runs']}) |" if c else " - |"
            lines.append(line)
    return lines
