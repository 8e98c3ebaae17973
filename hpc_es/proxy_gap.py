"""Where the ES proxy stops predicting ES: ES runs at several sigma beside proxies that follow
their measured rho (ours, issue 15 section 3; the reading notes' Question 2).

The proxy of the paper models ES as SGD plus noise at the correlation ES has. Given ES runs
made with ``measure.correlation = true`` and, for each, a proxy run with the same seed (same
initialisation and mini-batches) and ``proxy.rho_from`` = that ES run's results file, this
module pairs them and, per sigma:

* the gap between the two validation curves per seed (proxy minus ES, at the iterations both
  validated): its mean and its value at the last common iteration;
* the seed-to-seed spread of ES's final accuracy (standard deviation over seeds, ddof 1);
* whether the proxy predicts ES there: the median final gap within that spread;
* the two-sided rank-sum test of ES's against the proxies' final accuracies.

The sigma from which on the proxy no longer predicts ES is the smallest sigma whose median
gap leaves the spread.

The same summary serves the second instrument, first-order ES (issue 27, ours): a run with
``run.method = "es_first_order"`` is the twin of the real ES run whose config differs from its
own in the method alone (:func:`twins`), same seed: the same population every iteration, so
their gap is the higher-order part of ES. Nothing here trains or knows MPI.
"""
import numpy as np

from hpc_es import config, runs as runs_mod, stats


def pairs(runs):
    """{(net, sigma): {seed: (ES run, proxy run)}} of ES runs with a measured rho and the proxy
    runs that follow them (the run id the proxy recorded of its ``proxy.rho_from``, same seed);
    and the proxies whose ES run is not among ``runs`` (their paths)."""
    es_runs = [r for r in runs if r.config["run"]["method"] == "es" and "rho" in r.history]
    out, orphans = {}, []
    for r in runs:
        source = r.config["run"]["method"] == "proxy" and r.config["proxy"].get("rho_from")
        if not source:
            continue
        es = runs_mod.by_id([e for e in es_runs if e.seed == r.seed], r.rho_from_id)
        if es is None:
            orphans.append(r.path)
            continue
        key = (es.config["net"]["arch"], float(es.config["es"]["sigma"]))
        out.setdefault(key, {})[r.seed] = (es, r)
    return dict(sorted(out.items())), orphans


def twins(runs):
    """{(net, N, sigma): {seed: (ES run, first-order run)}}: each first-order ES run beside the
    real ES run whose config differs from its own in ``run.method`` alone (keys that do not
    change the trajectory, e.g. iterations, may differ), and the first-order runs without one
    (their paths)."""
    es_runs = [r for r in runs if r.config["run"]["method"] == "es"]
    out, orphans = {}, []
    for r in runs:
        if r.config["run"]["method"] != "es_first_order":
            continue
        es = next((e for e in es_runs if e.seed == r.seed and config.trajectory_diff(e.config, r.config) ==
                   ["run.method: 'es' -> 'es_first_order'"]), None)
        if es is None:
            orphans.append(r.path)
            continue
        e = es.config
        out.setdefault((e["net"]["arch"], e["es"]["n_offspring"], float(e["es"]["sigma"])), {})[r.seed] = (es, r)
    return dict(sorted(out.items())), orphans


def _common(a, b):
    """Validation accuracies of runs a and b at the iterations both validated."""
    ia, ib = np.asarray(a.history["eval_iteration"]), np.asarray(b.history["eval_iteration"])
    it = np.intersect1d(ia, ib)
    va = np.asarray(a.history["val_accuracy"], float)[np.searchsorted(ia, it)]
    vb = np.asarray(b.history["val_accuracy"], float)[np.searchsorted(ib, it)]
    return it, va, vb


def summarize(by_seed, other="proxy"):
    """One sigma's pairs {seed: (es, other run)} (``other``: "proxy" or "first_order"): per-seed
    gaps (other - ES) and the two validation curves' Pearson correlation, ES's seed spread, the
    verdict."""
    rows = []
    for seed in sorted(by_seed):
        es, twin = by_seed[seed]
        it, acc_es, acc_other = _common(es, twin)
        if not it.size:
            continue
        gap = acc_other - acc_es
        curve_r = float(np.corrcoef(acc_es, acc_other)[0, 1]) if it.size > 2 else float("nan")
        rows.append({"seed": seed, "iterations": int(it[-1]), "es_final": float(acc_es[-1]),
                     f"{other}_final": float(acc_other[-1]), "final_gap": float(gap[-1]),
                     "mean_gap": float(gap.mean()), "mean_abs_gap": float(np.abs(gap).mean()), "curve_r": curve_r,
                     "es_rho": float(np.mean(es.history["rho"])) if "rho" in es.history else float("nan")})
    if not rows:
        return None
    es_final = [r["es_final"] for r in rows]
    spread = float(np.std(es_final, ddof=1)) if len(rows) > 1 else float("nan")
    median_gap = float(np.median([r["final_gap"] for r in rows]))
    other_final = [r[f"{other}_final"] for r in rows]
    test = stats.rank_sum(other_final, es_final)
    paired = stats.signed_rank(other_final, es_final)  # the same seed: same initialisation and mini-batches
    return {"seeds": rows, "es_spread": spread, "median_final_gap": median_gap,
            "median_mean_gap": float(np.median([r["mean_gap"] for r in rows])),
            "median_curve_r": float(np.median([r["curve_r"] for r in rows])),
            "predicts": bool(abs(median_gap) <= spread) if np.isfinite(spread) else None,  # None: one seed
            "test": test and test.to_dict(), "paired": paired and paired.to_dict()}


def breakdown(summaries):
    """The smallest sigma from which on (there and at every larger sigma measured) the proxy no
    longer predicts ES, per net: {net: sigma or None}; "undetermined" where a sigma has runs of
    one seed only (no seed-to-seed spread to compare with)."""
    out = {}
    for net in sorted({k[0] for k in summaries}):
        sigmas = sorted(s for (n, s) in summaries if n == net and summaries[(n, s)])
        if any(summaries[(net, s)]["predicts"] is None for s in sigmas):
            out[net] = "undetermined"
            continue
        first = None
        for sigma in reversed(sigmas):
            if summaries[(net, sigma)]["predicts"]:
                break
            first = sigma
        out[net] = first
    return out


def _p(test):
    return "n/a" if test is None else "{:.3g} ({:.2g})".format(test["p"], test["min_p"])


def markdown(summaries):
    lines = ["| net | sigma | seeds | ES rho (mean) | ES final (median) | proxy final (median) | median final gap "
             "(proxy - ES) | median mean gap | ES seed spread (std) | proxy predicts ES? | rank-sum p (smallest) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for (net, sigma), s in summaries.items():
        if not s:
            continue
        rows, t = s["seeds"], s["test"]
        lines.append(
            f"| {net} | {sigma:g} | {len(rows)} | {100 * np.mean([r['es_rho'] for r in rows]):.2f}% | "
            f"{100 * np.median([r['es_final'] for r in rows]):.2f}% | "
            f"{100 * np.median([r['proxy_final'] for r in rows]):.2f}% | {100 * s['median_final_gap']:+.2f} | "
            f"{100 * s['median_mean_gap']:+.2f} | {100 * s['es_spread']:.2f} | "
            f"{ {True: 'yes', False: 'no', None: 'n/a (one seed)'}[s['predicts']]} | "
            f"{_p(t)} |")
    lines.append("")
    for net, sigma in breakdown(summaries).items():
        if sigma == "undetermined":
            lines.append(f"{net}: undetermined: some sigma has runs of one seed only, so no seed-to-seed spread "
                         f"to compare the gap with (run >= 2 seeds per sigma, better >= 3).")
            continue
        lines.append(f"{net}: " + ("the proxy predicts ES (median final gap within ES's seed spread) at every "
                                    "sigma measured." if sigma is None else
                                    f"the proxy stops predicting ES from sigma = {sigma:g} on (median final gap "
                                    f"outside ES's seed-to-seed standard deviation there and at every larger sigma)."))
    return "\n".join(lines)


def markdown_first_order(summaries):
    """The table of first-order ES beside its real ES twins (:func:`twins`), one row per
    (net, N, sigma): the paired difference is the higher-order part of ES alone."""
    lines = ["| net | N | sigma | seeds | ES final (median) | first-order final (median) | median final gap "
             "(first-order - ES) | median mean gap | curves' r (median) | ES seed spread (std) | within the "
             "spread? | signed-rank p (smallest) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for (net, n, sigma), s in summaries.items():
        if not s:
            continue
        rows = s["seeds"]
        lines.append(
            f"| {net} | {n:,} | {sigma:g} | {len(rows)} | {100 * np.median([r['es_final'] for r in rows]):.2f}% | "
            f"{100 * np.median([r['first_order_final'] for r in rows]):.2f}% | {100 * s['median_final_gap']:+.2f} | "
            f"{100 * s['median_mean_gap']:+.2f} | {s['median_curve_r']:.4f} | {100 * s['es_spread']:.2f} | "
            f"{ {True: 'yes', False: 'no', None: 'n/a (one seed)'}[s['predicts']]} | {_p(s['paired'])} |")
    return "\n".join(lines)

