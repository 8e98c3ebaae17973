"""The numbers of Zhang, Clune & Stanley (2017), as the paper states them, for reports.

Each entry: key -> (value, unit, where in the paper, what it is). Values are the paper's;
nothing here was measured by hpc_es. Reports, benchmarks and docs take them from here
(:func:`text`) instead of retyping them.
"""
PAPER = {
    "rho_es_tf_10k": (3.9, "%", "Sec. 4, Fig. 1", "mean rho(g_ES, g_true) over a 2,000-iteration run, tf_tutorial, N = 10,000, mini-batch"),
    "rho_sgd_self": (39.04, "%", "Sec. 3", "rho of g_true on two random mini-batches, \"on average\" (which run and iterations: not stated)"),
    "acc_es_tf_10k": (96.99, "%", "Sec. 4", "ES, tf_tutorial, N = 10,000, 2,000 iterations, mean of 5 runs"),
    "acc_sgd_tf": (98.69, "%", "Sec. 4", "SGD (Adam), tf_tutorial, 2,000 iterations (no run count given)"),
    "table1_sgd": (99.11, "%", "Table 1", "SGD, 40,000 iterations, mean of 20 runs (std 0.10)"),
    "table1_proxy_4": (98.39, "%", "Table 1", "ES proxy rho = 4%, 40,000 iterations (std 0.13)"),
    "table1_proxy_20": (98.99, "%", "Table 1", "ES proxy rho = 20%, 40,000 iterations (std 0.11)"),
    "table1_iterations": (40_000, "iterations", "Table 1", "iterations of each Table 1 run"),
    "table1_runs": (20, "runs", "Table 1", "runs per method"),
    "population_20": (274_000, "offspring", "Sec. 4", "pseudo-offspring for rho = 20%, tf_tutorial"),
    "master_dense_s": (90.0, "s", "Sec. 4.1", "master aggregation, N = 10,000 x P = 3,274,634"),
    "master_limited_s": (1.4, "s", "Sec. 4.1", "master aggregation, limited, 50,000 x 5,000"),
    "master_speedup": (64, "x", "Sec. 4.1", "dense over limited master aggregation, measured"),
    "master_speedup_theory": (131, "x", "Sec. 4.1", "3,274,634 x 10,000 / (5,000 x 50,000)"),
    "fig3_p": (0.75, "", "Sec. 4.1, Fig. 3", "Wilcoxon p (form and endpoint not stated), limited (50,000 x 5,000) vs full ES (10,000), 5 runs each"),
    "fig4_p": (0.05, "", "Sec. 4.2, Fig. 4", "Wilcoxon p bound (p < 0.05; form not stated), no-mini-batch vs mini-batch ES, 5 runs each"),
    "acc_es_nominibatch_tf": (97.44, "%", "Sec. 4.2", "no-mini-batch ES, tf_tutorial, N = 10,000, 2,000 it."),
    "acc_es_small99_10k": (98.7, "%", "Sec. 4.3, Fig. 5", "no-mini-batch ES + L2, small net, N = 10,000 (\"around 98.7%\")"),
    "acc_es_small99_50k": (99.0, "%", "Sec. 4.3, Fig. 5", "no-mini-batch ES + L2, small net, N = 50,000"),
}


def value(key):
    """The paper's number for ``key``."""
    return PAPER[key][0]


def text(key):
    """The paper's number for ``key`` as it reads in a report: "96.99%", "~274,000", "90 s", "64x"."""
    v, unit = PAPER[key][:2]
    number = f"{v:,}" if isinstance(v, int) else f"{v:g}"
    if key == "population_20":
        return f"~{number}"  # the paper: "about 274,000"
    return number + unit if unit in ("%", "x", "") else f"{number} {unit}"
