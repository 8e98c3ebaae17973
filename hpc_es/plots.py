"""Figures 1-5 of the paper, drawn from runs of the catalogue (:mod:`hpc_es.runs`) alone.

Drawing only: which runs exist, which figure they belong to and how they group into curves
is :mod:`hpc_es.runs`' business. As in the paper, a curve is the median validation accuracy
across its runs with the band between the 25th and 75th percentiles filled. Each method has
one colour in every figure (:data:`COLOURS`); a second curve of the same method in one
figure is dashed, a third dotted. Legends name the curve; the net, the run counts and the
band are in the caption under the axes. A figure missing one side of its comparison says so
on the axes. Matplotlib is imported when drawing.

  1  mini-batch ES (full perturbation) vs SGD; a second panel with rho(g_ES, g_true) if logged
  2  ES vs the ES proxy on the same mini-batches
  3  ES with limited vs full perturbation
  4  no-mini-batch vs mini-batch ES (no L2)
  5  no-mini-batch ES with L2 at each population size
"""
import os

from hpc_es import runs as runs_mod
from hpc_es.runs import FIGURES

COLOURS = {"sgd": "#222222", "es": "#1f77b4", "proxy": "#ff7f0e", "limited": "#2ca02c",
           "nominibatch": "#d62728", "population": "#9467bd", "first_order": "#17becf",
           "limited_first_order": "#bcbd22"}
STYLES = ("-", "--", ":", "-.")
DPI = 200
# The two sides of each comparison: (method key, in words). Figure 5 compares population sizes.
SIDES = {
    1: (("es", "mini-batch ES"), ("sgd", "SGD")),
    2: (("es", "ES with rho logged"), ("proxy", "ES proxy")),
    3: (("limited", "limited-perturbation ES"), ("es", "full-perturbation ES")),
    4: (("nominibatch", "no-mini-batch ES"), ("es", "mini-batch ES")),
    5: (),
}


def missing(runs, figure):
    """What ``figure`` compares but none of ``runs`` provides, in words (empty: nothing)."""
    present = {runs_mod.method_key(r.config) for r in runs if runs_mod.selects(figure, r.config)}
    return [words for key, words in SIDES[figure] if key not in present]


def figure(runs, n):
    """The matplotlib Figure of figure ``n``; raises ValueError if no run belongs to it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = runs_mod.curves(runs, n)
    if not acc:
        raise ValueError(f"figure {n} ({FIGURES[n]}): none of the {len(runs)} runs given belongs to it")
    configs = {name: next(iter(by_seed.values())).config for name, by_seed in runs_mod.group(runs, n).items()}
    rho = runs_mod.curves(runs, n, key="rho", at=None) if n == 1 else {}
    rho = {k: v for k, v in rho.items() if runs_mod.method_key(configs[k]) != "sgd"}
    styles = _styles(configs)
    nets = sorted({cfg["net"]["arch"] for cfg in configs.values()})
    legend = (lambda name: runs_mod.describe(configs[name])) if len(nets) == 1 else \
        (lambda name: f"{runs_mod.describe(configs[name])} ({configs[name]['net']['arch']})")

    fig, axes = plt.subplots(1, 2 if rho else 1, figsize=(12 if rho else 7, 4.8), squeeze=False)
    ax = axes[0][0]
    for name, (x, med, q25, q75, _) in acc.items():
        colour, style = styles[name]
        ax.plot(x, 100 * med, color=colour, linestyle=style, linewidth=1.4, label=legend(name))
        ax.fill_between(x, 100 * q25, 100 * q75, color=colour, alpha=0.2, linewidth=0)
    if n in (1, 2) and nets == ["tf_tutorial"]:
        _draw_paper_finals(ax, acc, configs)
    ax.set_xlabel("Iteration")
    ax.set_ylabel("Validation Accuracy (%)")
    ax.set_title(f"Figure {n}: {FIGURES[n]}", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    absent = missing(runs, n)
    if absent:
        ax.text(0.02, 0.98, "Not shown (no such run given): " + ", ".join(absent), transform=ax.transAxes,
                va="top", ha="left", fontsize=9, color="#aa0000")
    if rho:
        _draw_rho(axes[0][1], rho, configs, styles, legend)
    counts = ", ".join(f"{legend(name)}: {c[4]}" for name, c in acc.items())
    caption = (f"{' and '.join(nets)} net{'s' if len(nets) > 1 else ''}. Validation accuracy on all 10,000 MNIST "
               f"test images; line: median across runs, band: 25th-75th percentile. Runs per curve: {counts}.")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    return fig


def _draw_paper_finals(ax, acc, configs):
    """The paper's final accuracies on tf_tutorial (Sec. 4: ES with N = 10,000, which the proxy
    models, and SGD) as open triangles at 2,000 iterations, for the methods drawn."""
    from hpc_es.paper import text, value
    drawn = {runs_mod.method_key(configs[name]) for name in acc}
    for keys, paper_key, words in ((("es", "proxy"), "acc_es_tf_10k", "ES, N = 10,000"),
                                   (("sgd",), "acc_sgd_tf", "SGD")):
        if drawn & set(keys):
            ax.plot([2000], [value(paper_key)], linestyle="none", marker="v", markersize=8, markerfacecolor="none",
                    color=COLOURS[keys[0]], label=f"paper, final (Sec. 4): {words} {text(paper_key)}")


def _draw_rho(ax, rho, configs, styles, legend):
    from hpc_es import analysis, nets

    for name, (x, med, q25, q75, _) in rho.items():
        colour, style = styles[name]
        ax.plot(x, 100 * med, color=colour, linestyle=style, linewidth=0.9, label=legend(name))
        ax.fill_between(x, 100 * q25, 100 * q75, color=colour, alpha=0.2, linewidth=0)
        cfg = configs[name]
        theory = analysis.expected_rho(cfg["es"]["n_offspring"] / 2, nets.build(cfg["net"]["arch"]).n_params)
        ax.axhline(100 * theory, color=colour, linestyle=(0, (4, 2)), linewidth=1,
                   label=f"Theory sqrt(n / (n + P + 1)) = {100 * theory:.2f}%")
    ax.set_xlabel("Iteration")
    ax.set_ylabel("rho(g_ES, g_true) (%)")
    ax.set_title("Gradient Correlation (Eq. 3)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)


def _styles(configs):
    """{curve: (colour, line style)}: the method's colour; a method's 2nd, 3rd... curve dashed, dotted."""
    seen, out = {}, {}
    for name, cfg in configs.items():
        key = runs_mod.method_key(cfg)
        k = seen.get(key, 0)
        seen[key] = k + 1
        out[name] = (COLOURS.get(key, "#7f7f7f"), STYLES[k % len(STYLES)])
    return out


def draw(runs, n, out_dir, formats=("png", "pdf")):
    """Draw figure ``n`` into ``out_dir/figureN.{png,pdf}``; returns the paths written.

    Raises ValueError if no run given belongs to the figure.
    """
    return _save(figure(runs, n), out_dir, f"figure{n}", formats)


def default_out_dir(result_files):
    """Where figures go when no ``--out`` is given: ``figures/`` in the deepest directory that
    holds every results file (beside the results, never into the package's docs)."""
    dirs = [os.path.dirname(os.path.abspath(p)) for p in result_files]
    return os.path.join(os.path.commonpath(dirs), "figures")


def dose_response(key, at, summary, out_dir, formats=("png", "pdf")):
    """The dose-response figure (:mod:`hpc_es.dose`) of one group into
    ``out_dir/dose_response_<net>.{png,pdf}``: each proxy arm's median accuracy against rho on a
    log axis with its quartiles as error bars, SGD's median as a line with its quartile band (when
    the group has SGD runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    net, departures = key
    rows, s = summary["rhos"], summary["sgd"]
    fig, ax = plt.subplots(figsize=(7, 4.8))
    if rows:
        rho = np.array([100 * r["rho"] for r in rows])
        med = np.array([100 * r["median"] for r in rows])
        err = np.array([[100 * (r["median"] - r["q25"]) for r in rows], [100 * (r["q75"] - r["median"]) for r in rows]])
        ax.errorbar(rho, med, yerr=err, color=COLOURS["proxy"], capsize=3, linewidth=1.4,
                    label="ES proxy (median, quartiles)")
        for below, face, words in ((True, COLOURS["proxy"], f"significantly below SGD (rank-sum p < {summary['alpha']})"),
                                   (False, "white", "not significantly below SGD") if s else
                                   (False, COLOURS["proxy"], "no SGD runs to test against")):
            pick = [i for i, r in enumerate(rows) if r["below_sgd"] == below]
            if pick:
                ax.plot(rho[pick], med[pick], linestyle="none", marker="o", markersize=7, zorder=3,
                        markerfacecolor=face, color=COLOURS["proxy"], label=words)
        ax.set_xscale("log")
        ax.set_xticks(rho)
        ax.set_xticklabels([f"{x:g}" for x in rho])
    if s:
        ax.axhline(100 * s["median"], color=COLOURS["sgd"], linewidth=1.2, label="SGD (median, quartile band)")
        ax.axhspan(100 * s["q25"], 100 * s["q75"], color=COLOURS["sgd"], alpha=0.12, linewidth=0)
    ax.set_xlabel("rho(g_proxy, g_true) (%), log scale")
    window = summary.get("window", 1)
    ax.set_ylabel(f"Validation Accuracy at Iteration {at:,} (%)" if window == 1 else
                  f"Mean Val. Accuracy, {window} Validations to {at:,} (%)")
    ax.set_title("Accuracy against Gradient Correlation (ES Proxy)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    counts = ", ".join(f"{100 * r['rho']:g}%: {len(r['runs'])}" for r in rows)
    caption = (f"{net} net{''.join(', ' + d for d in departures)}. Validation accuracy on all 10,000 MNIST test "
               f"images at iteration {at:,}; runs: SGD {len(s['runs']) if s else 'none'}, proxy {counts}.")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    return _save(fig, out_dir, f"dose_response_{net}", formats)


def dose_curves(key, at, arms, out_dir, formats=("png", "pdf")):
    """The validation curves of one dose-response group (:func:`hpc_es.dose.curves`: SGD and each
    rho arm, median with quartile band) into ``out_dir/dose_curves_<net>.{png,pdf}``: the whole
    run, and beside it the second half with the accuracy axis fitted to it, where arms a few
    tenths of a point apart can be told apart (as Fig. 3's "overlapping" curves cannot be at
    full scale)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    net, departures = key
    rhos = sorted(a for a in arms if a != "sgd")
    shades = plt.get_cmap("viridis")(np.linspace(0.1, 0.85, max(len(rhos), 1)))
    style = {"sgd": (COLOURS["sgd"], "SGD"), **{r: (shades[i], f"proxy, rho = {100 * r:g}%") for i, r in enumerate(rhos)}}
    order = ["sgd"] * ("sgd" in arms) + rhos
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    low, high = [], []
    for arm in order:
        x, med, q25, q75, _ = arms[arm]
        colour, words = style[arm]
        late = x >= at / 2
        for ax, keep in ((axes[0], x >= 0), (axes[1], late)):
            ax.plot(x[keep], 100 * med[keep], color=colour, linewidth=1.4, label=words)
            ax.fill_between(x[keep], 100 * q25[keep], 100 * q75[keep], color=colour, alpha=0.2, linewidth=0)
        if late.any():
            low.append(100 * q25[late].min())
            high.append(100 * q75[late].max())
    if low:
        pad = 0.1 * (max(high) - min(low)) + 0.05
        axes[1].set_ylim(min(low) - pad, max(high) + pad)
    for ax, title in ((axes[0], "Whole run"), (axes[1], f"Iterations {at // 2:,}-{at:,}, accuracy axis fitted")):
        ax.set_xlabel("Iteration")
        ax.set_ylabel("Validation Accuracy (%)")
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=9, loc="lower right")
    counts = ", ".join(f"{style[a][1]}: {arms[a][4]}" for a in order)
    caption = (f"{net} net{''.join(', ' + d for d in departures)}. Validation accuracy on all 10,000 MNIST test "
               f"images; line: median across runs, band: 25th-75th percentile. Runs per curve: {counts}.")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    return _save(fig, out_dir, f"dose_curves_{net}", formats)


def layers(run, out_dir, formats=("png", "pdf"), window=10):
    """Which layers ES gets right along one run (reading notes, Question 1) into
    ``out_dir/layers_<run directory>.{png,pdf}``: per layer, the measured rho(g_ES, g_true)
    (moving median over ``window`` iterations) beside our theory's (dashed), and each layer's
    share of |g_true|^2. Needs a run made with measure.correlation (``rho_theory_<layer>``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    h = run.history
    names = [k[len("rho_theory_"):] for k in h if k.startswith("rho_theory_")]
    if not names:
        raise ValueError(f"{run.path}: no per-layer theory in its history (an ES run with "
                         f"measure.correlation = true, full perturbation)")
    x = np.asarray(h["iteration"])
    shares = [k for k in names if f"gshare_{k}" in h]
    fig, axes = plt.subplots(1, 2 if shares else 1, figsize=(12 if shares else 7, 4.8), squeeze=False)
    ax = axes[0][0]
    palette = plt.get_cmap("tab10")
    def smooth(values):  # moving median over the last `window` iterations
        v = np.asarray(values, float)
        return np.array([np.median(v[max(0, j - window + 1):j + 1]) for j in range(len(v))])

    for i, name in enumerate(sorted(names)):
        ax.plot(x, 100 * smooth(h[f"rho_{name}"]), color=palette(i), linewidth=1.3, label=f"{name}: measured")
        ax.plot(x, 100 * smooth(h[f"rho_theory_{name}"]), color=palette(i), linestyle="--", linewidth=1,
                label=f"{name}: theory")
    _log_panel(ax, "rho(g_ES, g_true) within the layer (%), log scale", "Per-Layer Gradient Correlation", ncol=2)
    if shares:
        ax2 = axes[0][1]
        for i, name in enumerate(sorted(shares)):
            ax2.plot(x, 100 * smooth(h[f"gshare_{name}"]), color=palette(i), linewidth=1.2, label=name)
        _log_panel(ax2, "share of |g_true|^2 (%), log scale", "Each Layer's Share of the Squared Gradient Norm")
    cfg = run.config
    caption = (f"{cfg['net']['arch']} net, {runs_mod.describe(cfg)}, seed {run.seed}; every line a moving median over "
               f"{window} iterations; theory (ours): sqrt(n |g_S|^2 / (n |g_S|^2 + |S| |g|^2 + |g_S|^2)), n = N/2, "
               f"from each iteration's g_true.")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
    stem = os.path.basename(os.path.dirname(os.path.abspath(run.path))) or "run"
    return _save(fig, out_dir, f"layers_{stem}", formats)


def proxy_gap(summaries, out_dir, formats=("png", "pdf"), first_order=None):
    """Per net, ``out_dir/proxy_gap_<net>.{png,pdf}``: the final accuracy gap (proxy - ES) per
    seed and its median against sigma (log axis), with ES's seed-to-seed standard deviation as
    a band around zero (:mod:`hpc_es.proxy_gap`); with ``first_order`` ({(net, N, sigma):
    summary} of :func:`hpc_es.proxy_gap.twins`), first-order ES's gap to its real ES twins
    beside it, one line per N. Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first_order = {k: s for k, s in (first_order or {}).items() if s}
    proxies = {k: s for k, s in summaries.items() if s}
    paths = []
    for net in sorted({k[0] for k in proxies} | {k[0] for k in first_order}):
        # one line per instrument (and N): (colour, label, [(sigma, summary)])
        lines = []
        items = sorted((k[1], s) for k, s in proxies.items() if k[0] == net)
        if items:
            lines.append((COLOURS["proxy"], "proxy - ES", items))
        for n in sorted({k[1] for k in first_order if k[0] == net}):
            fo = sorted((k[2], s) for k, s in first_order.items() if k[0] == net and k[1] == n)
            lines.append((COLOURS["first_order"], f"first-order ES - ES (N = {n:,})", fo))
        fig, ax = plt.subplots(figsize=(7, 4.8))
        band = dict(sorted((x, 100 * s["es_spread"]) for _, _, its in lines for x, s in its))
        sigma = np.array(list(band))
        ax.fill_between(sigma, -np.array(list(band.values())), list(band.values()), color=COLOURS["es"],
                        alpha=0.15, linewidth=0, label="ES seed-to-seed std (band around 0)")
        for k, (colour, label, its) in enumerate(lines):
            for x, s in its:
                ax.plot([x] * len(s["seeds"]), [100 * r["final_gap"] for r in s["seeds"]], linestyle="none",
                        marker=".", color=colour, alpha=0.6)
            ax.plot([x for x, _ in its], [100 * s["median_final_gap"] for _, s in its], color=colour,
                    marker="o", linestyle=STYLES[k % len(STYLES)], linewidth=1.4,
                    label=f"{label}, final accuracy (median; dots: seeds)")
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks(sigma)
        ax.set_xticklabels([f"{x:g}" for x in sigma])
        ax.set_xlabel("sigma (log scale)")
        ax.set_ylabel("Final Validation Accuracy Gap (points)")
        ax.set_title("Where an Instrument Stops Predicting ES", fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
        seeds = "; ".join(f"{label}: " + ", ".join(f"{x:g}: {len(s['seeds'])}" for x, s in its)
                          for _, label, its in lines)
        caption = (f"{net} net. A proxy follows its ES run's measured rho per iteration; first-order ES "
                   f"runs on its twin's populations (ours). Same seed: same initialisation and mini-batches. "
                   f"Seeds per sigma: {seeds}.")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        fig.text(0.01, 0.01, caption, fontsize=8, ha="left", va="bottom", wrap=True)
        paths += _save(fig, out_dir, f"proxy_gap_{net}", formats)
    return paths


def _save(fig, out_dir, stem, formats):
    """Write ``fig`` as ``out_dir/stem.<format>`` for each format, close it; the paths written."""
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for fmt in formats:
        path = os.path.join(out_dir, f"{stem}.{fmt}")
        fig.savefig(path, dpi=DPI, metadata={"CreationDate": None} if fmt == "pdf" else {})
        paths.append(path)
    plt.close(fig)
    return paths


def _log_panel(ax, ylabel, title, ncol=1):
    """A panel against iterations with a log y axis labelled in plain numbers."""
    from matplotlib.ticker import FormatStrFormatter
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("Iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=ncol)
