"""The run catalogue: results files found under paths, read into :class:`Run` records, and
grouped into curves by what their config says they are. A run is known by its id
(:func:`hpc_es.io.run_id`): one record per id, and a run that reads another (a proxy's
``proxy.rho_from``) names it by id.

The report (:mod:`hpc_es.report`), the figures (:mod:`hpc_es.plots`) and the command line
find and group runs here, one way. A curve is a set of runs that differ only in their seed:
:func:`label` names every setting that makes runs different curves (method, mode,
perturbation, N, and each training setting that departs from the paper's). Of several runs
with one seed, the one with the most recorded iterations counts (:func:`group`).
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from hpc_es import config, io, kinds

# Which figure is about what (Sec. 4 of the paper); :func:`selects` says which runs belong.
FIGURES = {
    1: "Mini-Batch ES vs SGD",
    2: "ES vs Its Proxy on the Same Mini-Batches",
    3: "ES With and Without Limited Perturbation",
    4: "No-Mini-Batch vs Mini-Batch ES",
    5: "No-Mini-Batch ES With L2 on the Small Net",
}


@dataclass
class Run:
    path: str
    config: dict
    history: dict
    seconds: float
    ranks: int
    hosts: list = field(default_factory=list)
    started: str = ""
    resumes: list = field(default_factory=list)  # [{"time", "ranks", "hosts", "iteration"}] of each --resume
    command: str = ""
    completed: int = -1  # iterations done (-1: not recorded)
    run_id: str = None  # io.run_id: the run's identity (None: a file that records none, a run of its own)
    rho_from_id: str = None  # the run id of the ES run a proxy follows (proxy.rho_from), if recorded

    @property
    def seed(self):
        return self.config["run"]["seed"]

    @property
    def complete(self):
        """Whether the run has done all its config asks for (not one in progress): :func:`finished`."""
        return finished(self.config, self.history, self.completed)

    @property
    def from_theta(self):
        """Whether the run started from a given theta (net.theta_from), not from initialisation."""
        return bool(self.config["net"].get("theta_from"))

    @property
    def rank_counts(self):
        """Every rank count this run used, first the one it started with."""
        counts = [self.ranks]
        for r in self.resumes:
            if r.get("ranks") not in counts:
                counts.append(r.get("ranks"))
        return counts


def find_results(paths, name=io.RESULTS):
    """Files called ``name`` (results.h5 by default) named or found under the given paths
    (sorted; a file under two of the paths given, e.g. ``runs runs/sigma``, once); a path that is
    neither is an error."""
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
    unique = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique.values())


def finished(cfg, history, completed):
    """Whether a run has done all its config asks (:func:`hpc_es.kinds.finished`)."""
    return kinds.finished(cfg, history, completed)


def load_runs(paths):
    """A :class:`Run` for every run under ``paths``, one record per run id (:func:`io.run_id`): of
    several files of one run (its results file, an archive of it, a restored copy, a copy
    continued further), the one furthest along counts, then the first path, with a warning
    naming the others, so no statistic counts a run twice."""
    best, order = {}, []
    for path in find_results(paths):
        res = io.read_results(path)
        h = res["history"]
        run = Run(path, res["config"], h, float(np.sum(h.get("seconds_total", [0.0]))), int(res.get("ranks", 1)),
                  list(res.get("hosts", [])), str(res.get("started", "")), list(res.get("resumes", [])),
                  str(res.get("command", "")), int(res.get("completed_iterations", -1)),
                  io.run_id(res, res["config"]), res.get("rho_from_id"))
        key = run.run_id or path
        if key not in best:
            order.append(key)
            best[key] = [run]
        else:
            best[key].append(run)
    kept, dropped = [], []
    for key in order:
        files = best[key]
        first = max(files, key=lambda r: r.completed)  # max keeps the first of equals: the first path
        kept.append(first)
        dropped += [f"{r.path} (a copy of {first.path})" for r in files if r is not first]
    if dropped:
        logging.getLogger("hpc_es").warning("%d results file(s) are copies of a run given twice, counted once: %s",
                                            len(dropped), "; ".join(dropped))
    return kept


def by_id(runs, run_id):
    """The run of ``runs`` whose identity is ``run_id``, or None."""
    return next((r for r in runs if run_id is not None and r.run_id == run_id), None)


def method_key(cfg):
    """What a run is, as one word: sgd, proxy, es, limited, nominibatch, first_order,
    limited_first_order (colours, captions)."""
    method, es = cfg["run"]["method"], cfg["es"]
    if method == "es_first_order":
        return "limited_first_order" if es.get("perturbation") == "limited" else "first_order"
    if method == "es" and es.get("perturbation") == "limited":
        return "limited"
    if method == "es" and es["mode"] == "nominibatch":
        return "nominibatch"
    return method


def describe(cfg):
    """The curve a run belongs to in words, without its net (legends)."""
    method, es = cfg["run"]["method"], cfg["es"]
    if method == "sgd":
        text = "SGD (Adam)"
    elif method == "proxy" and cfg["proxy"].get("rho_from"):
        text = "ES proxy, rho per iteration from an ES run"
    elif method == "proxy":
        text = f"ES proxy, rho = {100 * cfg['proxy']['rho']:.3g}%"
    elif method in config.ES_METHODS:
        text = ("no-mini-batch ES" if es["mode"] == "nominibatch" else "ES") + f", N = {es['n_offspring']:,}"
        if method == "es_first_order":
            text = "first-order " + text
        if es.get("perturbation") == "limited":
            text = "limited " + text + f" (buckets <= {es['bucket_size']:,})"
    else:
        text = method
    return text + "".join(", " + s for s in departures(cfg))


def label(cfg):
    """The curve a run belongs to, in words, with its net: runs of one label differ only in seed."""
    return f"{describe(cfg)} [{cfg['net']['arch']}]"


def departures(cfg):
    """The training settings of ``cfg`` that differ from the defaults (the paper's values where it
    gives them, Sec. 4), in words: runs that differ in any of them never share a curve."""
    paper = config.Config().to_dict()
    method = cfg["run"]["method"]
    keys = [("es", "sigma"), ("es", "fitness")] if method in config.ES_METHODS + ("population",) else []
    if method == "es" and cfg["es"]["mode"] == "nominibatch":
        keys.append(("es", "subset"))
    keys += [("optim", "name"), ("optim", "lr"), ("data", "batch_size"), ("optim", "l2")]
    names = {"name": "optimizer", "batch_size": "batch", "l2": "L2", "subset": "a subset per"}
    return [f"{names.get(key, key)} {cfg[section][key]:g}" if isinstance(cfg[section][key], float)
            else f"{names.get(key, key)} {cfg[section][key]}"
            for section, key in keys if cfg[section].get(key, paper[section][key]) != paper[section][key]]


def selects(figure, cfg):
    """Whether a run with config ``cfg`` belongs in ``figure``."""
    method, es = cfg["run"]["method"], cfg["es"]
    full = es.get("perturbation", "full") == "full"
    l2 = cfg["optim"]["l2"]
    if figure == 1:
        return method == "sgd" or (method == "es" and es["mode"] == "minibatch" and full and not l2)
    if figure == 2:  # SGD on the same mini-batches as context (the paper's Fig. 2 has ES and proxy only)
        return method in ("proxy", "sgd") or (method == "es" and es["mode"] == "minibatch" and full
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
    """{label: (x, median, q25, q75, n_runs)} over the runs ``figure`` selects, one per seed,
    at the points every run of the curve has."""
    groups = group(runs, figure, lambda r: key in r.history and len(r.history[key]))
    out = {}
    for name, by_seed in groups.items():
        curve = band(by_seed.values(), key, at)
        if curve is not None:
            out[name] = curve
    return out


def band(runs, key="val_accuracy", at="eval_iteration"):
    """(x, median, q25, q75, n_runs) of ``key`` across ``runs`` at the points every run has
    (``at``: the history key of those points; None: iterations 1, 2, ...), or None if they share none."""
    series = [(np.asarray(r.history[at]) if at else np.arange(1, len(r.history[key]) + 1),
               np.asarray(r.history[key], float)) for r in runs]
    x = series[0][0]
    for xs, _ in series[1:]:
        x = np.intersect1d(x, xs)
    if x.size == 0:
        return None
    ys = np.array([y[np.searchsorted(xs, x)] for xs, y in series])
    q25, med, q75 = np.percentile(ys, [25, 50, 75], axis=0)
    return x, med, q25, q75, len(series)
