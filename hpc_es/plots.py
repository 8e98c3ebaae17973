"""Figures 1-5 of the paper from HDF5 results alone (matplotlib, imported when drawing).

Runs are found from the paths given (results.h5 files, or directories searched recursively),
grouped into curves by what their config says they are (method, mode, perturbation, N, L2),
and drawn as in the paper: the median validation accuracy across runs, with the band between
the 25th and 75th percentiles filled. Runs of one curve that repeat a seed count once (see
:func:`group`). Each
figure selects the runs it is about:

  1  mini-batch ES (full perturbation) vs SGD; a second panel with rho(g_ES, g_true) if logged
  2  ES vs the ES proxy on the same mini-batches
  3  ES with limited vs full perturbation
  4  no-mini-batch vs mini-batch ES (no L2)
  5  no-mini-batch ES with L2 at each population size
"""
import os
from dataclasses import dataclass

import numpy as np

from hpc_es import config, io

FIGURES = {
    1: "Mini-batch ES vs SGD",
    2: "ES vs its proxy on the same mini-batches",
    3: "ES with and without limited perturbation",
    4: "No-mini-batch vs mini-batch ES",
    5: "No-mini-batch ES with L2 on the small net",
}


@dataclass
class Run:
    path: str
    config: dict
    history: dict
    seconds: float
    ranks: int

    @property
    def seed(self):
        return self.config["run"]["seed"]


def find_results(paths, name=io.RESULTS):
    """Files called ``name`` (results.h5 by default) named or found under the given paths
    (sorted); a path that is neither is an error."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                found += [os.path.join(root, f) for f in files if f == name]
        elif os.path.isfile(path):
            if os.path.basename(path) == name or name == io.RESULTS:
                found.append(path)
        else:
            raise io.RunDirError(f"{path}: no such file or directory")
    return sorted(found)


def load_runs(paths):
    runs = []
    for path in find_results(paths):
        res = io.read_results(path)
        h = res["history"]
        runs.append(Run(path, res["config"], h, float(np.sum(h.get("seconds_total", [0.0]))),
                        int(res.get("ranks", 1))))
    return runs


def label(cfg):
    """The curve a run belongs to, in words."""
    method, es, net = cfg["run"]["method"], cfg["es"], cfg["net"]["arch"]
    if method == "sgd":
        text = "SGD (Adam)"
    elif method == "proxy":
        text = f"ES proxy, rho = {100 * cfg['proxy']['rho']:.3g}%"
    elif method == "es":
        text = ("no-mini-batch ES" if es["mode"] == "nominibatch" else "ES") + f", N = {es['n_offspring']:,}"
        if es.get("perturbation") == "limited":
            text = "limited " + text + f" (buckets <= {es['bucket_size']:,})"
    else:
        text = method
    return f"{text}{''.join(', ' + s for s in _departures(cfg))} [{net}]"


def _departures(cfg):
    """The training settings of ``cfg`` that differ from the paper's (the config defaults, Sec. 4),
    in words: runs that differ in any of them never share a curve."""
    paper = config.Config().to_dict()
    method = cfg["run"]["method"]
    keys = [("es", "sigma"), ("es", "fitness")] if method in ("es", "population") else []
    keys += [("optim", "name"), ("optim", "lr"), ("data", "batch_size"), ("optim", "l2")]
    names = {"name": "optimizer", "batch_size": "batch", "l2": "L2"}
    return [f"{names.get(key, key)} {cfg[section][key]:g}" if isinstance(cfg[section][key], float)
            else f"{names.get(key, key)} {cfg[section][key]}"
            for section, key in keys if cfg[section][key] != paper[section][key]]


def selects(figure, cfg):
    """Whether a run with config ``cfg`` belongs in ``figure``."""
    method, es = cfg["run"]["method"], cfg["es"]
    full = es.get("perturbation", "full") == "full"
    l2 = cfg["optim"]["l2"]
    if figure == 1:
        return method == "sgd" or (method == "es" and es["mode"] == "minibatch" and full and not l2)
    if figure == 2:
        return method == "proxy" or (method == "es" and es["mode"] == "minibatch" and full
                                     and cfg["measure"]["correlation"])
    if figure == 3:
        return method == "es" and es["mode"] == "minibatch" and not l2
    if figure == 4:
        return method == "es" and full and not l2
    if figure == 5:
        return method == "es" and es["mode"] == "nominibatch" and l2 > 0
    raise ValueError(f"figure {figure}: expected one of {sorted(FIGURES)}")


def group(runs, figure, keep=lambda run: True):
    """{label: {seed: run}} of the runs ``figure`` selects; of several runs with one seed, the
    one with the most recorded iterations (then the first path) counts."""
    groups = {}
    for run in runs:
        if selects(figure, run.config) and keep(run):
            seeds = groups.setdefault(label(run.config), {})
            old = seeds.get(run.seed)
            if old is None or len(run.history.get("seconds_total", [])) > len(old.history.get("seconds_total", [])):
                seeds[run.seed] = run
    return dict(sorted(groups.items()))


def curves(runs, figure, key="val_accuracy", at="eval_iteration"):
    """{label: (x, median, q25, q75, n_runs)} over the runs ``figure`` selects, one per seed."""
    groups = group(runs, figure, lambda r: key in r.history and len(r.history[key]))
    out = {}
    for name, by_seed in groups.items():
        series = [(np.asarray(r.history[at]) if at else np.arange(1, len(r.history[key]) + 1),
                   np.asarray(r.history[key], float)) for r in by_seed.values()]
        x = series[0][0]
        for xs, _ in series[1:]:
            x = np.intersect1d(x, xs)
        if x.size == 0:
            continue
        ys = np.array([y[np.searchsorted(xs, x)] for xs, y in series])
        q25, med, q75 = np.percentile(ys, [25, 50, 75], axis=0)
        out[name] = (x, med, q25, q75, len(series))
    return out


def draw(runs, figure, out_dir, formats=("png", "pdf")):
    """Draw ``figure`` into ``out_dir/figureN.{png,pdf}``; returns the paths written.

    Raises ValueError if no run given belongs to the figure.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = curves(runs, figure)
    if not acc:
        raise ValueError(f"figure {figure} ({FIGURES[figure]}): none of the {len(runs)} runs given belongs to it")
    rho = curves(runs, figure, key="rho", at=None) if figure == 1 else {}
    rho = {k: v for k, v in rho.items() if not k.startswith("SGD")}
    fig, axes = plt.subplots(1, 2 if rho else 1, figsize=(11 if rho else 6.5, 4.2), squeeze=False)
    ax = axes[0][0]
    for name, (x, med, q25, q75, n) in acc.items():
        line, = ax.plot(x, 100 * med, label=f"{name} (median of {n})")
        ax.fill_between(x, 100 * q25, 100 * q75, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"Figure {figure}: {FIGURES[figure]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    if rho:
        from hpc_es import analysis, nets
        ax2 = axes[0][1]
        configs = {name: next(iter(by_seed.values())).config for name, by_seed in group(runs, figure).items()}
        for name, (x, med, q25, q75, n) in rho.items():
            line, = ax2.plot(x, 100 * med, label=f"{name} (median of {n})", linewidth=0.8)
            ax2.fill_between(x, 100 * q25, 100 * q75, color=line.get_color(), alpha=0.25, linewidth=0)
            cfg = configs[name]
            theory = analysis.expected_rho(cfg["es"]["n_offspring"] / 2, nets.build(cfg["net"]["arch"]).n_params)
            ax2.axhline(100 * theory, color=line.get_color(), linestyle="--", linewidth=1,
                        label=f"theory sqrt(n / (n + P + 1)) = {100 * theory:.2f}%")
        ax2.set_xlabel("iteration")
        ax2.set_ylabel("rho(g_ES, g_true) (%)")
        ax2.set_title("gradient correlation (Eq. 3)", fontsize=10)
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fmt in formats:
        path = os.path.join(out_dir, f"figure{figure}.{fmt}")
        fig.savefig(path, dpi=130, metadata={"CreationDate": None} if fmt == "pdf" else {})
        paths.append(path)
    plt.close(fig)
    return paths
