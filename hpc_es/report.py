"""What the runs say beside the paper: the table of runs (``hpc-es report``), Table 1's table and
two runs' curves compared (Fig. 2). The reproduction report, docs/REPRODUCTION.md, is generated
from the committed archives by :mod:`hpc_es.reproduction`.

The paper's numbers come from :mod:`hpc_es.paper`; runs are found and grouped by
:mod:`hpc_es.runs`. Nothing here trains or knows MPI.
"""
import os

import numpy as np

from hpc_es import analysis, io
from hpc_es.paper import PAPER, text as paper_text
from hpc_es.text import plural



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


def run_labels(paths):
    """Names for the runs whose results files are ``paths`` that tell them apart: each run
    directory relative to the deepest folder holding all their parents (``fig2_tf/seed0/proxy_tf_paper``
    beside ``local/fig1_es_seed0``; a lone run is its directory's name)."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in paths]
    if not dirs:
        return []
    top = os.path.commonpath([os.path.dirname(d) for d in dirs])
    return [os.path.relpath(d, top) for d in dirs]
