"""What the runs say beside the paper: the table of runs, Table 1's table, two runs' curves
compared (Fig. 2), the reproduction report (docs/REPRODUCTION.md) and the cost of the
paper-scale experiments projected by :mod:`hpc_es.costs` from unit costs measured on the spot.

The paper's numbers come from :mod:`hpc_es.paper`; runs are found and grouped by
:mod:`hpc_es.runs`. Nothing here trains or knows MPI.
"""
import os

import numpy as np

from hpc_es import analysis, config, io, runs as runs_mod, stats
from hpc_es.paper import PAPER, text as paper_text, value
from hpc_es.text import plural

TABLE1 = "table1.h5"  # the summary file :func:`hpc_es.experiments.table1` writes


def _so_far(run):
    """How far an unfinished run is, in its own units."""
    if run.config["run"]["method"] == "population":
        n, rho = run.history.get("population_n", []), run.history.get("population_rho", [])
        cap = run.config["population"]["max_offspring"]
        return f"N = {int(n[-1]):,} of up to {cap:,}, rho {100 * rho[-1]:.2f}%" if len(n) else "no block yet"
    return f"{run.completed:,} of {run.config['run']['iterations']:,} iterations"


def table1_markdown(summary):
    paper = {"sgd": "table1_sgd", "proxy_0.04": "table1_proxy_4", "proxy_0.2": "table1_proxy_20"}
    lines = [f"Table 1 ({summary['net']}, {plural(summary['iterations'], 'iteration')}, "
             f"{len(next(iter(summary['methods'].values()))['runs'])} runs each)", "",
             f"| method | mean val. accuracy | std | paper ({_table1_setup()}) |", "| --- | ---: | ---: | ---: |"]
    for m, row in summary["methods"].items():
        ref = paper_text(paper[m]) if m in paper else "-"
        lines.append(f"| {m} | {100 * row['mean']:.2f}% | {100 * row['std']:.2f}% | {ref} |")
    if "tests" not in summary:  # written by an earlier version: the paired test only
        lines += ["", "| paired Wilcoxon signed-rank | p |", "| --- | ---: |"]
        for pair, p in summary["wilcoxon_p"].items():
            lines.append(f"| {pair} | {'n/a' if p is None else f'{p:.3g}'} |")
        return "\n".join(lines)
    lines += ["", "| comparison | rank-sum p (smallest possible) | rank-biserial r | paired signed-rank p "
              "(smallest possible) | runs for 80% power |", "| --- | ---: | ---: | ---: | ---: |"]
    for pair, t in summary["tests"].items():
        u, w = t["rank_sum"], t["signed_rank"]
        effect = "n/a" if u is None else f"{u['effect'][1]:+.2f}"
        power = t.get("runs_for_power", "n/a")  # files of earlier versions lack it
        lines.append(f"| {pair} | {_p_of(u)} | {effect} | {_p_of(w)} | {'> 200' if power is None else power} |")
    lines += ["", "Primary: two-sided Mann-Whitney U over independent seeds; secondary: two-sided Wilcoxon "
              "signed-rank, paired by seed (shared initialisation and mini-batches). Runs for 80% power: per "
              "method, for the rank-sum test at p < 0.05, if each method's accuracies were normal with its "
              "runs' mean and standard deviation (ours: a model)."]
    return "\n".join(lines)


def _p_of(test):
    return "n/a" if test is None else f"{test['p']:.3g} ({test['min_p']:.2g})"


def _table1_setup():
    return f"{PAPER['table1_iterations'][0]:,} it., {PAPER['table1_runs'][0]} runs"


def report(paths):
    """A markdown table of what each results file measured, beside the paper's figure."""
    lines = ["| run | net | method | N | iterations | final val. acc. | mean rho | mean SGD self-rho | "
             "population N (rho) | paper |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for path, label in zip(paths, run_labels(paths)):
        res = io.read_results(path)
        cfg, h = res["config"], res["history"]
        method, net = cfg["run"]["method"], cfg["net"]["arch"]
        n = cfg["es"]["n_offspring"] if method == "es" else "-"
        acc = f"{100 * h['val_accuracy'][-1]:.2f}%" if "val_accuracy" in h and len(h["val_accuracy"]) else "-"
        rho = f"{100 * np.mean(h['rho']):.2f}%" if "rho" in h else "-"
        self_rho = f"{100 * np.mean(h['rho_sgd_self']):.2f}%" if "rho_sgd_self" in h else "-"
        pop = (f"{int(h['population_n'][-1]):,} ({100 * h['population_rho'][-1]:.1f}%)"
               if "population_n" in h else "-")
        lines.append(f"| {label} | {net} | {method} | {n} | "
                     f"{res.get('completed_iterations', '-')} | {acc} | {rho} | {self_rho} | {pop} | "
                     f"{_paper_ref(cfg)} |")
    lines += ["", "Paper figures (Zhang, Clune & Stanley 2017):", ""]
    lines += [f"- {key}: {paper_text(key)} ({where}: {what})" for key, (_, _, where, what) in PAPER.items()]
    return "\n".join(lines)


def paired_curves(path_a, path_b):
    """How alike two runs' validation curves are (Fig. 2: ES vs its proxy on one mini-batch
    sequence): Pearson correlation of the accuracies at their common validation points, and
    of their iteration-to-iteration changes (the fluctuations), plus the mean |difference|."""
    ha, hb = io.read_results(path_a)["history"], io.read_results(path_b)["history"]
    common, ia, ib = np.intersect1d(ha["eval_iteration"], hb["eval_iteration"], return_indices=True)
    a, b = np.asarray(ha["val_accuracy"])[ia], np.asarray(hb["val_accuracy"])[ib]
    if common.size < 3:  # too few common points for a curve's correlation
        return {"points": int(common.size), "curve_correlation": float("nan"), "change_correlation": float("nan"),
                "mean_abs_difference": float(np.mean(np.abs(a - b))) if common.size else float("nan")}
    return {"points": int(common.size), "curve_correlation": analysis.pearson(a, b),
            "change_correlation": analysis.pearson(np.diff(a), np.diff(b)),
            "mean_abs_difference": float(np.mean(np.abs(a - b)))}


def _paper_ref(cfg):
    method, net, es = cfg["run"]["method"], cfg["net"]["arch"], cfg["es"]
    if net == "tf_tutorial" and method == "sgd":
        return f"{paper_text('acc_sgd_tf')} (SGD, 2,000 it.)"
    if net == "tf_tutorial" and method == "es":
        return (f"{paper_text('acc_es_nominibatch_tf')} (no-mini-batch)" if es["mode"] == "nominibatch" else
                f"{paper_text('acc_es_tf_10k')}, rho {paper_text('rho_es_tf_10k')} (N = 10,000)")
    if method == "population":
        return f"{paper_text('population_20')} for 20% (tf_tutorial)"
    if net == "small" and method == "es" and es["mode"] == "nominibatch":
        return f"{paper_text('acc_es_small99_10k')} / {paper_text('acc_es_small99_50k')} (N = 10,000 / 50,000)"
    return "-"


# ---- the reproduction report (docs/REPRODUCTION.md) ----------------------------------------
NOTES_BEGIN, NOTES_END = "<!-- notes -->", "<!-- /notes -->"
PAPER_SIGMA = config.Config().es.sigma  # the theory (and the proxy) are first order in sigma: runs at this
MIN_ITERATIONS_FOR_ACCURACY = 50  # shorter runs are measurements (rho over a few iterations), not curves

def units_for_report(dataset):
    """The per-unit costs of every paper-scale preset (:func:`hpc_es.costs.paper_scale`),
    measured here on one core."""
    from hpc_es import costs
    return costs.measure_units([config.load(name) for name in costs.paper_scale()], dataset)


def _groups(runs, figure, select=None):
    """{label: [runs]} of one figure, one run per seed, optionally filtered."""
    keep = (lambda run: True) if select is None else (lambda run: select(run.config))
    out = {}
    for iterations in sorted({r.config["run"]["iterations"] for r in runs}):  # a curve per length, too
        same = [r for r in runs if r.config["run"]["iterations"] == iterations]
        for k, v in runs_mod.group(same, figure, keep).items():
            out[f"{k} {iterations} it."] = list(v.values())
    return dict(sorted(out.items()))


def _training_key(cfg):
    """What must match for a full-perturbation run to be the comparator of a limited one (Fig. 3):
    everything that shapes training except the population and how it perturbs (es.n_offspring,
    es.perturbation and the bucket settings: what the comparison varies) and the seed."""
    es = cfg["es"]
    return (repr(sorted(cfg["net"].items())), cfg["data"]["batch_size"], repr(sorted(cfg["optim"].items())),
            es["sigma"], es["antithetic"], es["fitness"], es["mode"], cfg["run"]["method"], cfg["run"]["iterations"])


def _final(runs):
    acc = [r.history["val_accuracy"][-1] for r in runs if len(r.history.get("val_accuracy", []))]
    return np.array(acc)


def _acc_text(runs):
    acc = _final(runs)
    if not acc.size:
        return "-"
    spread = f" (range {100 * acc.min():.2f}-{100 * acc.max():.2f})" if acc.size > 1 else ""
    return f"{100 * np.median(acc):.2f}%{spread}, {acc.size} run{'s' if acc.size > 1 else ''}"


def _setup(runs):
    cfg = runs[0].config
    n = f", N = {cfg['es']['n_offspring']:,}" if cfg["run"]["method"] == "es" else ""
    wall = np.array([r.seconds for r in runs])  # the median: one run stalled by its machine moves no claim
    span = f" (median; {wall.min():.0f}-{wall.max():.0f})" if wall.size > 1 and wall.max() > 1.1 * wall.min() else ""
    counts = sorted({c for r in runs for c in r.rank_counts})
    ranks = plural(counts[0], "rank") if len(counts) == 1 else f"{'/'.join(map(str, counts))} ranks (resumed)"
    departs = "".join(f", {d}" for d in runs_mod.departures(cfg))
    given = ", from given thetas (net.theta_from)" if runs[0].from_theta else ""
    return f"{cfg['net']['arch']}{n}{departs}, {cfg['run']['iterations']:,} it.{given}, {ranks}, {np.median(wall):.0f} s per run{span}"


def _follows(proxy, es):
    """Whether ``proxy`` models the ES run ``es`` (Fig. 2): a proxy that reads its rho from an ES
    run, that run; a constant-rho proxy, an ES run with its net, seed and length. Either way ES at
    the paper's sigma (the theory behind the proxy is first order in sigma)."""
    if es.config["es"]["sigma"] != PAPER_SIGMA or es.config["net"]["arch"] != proxy.config["net"]["arch"]:
        return False
    rho_from = proxy.config["proxy"].get("rho_from")
    if rho_from:
        return runs_mod.is_named_by(rho_from, es.path)
    return all(es.config["run"][k] == proxy.config["run"][k] for k in ("seed", "iterations"))


def reproduction(paths, units, write_to=None, bench=None, network=None, smoothing=None,
                 units_source="measured on this machine's cores when the report was generated"):
    """The markdown of docs/REPRODUCTION.md from results under ``paths`` (and a table1.h5 if
    found), the per-unit ``timing`` of :func:`throughput` (``units_source`` says where they come
    from), and optionally the master-cost benchmark's JSON ``bench`` and benchmarks/smoothing.py's
    JSON ``smoothing``. A ``<!-- notes -->`` block already in ``write_to`` is kept."""
    import time

    from hpc_es import nets
    from hpc_es.runs import FIGURES
    loaded = runs_mod.load_runs(paths)
    in_progress = [r for r in loaded if not r.complete]
    label = dict(zip((r.path for r in loaded), run_labels([r.path for r in loaded])))  # as the every-run table
    runs = [r for r in loaded if r.complete]
    # training curves: from initialisation, long enough for a final accuracy (not rho measurements)
    training = [r for r in runs if not r.from_theta and r.config["run"]["iterations"] >= MIN_ITERATIONS_FOR_ACCURACY]
    is_training = {id(r) for r in training}
    tables = runs_mod.find_results([p for p in paths if os.path.isdir(p)], TABLE1)
    rows = []

    def row(claim, paper, ours, setup):
        rows.append(f"| {claim} | {paper} | {ours} | {setup} |")

    # ES at other sigmas: beyond the paper (where the proxy breaks down)
    fig1 = _groups(training, 1, lambda c: c["run"]["method"] != "es" or c["es"]["sigma"] == PAPER_SIGMA)
    for name, group_runs in fig1.items():
        if name.startswith("SGD"):
            row("SGD final accuracy (Sec. 4)", f"{paper_text('acc_sgd_tf')} (tf_tutorial, 2,000 it.)", _acc_text(group_runs),
                _setup(group_runs))
        else:
            row("Mini-batch ES final accuracy (Sec. 4)",
                f"{paper_text('acc_es_tf_10k')} (tf_tutorial, N = 10,000, 2,000 it., 5 runs)",
                _acc_text(group_runs), _setup(group_runs))
    corr = [r for r in runs if "rho" in r.history and runs_mod.method_key(r.config) == "es"]  # full perturbation
    by_setup = {}
    for r in corr:
        key = (r.config["net"]["arch"], r.config["es"]["n_offspring"], tuple(runs_mod.departures(r.config)),
               r.from_theta, r.config["run"]["iterations"])
        by_setup.setdefault(key, []).append(r)
    for (net, n, *_), group_runs in sorted(by_setup.items()):
        P = nets.build(net).n_params
        rho = np.mean([np.mean(r.history["rho"]) for r in group_runs])
        row("rho(g_ES, g_true), Eq. 3", f"{paper_text('rho_es_tf_10k')} (N = 10,000, P = 3,274,634)",
            f"{100 * rho:.2f}% (theory for this N and P: {100 * analysis.expected_rho(n / 2, P):.2f}%)",
            _setup(group_runs))
        along = [r for r in group_runs if id(r) in is_training and "rho_sgd_self" in r.history]
        if along:  # along training runs only: the paper's number is a mean over training
            row("SGD self-correlation (two random mini-batches)", paper_text("rho_sgd_self"),
                f"{100 * np.mean([np.mean(r.history['rho_sgd_self']) for r in along]):.2f}%", _setup(along))
    proxies = [r for r in training if r.config["run"]["method"] == "proxy"]
    pairs = []
    for p in proxies:  # the ES run each proxy models; of several with its seed, the longest record (as figures)
        modelled = [e for e in corr if id(e) in is_training and _follows(p, e)]
        if modelled:
            pairs.append((max(modelled, key=lambda e: len(e.history.get("seconds_total", []))), p))
    c = [x for x in (paired_curves(e.path, p.path) for e, p in pairs) if x["points"] > 2]
    if c:
        row("ES and its proxy follow the same curve (Fig. 2)", "curves alike, fluctuations shared",
            f"curve correlation {np.mean([x['curve_correlation'] for x in c]):.4f}, of changes "
            f"{np.mean([x['change_correlation'] for x in c]):.3f}, mean gap "
            f"{100 * np.mean([x['mean_abs_difference'] for x in c]):.2f} points ({plural(len(c), 'seed pair')})",
            _setup([p for _, p in pairs]))
    for path in tables:
        summary = io.read_summary(path)[1]
        for m, key in (("sgd", "table1_sgd"), ("proxy_0.04", "table1_proxy_4"), ("proxy_0.2", "table1_proxy_20")):
            if m in summary["methods"]:
                r = summary["methods"][m]
                row(f"Table 1: {m}", f"{paper_text(key)} ({_table1_setup()})",
                    f"{100 * r['mean']:.2f}% +- {100 * r['std']:.2f} ({len(r['runs'])} runs)",
                    f"{summary['net']}, {summary['iterations']:,} it.")
    for r in runs:
        if "population_n" in r.history:
            P = nets.build(r.config["net"]["arch"]).n_params
            target = r.config["population"]["target_rho"]
            row(f"Population for rho = {100 * target:.0f}%", f"{paper_text('population_20')} (tf_tutorial)",
                f"{int(r.history['population_n'][-1]):,} at rho {100 * r.history['population_rho'][-1]:.1f}% "
                f"(theory for P = {P:,}: {2 * analysis.pairs_for_rho(target, P):,.0f})",
                f"{r.config['net']['arch']}, {r.seconds:.0f} s")
    fig3 = _groups(training, 3)
    for lk, lv in fig3.items():
        if not lk.startswith("limited"):
            continue
        net = lv[0].config["net"]["arch"]
        full = [v for k, v in fig3.items()
                if not k.startswith("limited") and _training_key(v[0].config) == _training_key(lv[0].config)]
        claim = "Limited vs full perturbation (Fig. 3)"
        paper = f"no significant difference, p = {paper_text('fig3_p')} (50,000 x 5,000 vs 10,000)"
        if full:
            fv = max(full, key=len)  # of the full-perturbation curves trained alike, the one with most seeds
            row(claim, paper, f"limited {_acc_text(lv)} vs full N = {fv[0].config['es']['n_offspring']:,} "
                f"{_acc_text(fv)}; {compare(lv, fv, 0.05, 'detect a difference at p < 0.05')}", _setup(lv))
        else:
            row(claim, paper, f"limited {_acc_text(lv)}; no full-perturbation run of {net} at this scale", _setup(lv))
    if bench:
        rows_b = bench["rows"]
        row("Master aggregation, dense (Sec. 4.1)", f"~{paper_text('master_dense_s')} (N = 10,000, P = 3,274,634)",
            f"{rows_b['dense']['seconds']:.2f} s ({rows_b['dense']['x_bandwidth']:.1f}x read bandwidth)",
            f"benchmarks/aggregation.py, {plural(bench['machine']['ranks'], 'rank')}")
        row("Master aggregation, limited (Sec. 4.1)",
            f"{paper_text('master_limited_s')} (50,000 x 5,000); {paper_text('master_speedup')} faster",
            f"{rows_b['limited']['seconds']:.3f} s; {bench['dense_over_limited']:.0f}x faster", "same run")
    fig4 = _groups(training, 4)
    nomb = {k: v for k, v in fig4.items() if k.startswith("no-mini-batch")}
    mb = {k: v for k, v in fig4.items() if k.startswith("ES")}
    for nk, nv in nomb.items():
        n = nv[0].config["es"]["n_offspring"]
        net = nv[0].config["net"]["arch"]
        match = [v for k, v in mb.items() if v[0].config["es"]["n_offspring"] == n and v[0].config["net"]["arch"] == net]
        if match:
            verdict = compare(nv, match[0], value("fig4_p"), f"reach the paper's p < {paper_text('fig4_p')}")
            row("No-mini-batch vs mini-batch ES (Fig. 4)",
                f"{paper_text('acc_es_nominibatch_tf')} vs {paper_text('acc_es_tf_10k')}, p < {paper_text('fig4_p')} "
                "(N = 10,000)",
                f"{_acc_text(nv)} vs {_acc_text(match[0])}; {verdict}; curve wiggle "
                f"{_roughness(nv):.2f} vs {_roughness(match[0]):.2f} points", _setup(nv))
    for k, v in _groups(training, 5).items():
        row("No-mini-batch ES + L2 2e-4, small net (Fig. 5)",
            f"{paper_text('acc_es_small99_10k')} (N = 10,000), {paper_text('acc_es_small99_50k')} (N = 50,000)",
            _acc_text(v), _setup(v))

    beyond = beyond_the_paper(runs, smoothing)

    from hpc_es import costs
    network = network or costs.Network()
    cost = ["| experiment | job script | ranks | runs | wall time per run | memory per node | projected "
            "core-hours (all runs) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for preset, script, ranks, n_runs, p, hours in costs.full_scale(costs.paper_scale(), units, network):
        where = f"`jobs/slurm/{os.path.basename(script)}`" if script else "-"
        cost.append(f"| `{preset}` | {where} | {ranks} | {n_runs} | {costs.hms(p.wall)} | "
                    f"{p.memory_per_node / 2**30:.1f} GiB | {hours:,.1f} |" if hours < 10 else
                    f"| `{preset}` | {where} | {ranks} | {n_runs} | {costs.hms(p.wall)} | "
                    f"{p.memory_per_node / 2**30:.1f} GiB | {hours:,.0f} |")
    unit_text = ", ".join(f"{arch} offspring {1e3 * units[arch]['offspring']:.2f} ms, SGD step "
                          f"{1e3 * units[arch]['sgd_step']:.2f} ms, validation {1e3 * units[arch]['validate_image']:.3f}"
                          f" ms per image" for arch in ("tf_tutorial", "small") if arch in units)
    notes = ""
    if write_to and os.path.exists(write_to):
        text = open(write_to).read()
        if NOTES_BEGIN in text and NOTES_END in text:
            notes = text[text.index(NOTES_BEGIN):text.index(NOTES_END) + len(NOTES_END)]
    notes = notes or f"{NOTES_BEGIN}\n(What these runs confirm and what they cannot reach: written by hand.)\n{NOTES_END}"
    figures = [f"![Figure {n}](figures/figure{n}.png)" for n in FIGURES
               if write_to and os.path.exists(os.path.join(os.path.dirname(write_to), "figures", f"figure{n}.png"))]
    doc = [
        "# Reproduction at local scale, beside the paper",
        "",
        f"Generated by `hpc-es report {' '.join(paths)} --write {write_to or '-'}` on "
        f"{time.strftime('%Y-%m-%d')} from {plural(len(loaded), 'results file')}; regenerate after new runs. "
        f"{_provenance(loaded)} Paper figures are labelled as the paper's.",
        "",
        "## Every claim: the paper's number, ours at local scale",
        "",
        "| claim | paper | ours (median over runs) | our setup, wall time |",
        "| --- | --- | --- | --- |",
        *rows,
        *([""] + [f"Left out while still running ({plural(len(in_progress), 'run')} that "
                  + ("has not done what its config asks" if len(in_progress) == 1 else
                     "have not done what their configs ask")
                  + "): " + ", ".join(f"{label[r.path]} ({_so_far(r)})" for r in in_progress) + "."]
          if in_progress else []),
        "",
        notes,
        "",
        *_beyond_lines(beyond),
        "",
        "## What the full-scale runs would cost",
        "",
        "Projected by `hpc_es.costs` (our model: every count from the preset, ranks and runs from its job "
        f"script, per-unit costs {units_source}, collectives "
        f"{network.source}): {unit_text}. Start-up, validation, measurement and checkpoint writes included; "
        "`benchmarks/cost_model.py` checks the model against shortened runs (docs/RESULTS.md). "
        "`hpc-es plan PRESET --ranks R` gives any other rank count. Projections, not measurements.",
        "",
        *cost,
        "",
        "## Figures",
        "",
        *figures,
        "",
        "## Every run",
        "",
        report([r.path for r in loaded]).split("\n\nPaper figures")[0],
    ]
    return "\n".join(doc) + "\n"


NOT_ADDRESSED = "does not address this"
BEYOND_HEADING = "## Beyond the paper (ours)"


def _beyond_lines(rows, stamp=None):
    """The section "Beyond the paper" of docs/REPRODUCTION.md: its heading, intro (and the
    ``stamp`` of a section regenerated on its own), and the table of ``rows``."""
    return [BEYOND_HEADING, "",
            "Questions the paper leaves open, answered with its instruments (docs/RESULTS.md, issue 15, has the "
            "commands and the reasoning). The paper column says what the paper says on each, if anything.",
            *(["", stamp] if stamp else []), "",
            "| finding | paper | ours | our setup |",
            "| --- | --- | --- | --- |",
            *(rows or ["| (no run of these kinds given) | | | |"])]


def rewrite_beyond(paths, write_to, smoothing=None, smoothing_path=None):
    """The text of the report ``write_to`` with only its section "Beyond the paper" made again
    from the results under ``paths`` (and benchmarks/smoothing.py's JSON ``smoothing``, read
    from ``smoothing_path``); every other section is kept as it was, and the section says
    when and from what it was made. For runs kept as archives (``hpc-es archive``) after the
    runs of the other sections are gone. Raises ValueError when ``write_to`` has no such section."""
    import time
    text = open(write_to).read()
    begin = text.find("\n" + BEYOND_HEADING + "\n")
    if begin < 0:
        raise ValueError(f"{write_to}: no section '{BEYOND_HEADING}' to rewrite (write the whole report first: "
                         f"hpc-es report RESULTS... --write {write_to})")
    end = text.find("\n## ", begin + 1)
    end = len(text) if end < 0 else end
    loaded = runs_mod.load_runs(paths)
    runs = [r for r in loaded if r.complete]
    left = [lab for r, lab in zip(loaded, run_labels([r.path for r in loaded])) if not r.complete]
    smoothing_arg = f" --smoothing {smoothing_path}" if smoothing else ""
    stamp = (f"This section alone was made again by `hpc-es report {' '.join(paths)}{smoothing_arg} --write "
             f"{write_to} --beyond-only` on {time.strftime('%Y-%m-%d')} from "
             f"{plural(len(runs), 'finished results file')}" + (f" and {smoothing_path}" if smoothing else "")
             + (f" (left out while still running: {', '.join(left)})" if left else "")
             + "; the other sections are as the header above says.")
    section = "\n".join(_beyond_lines(beyond_the_paper(runs, smoothing), stamp)) + "\n"
    return text[:begin + 1] + section + text[end:]


def run_labels(paths):
    """Names for the runs whose results files are ``paths`` that tell them apart: each run
    directory relative to the deepest folder holding all their parents (``fig2_tf/seed0/proxy_tf_paper``
    beside ``local/fig1_es_seed0``; a lone run is its directory's name)."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if not dirs:
        return []
    top = os.path.commonpath([os.path.dirname(d) for d in dirs])
    return [os.path.relpath(d, top) for d in dirs]


def beyond_the_paper(runs, smoothing=None):
    """Rows (markdown) of the findings beyond the paper that ``runs`` (and the JSON of
    benchmarks/smoothing.py, ``smoothing``) hold: limited ES's rho against our theory, per-layer
    rho against our theory, the dose-response, where the proxy stops predicting ES, and what
    ES estimates as sigma grows."""
    from hpc_es import dose, proxy_gap
    rows = []
    limited = [r for r in runs if runs_mod.method_key(r.config) == "limited" and "rho_theory" in r.history]
    for r in limited:
        ratio = np.asarray(r.history["rho"]) / np.asarray(r.history["rho_theory"])
        rows.append(f"| Limited ES's rho(g, g_true) against our first-order theory | no correlation reported "
                    f"for limited ES | {100 * np.mean(r.history['rho']):.2f}% measured vs "
                    f"{100 * np.mean(r.history['rho_theory']):.2f}% predicted (ratio {ratio.mean():.3f}, "
                    f"{ratio.size} iterations) | {r.config['net']['arch']}, N = {r.config['es']['n_offspring']:,}, "
                    f"buckets <= {r.config['es']['bucket_size']:,}, {r.config['es']['bucket_choice']} draw |")
    layered = runs_mod.longest_continuations([r for r in runs if any(k.startswith("rho_theory_") for k in r.history)
                                              and r.config["es"]["sigma"] == PAPER_SIGMA])  # no iteration twice
    for arch in sorted({r.config["net"]["arch"] for r in layered}):
        group = [r for r in layered if r.config["net"]["arch"] == arch]
        names = sorted(k[len("rho_theory_"):] for k in group[0].history if k.startswith("rho_theory_"))
        parts = []
        for name in names:
            m = np.concatenate([np.asarray(r.history[f"rho_{name}"]) for r in group if f"rho_{name}" in r.history])
            t = np.concatenate([np.asarray(r.history[f"rho_theory_{name}"]) for r in group
                                if f"rho_theory_{name}" in r.history])
            parts.append(f"{name} {100 * m.mean():.1f}% vs {100 * t.mean():.1f}%")
        rows.append(f"| Which layers ES estimates well: per-layer rho against our theory (sigma {PAPER_SIGMA:g}) | "
                    f"{NOT_ADDRESSED} "
                    f"(reading notes, Question 1) | {'; '.join(parts)} (measured vs theory, means over "
                    f"{sum(len(r.history['rho']) for r in group):,} iterations) | {arch}, {plural(len(group), 'ES run')} |")
    try:
        groups = dose.collect(dose.select(runs)[0])  # each group at the last iteration all its runs reached
    except ValueError:
        groups = {}
    for key, (at, arms) in sorted(groups.items()):
        rows += _fig3_as_proxies(key, arms, at, limited)
        if "sgd" not in arms or sum(1 for k in arms if k != "sgd") < 4:
            continue  # a dose-response: SGD and at least four rho arms (Table 1 has two, Fig. 3 as proxies three)
        s = dose.summarize(arms)
        found = ("every rho measured is significantly below SGD" if s["smallest_rho"] is None else
                 f"smallest rho not significantly below SGD: {100 * s['smallest_rho']:g}%")
        if not s["could_reach"]:
            found = "these run counts cannot reach p < 0.05"
        rows.append(f"| Accuracy against correlation (the proxy's dose-response) | Table 1: two points, 4% and 20% | "
                    f"{found} (rank-sum against SGD, {len(s['sgd']['runs'])} SGD runs) | {key[0]}, "
                    f"rho {', '.join(format(100 * r['rho'], 'g') for r in s['rhos'])}%, iteration {at:,} |")
    found, _ = proxy_gap.pairs(runs)
    if found:
        summaries = {k: proxy_gap.summarize(v) for k, v in found.items()}
        for net, sigma in proxy_gap.breakdown(summaries).items():
            sigmas = sorted(k[1] for k in summaries if k[0] == net and summaries[k])
            verdict = ("undetermined (a sigma with one seed only)" if sigma == "undetermined" else
                       "the proxy predicts ES at every sigma measured" if sigma is None else
                       f"the proxy stops predicting ES from sigma = {sigma:g} on")
            rows.append(f"| Where the ES proxy stops predicting ES | {NOT_ADDRESSED} (reading notes, Question 2; the "
                        f"paper uses sigma = 0.002) | {verdict} (median final gap against ES's seed spread) | "
                        f"{net}, sigma {', '.join(f'{x:g}' for x in sigmas)} |")
    if smoothing:
        cells = []
        for row in smoothing["rows"]:
            theory = row.get("predicted_rho_es_smoothed")  # JSON of earlier versions lacks it
            cells.append(f"{row['theta']} sigma {row['sigma']:g}: {100 * row['rho_es_true']:.1f}% vs "
                         f"{100 * row['rho_es_smoothed']:.1f}%" +
                         (f" (theory {100 * theory:.1f}%)" if theory is not None else ""))
        rows.append(f"| What ES estimates as sigma grows: rho with g_true vs with the smoothed loss's gradient "
                    f"(our finite-sigma theory for the latter) | "
                    f"{NOT_ADDRESSED} | {'; '.join(cells)} | {smoothing['settings']['net']}, N = "
                    f"{smoothing['settings']['offspring']:,}, benchmarks/smoothing.py |")
    return rows


def _fig3_as_proxies(key, arms, at, limited):
    """Rows: on tf_tutorial, the proxy at full ES's measured rho (the paper's 3.9%) against the
    proxy at the rho each limited ES run among ``limited`` measured there (within 5%): does the
    proxy predict Fig. 3's difference?"""
    from hpc_es import dose

    def arm_near(target):
        return next((r for r in rhos if abs(r - target) <= 0.05 * target), None)

    rhos = sorted(k for k in arms if k != "sgd")
    base = arm_near(value("rho_es_tf_10k") / 100)
    if key[0] != "tf_tutorial" or base is None:
        return []
    draws = {}  # limited ES's measured rho -> its bucket draw
    for r in limited:
        arm = arm_near(float(np.mean(r.history["rho"]))) if r.config["net"]["arch"] == "tf_tutorial" else None
        if arm not in (None, base):
            draws[arm] = r.config["es"]["bucket_choice"]
    rows = []
    stats = {r: {"rho": r, "runs": [arms[r][seed] for seed in sorted(arms[r])]} for r in rhos}
    for pair in dose.between(list(stats.values()), [(base, r) for r in sorted(draws)], paper_p=value("fig3_p")):
        hi, lo, t = stats[pair["high"]]["runs"], stats[pair["low"]]["runs"], pair["test"]
        test = ("too few runs for a test" if t is None else
                f"rank-sum p = {t['p']:.2g} (smallest possible {t['min_p']:.2g}), r = {t['effect'][1]:+.2f}")
        power = pair["runs_for_power"]
        chance = pair.get("chance_of_paper_p")
        if chance:
            test += (f"; {chance['runs']} vs {chance['runs']} runs would give p >= {chance['p']:g} in "
                     f"{chance['chance']:.1%} of experiments (our model)")
        rows.append(f"| Limited vs full ES (Fig. 3), as ES proxies at each one's measured rho | no significant "
                    f"difference, p = {paper_text('fig3_p')} (real ES, 5 runs each) | rho {100 * pair['high']:g}% "
                    f"(limited, {draws[pair['high']]} draw) vs {100 * pair['low']:g}% (full): medians {100 * np.median(hi):.2f}% vs {100 * np.median(lo):.2f}%, "
                    f"{test}; runs for 80% power: {power or '> 200'} per arm | tf_tutorial, iteration {at:,}, "
                    f"{len(hi)} vs {len(lo)} runs |")
    return rows


def _provenance(runs):
    """Where and how the runs were made, as their files record it (never assumed)."""
    if not runs:
        return ""
    counts = {}
    for r in runs:
        key = "/".join(map(str, r.rank_counts))
        counts[key] = counts.get(key, 0) + 1
    ranks = "; ".join(f"{n} on {k} rank{'' if k == '1' else 's'}" for k, n in sorted(counts.items()))
    hosts = sorted({h for r in runs for h in r.hosts})
    resumed = sum(bool(r.resumes) for r in runs)
    commands = sorted({r.command for r in runs if r.command})
    text = f"Runs as their files record them: {ranks}"
    text += f"; hosts {', '.join(hosts)}" if hosts else ""
    text += f"; {resumed} resumed at least once" if resumed else ""
    text += "."
    if commands:
        text += " Commands recorded: " + "; ".join(f"`{c}`" for c in commands[:12])
        text += f" and {len(commands) - 12} more." if len(commands) > 12 else "."
    return text


def compare(a, b, alpha, what):
    """The comparison of two groups of runs in words: the unpaired rank-sum test over their
    final accuracies (primary), the paired signed-rank test over the seeds they share
    (secondary), and whether these run counts could ``what`` (reach p < ``alpha``) at all."""
    u = stats.rank_sum(_final(a), _final(b))
    if u is None:
        return "no test (scipy missing or no runs)"
    text = u.text() + f"; {len(a)} vs {len(b)} runs " + ("can" if u.could_reach(alpha) else "cannot") + f" {what}"
    w = stats.signed_rank(*_paired(a, b))
    return text + ("" if w is None else f"; secondary: {w.text()}")


def _paired(a, b):
    """Final accuracies of the seeds two groups share, in seed order."""
    fa = {r.seed: r.history["val_accuracy"][-1] for r in a}
    fb = {r.seed: r.history["val_accuracy"][-1] for r in b}
    seeds = sorted(set(fa) & set(fb))
    return [fa[s] for s in seeds], [fb[s] for s in seeds]


def _roughness(runs):
    """Mean |second difference| of the validation curve, in points: wiggle around the trend
    (a steadily rising curve scores 0, however steep)."""
    return 100 * float(np.mean([np.mean(np.abs(np.diff(r.history["val_accuracy"], 2))) for r in runs]))
