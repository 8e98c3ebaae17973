"""Experiments made of many runs: Table 1 (SGD vs ES proxies over seeds) and the report.

Table 1 (Sec. 4): R seeds of each method (SGD, proxy at each rho) for T iterations on the
same mini-batch sequence per seed; final validation accuracy mean and std per method, and
paired Wilcoxon signed-rank tests between methods (runs with one seed share their
initialisation and mini-batches, so they pair naturally). Under MPI the runs are spread over
the ranks, each run serial (`SerialComm`), and the accuracies gathered.
"""
import logging
import os

import numpy as np

from hpc_es import comm as comm_mod, config, io, train
from hpc_es.paper import PAPER

log = logging.getLogger(__name__)


def table1(comm, base_cfg, rhos, runs, out, dataset=None):
    """Collective over ``comm``: run Table 1 and write ``out/table1.h5``; returns the summary."""
    methods = ["sgd"] + [f"proxy_{rho:g}" for rho in rhos]
    tasks = [(m, seed) for seed in range(runs) for m in methods]
    mine = tasks[comm.Get_rank()::comm.Get_size()]
    results = {}
    for method, seed in mine:
        overrides = {"run": {"seed": seed}}
        if method != "sgd":
            overrides["run"]["method"] = "proxy"
            overrides["proxy"] = {"rho": float(method.split("_", 1)[1])}
        cfg_dict = _merge(base_cfg.to_dict(), overrides)
        cfg = config.from_dict(cfg_dict, origin=f"table1 {method} seed {seed}")
        run_dir = os.path.join(out, f"{method}-seed{seed}")
        _, hist = train.run(cfg, comm_mod.SerialComm(), out=run_dir, force=True, dataset=dataset, quiet=True)
        results[(method, seed)] = hist["val_accuracy"][-1]
        log.info("table1: %s seed %d -> %.2f%%", method, seed, 100 * hist["val_accuracy"][-1])
    gathered = {}
    for part in comm.allgather(results):
        gathered.update(part)
    summary = summarize(gathered, methods, runs)
    summary["iterations"] = base_cfg.run.iterations
    summary["net"] = base_cfg.net.arch
    if comm.Get_rank() == 0:
        io.save_summary(os.path.join(out, "table1.h5"), "table1", summary,
                        {f"accuracy/{m}": row["runs"] for m, row in summary["methods"].items()})
    comm.Barrier()
    return summary


def summarize(accuracies, methods, runs):
    """Mean/std per method and paired Wilcoxon p-values between every two methods."""
    table = {}
    for m in methods:
        acc = np.array([accuracies[(m, s)] for s in range(runs)])
        table[m] = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if runs > 1 else 0.0,
                    "runs": acc.tolist()}
    tests = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            tests[f"{a} vs {b}"] = wilcoxon(table[a]["runs"], table[b]["runs"])
    return {"methods": table, "wilcoxon_p": tests}


def wilcoxon(a, b):
    """Two-sided paired Wilcoxon signed-rank p-value (scipy), or None without scipy / data."""
    try:
        from scipy.stats import wilcoxon as _wilcoxon
    except ImportError:
        log.warning("scipy not installed (pip install 'hpc_es[stats]'): no Wilcoxon test")
        return None
    diff = np.asarray(a) - np.asarray(b)
    if len(diff) < 2 or not diff.any():
        return None
    return float(_wilcoxon(a, b).pvalue)


def _merge(base, overrides):
    out = {k: dict(v) for k, v in base.items()}
    for section, values in overrides.items():
        out[section].update(values)
    return out


def table1_markdown(summary):
    paper = {"sgd": PAPER["table1_sgd"], "proxy_0.04": PAPER["table1_proxy_4"], "proxy_0.2": PAPER["table1_proxy_20"]}
    lines = [f"Table 1 ({summary['net']}, {summary['iterations']} iterations, "
             f"{len(next(iter(summary['methods'].values()))['runs'])} runs each)", "",
             "| method | mean val. accuracy | std | paper (40,000 it., 20 runs) |", "| --- | ---: | ---: | ---: |"]
    for m, row in summary["methods"].items():
        ref = f"{paper[m][0]:.2f}%" if m in paper else "-"
        lines.append(f"| {m} | {100 * row['mean']:.2f}% | {100 * row['std']:.2f}% | {ref} |")
    lines += ["", "| paired Wilcoxon signed-rank | p |", "| --- | ---: |"]
    for pair, p in summary["wilcoxon_p"].items():
        lines.append(f"| {pair} | {'n/a' if p is None else f'{p:.3g}'} |")
    return "\n".join(lines)


def report(paths):
    """A markdown table of what each results file measured, beside the paper's figure."""
    lines = ["| run | net | method | N | iterations | final val. acc. | mean rho | mean SGD self-rho | "
             "population N (rho) | paper |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for path in paths:
        res = io.read_results(path)
        cfg, h = res["config"], res["history"]
        method, net = cfg["run"]["method"], cfg["net"]["arch"]
        n = cfg["es"]["n_offspring"] if method == "es" else "-"
        acc = f"{100 * h['val_accuracy'][-1]:.2f}%" if "val_accuracy" in h and len(h["val_accuracy"]) else "-"
        rho = f"{100 * np.mean(h['rho']):.2f}%" if "rho" in h else "-"
        self_rho = f"{100 * np.mean(h['rho_sgd_self']):.2f}%" if "rho_sgd_self" in h else "-"
        pop = (f"{int(h['population_n'][-1]):,} ({100 * h['population_rho'][-1]:.1f}%)"
               if "population_n" in h else "-")
        lines.append(f"| {os.path.basename(os.path.dirname(os.path.abspath(path)))} | {net} | {method} | {n} | "
                     f"{res.get('completed_iterations', '-')} | {acc} | {rho} | {self_rho} | {pop} | "
                     f"{_paper_ref(cfg)} |")
    lines += ["", "Paper figures (Zhang, Clune & Stanley 2017):", ""]
    lines += [f"- {key}: {v:,} {unit} ({where}: {what})" for key, (v, unit, where, what) in PAPER.items()]
    return "\n".join(lines)


def paired_curves(path_a, path_b):
    """How alike two runs' validation curves are (Fig. 2: ES vs its proxy on one mini-batch
    sequence): Pearson correlation of the accuracies at their common validation points, and
    of their iteration-to-iteration changes (the fluctuations), plus the mean |difference|."""
    ha, hb = io.read_results(path_a)["history"], io.read_results(path_b)["history"]
    common, ia, ib = np.intersect1d(ha["eval_iteration"], hb["eval_iteration"], return_indices=True)
    a, b = np.asarray(ha["val_accuracy"])[ia], np.asarray(hb["val_accuracy"])[ib]
    from hpc_es.analysis import pearson
    return {"points": int(common.size), "curve_correlation": pearson(a, b),
            "change_correlation": pearson(np.diff(a), np.diff(b)) if common.size > 2 else float("nan"),
            "mean_abs_difference": float(np.mean(np.abs(a - b)))}


def _paper_ref(cfg):
    method, net, es = cfg["run"]["method"], cfg["net"]["arch"], cfg["es"]
    if net == "tf_tutorial" and method == "sgd":
        return "98.69% (SGD, 2,000 it.)"
    if net == "tf_tutorial" and method == "es":
        return "97.44% (no-mini-batch)" if es["mode"] == "nominibatch" else "96.99%, rho 3.9% (N = 10,000)"
    if method == "population":
        return "~274,000 for 20% (tf_tutorial)"
    if net == "small" and method == "es" and es["mode"] == "nominibatch":
        return "98.7% / 99% (N = 10,000 / 50,000)"
    return "-"
