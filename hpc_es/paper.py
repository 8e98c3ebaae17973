"""The numbers of Zhang, Clune & Stanley (2017), as the paper states them, for reports.

Each entry: key -> (value, unit, where in the paper, what it is). Values are the paper's;
nothing here was measured by hpc_es.
"""
PAPER = {
    "rho_es_tf_10k": (3.9, "%", "Sec. 4, Fig. 1", "mean rho(g_ES, g_true), tf_tutorial, N = 10,000, mini-batch"),
    "rho_sgd_self": (39.04, "%", "Sec. 3", "rho of g_true on two random mini-batches"),
    "acc_es_tf_10k": (96.99, "%", "Sec. 4", "ES, tf_tutorial, N = 10,000, 2,000 iterations, mean of 5 runs"),
    "acc_sgd_tf": (98.69, "%", "Sec. 4", "SGD (Adam), tf_tutorial, 2,000 iterations"),
    "table1_sgd": (99.11, "%", "Table 1", "SGD, 40,000 iterations, mean of 20 runs (std 0.10)"),
    "table1_proxy_4": (98.39, "%", "Table 1", "ES proxy rho = 4%, 40,000 iterations (std 0.13)"),
    "table1_proxy_20": (98.99, "%", "Table 1", "ES proxy rho = 20%, 40,000 iterations (std 0.11)"),
    "population_20": (274_000, "offspring", "Sec. 4", "pseudo-offspring for rho = 20%, tf_tutorial"),
    "master_dense_s": (90.0, "s", "Sec. 4.1", "master aggregation, N = 10,000 x P = 3,274,634"),
    "master_limited_s": (1.4, "s", "Sec. 4.1", "master aggregation, limited, 50,000 x 5,000"),
    "acc_es_nominibatch_tf": (97.44, "%", "Sec. 4.2", "no-mini-batch ES, tf_tutorial, N = 10,000, 2,000 it."),
    "acc_es_small99_10k": (98.7, "%", "Sec. 4.3, Fig. 5", "no-mini-batch ES + L2, small net, N = 10,000"),
    "acc_es_small99_50k": (99.0, "%", "Sec. 4.3, Fig. 5", "no-mini-batch ES + L2, small net, N = 50,000"),
}
