"""The paper's instruments: gradient correlation (Eq. 3), the ES proxy, their theory.

* :func:`pearson` is Eq. (3): the Pearson correlation over all P parameters of two gradient
  vectors (accumulated in float64).
* :func:`layer_correlations` is the same per layer (weights and bias together), to see which
  layers ES estimates well (the question of the reading notes).
* :func:`expected_rho` is the theory for ES with n antithetic pairs of Gaussian perturbations
  on a locally linear objective: with g_hat = 1/n sum_k (eps_k . g) eps_k,
  E[g_hat . g] = |g|^2 and E|g_hat|^2 = |g|^2 (1 + (P + 1) / n), so
  cos^2(g_hat, g) ~ n / (n + P + 1). With N = 10,000 (n = 5,000) and P = 3,274,634 this is
  3.9%, the paper's measured correlation; 20% needs n ~ 137,000 pairs (N ~ 274,000).
* :func:`proxy_gradient` is the ES proxy of Sec. 4: g_proxy = g_true + m g_noise with
  m = sqrt(var(g_true) (1 - rho^2) / (var(g_noise) rho^2)), so that
  correlation(g_proxy, g_true) = rho up to the sampling correlation of g_noise with g_true
  (of order 1/sqrt(P)).
"""
import numpy as np


def pearson(a, b):
    """Eq. (3): Pearson correlation of two vectors over all their elements (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a - a.mean()
    b = b - b.mean()
    denom = np.sqrt(np.dot(a, a) * np.dot(b, b))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def layer_slices(net):
    """{layer name: slice of theta holding that layer's weight and bias}."""
    out = {}
    for i in range(0, len(net.layout), 2):
        w, b = net.layout[i], net.layout[i + 1]
        out[net.layers[w.layer].name] = slice(w.offset, b.offset + b.size)
    return out


def layer_correlations(net, a, b):
    """{layer name: Pearson correlation of a and b restricted to that layer}."""
    return {name: pearson(a[s], b[s]) for name, s in layer_slices(net).items()}


def expected_rho(n_pairs, n_params):
    """Theoretical correlation sqrt(n / (n + P + 1)) of ES with n antithetic pairs (see module doc)."""
    n = np.asarray(n_pairs, np.float64)
    return np.sqrt(n / (n + n_params + 1.0))


def pairs_for_rho(rho, n_params):
    """Antithetic pairs n at which :func:`expected_rho` reaches ``rho``: n = rho^2 (P + 1) / (1 - rho^2)
    (infinite for rho >= 1, which only the limit reaches)."""
    if rho >= 1.0:
        return float("inf")
    return rho ** 2 * (n_params + 1.0) / (1.0 - rho ** 2)


def proxy_gradient(g_true, rho, g_noise, out):
    """ES proxy: ``out = g_true + m * g_noise`` with m chosen for correlation ``rho`` (0 < rho <= 1)."""
    var_true = float(np.var(g_true, dtype=np.float64))
    var_noise = float(np.var(g_noise, dtype=np.float64))
    m = np.sqrt(var_true * (1.0 - rho ** 2) / (var_noise * rho ** 2)) if var_noise > 0 else 0.0
    np.multiply(g_noise, m, out=out)
    out += g_true
    return out


def wilcoxon(a, b):
    """Two-sided paired Wilcoxon signed-rank p-value of samples a, b (scipy), or None without
    scipy or without a non-zero difference."""
    try:
        from scipy.stats import wilcoxon as _wilcoxon
    except ImportError:
        import logging
        logging.getLogger(__name__).warning("scipy not installed (pip install 'hpc_es[stats]'): no Wilcoxon test")
        return None
    diff = np.asarray(a) - np.asarray(b)
    if len(diff) < 2 or not diff.any():
        return None
    return float(_wilcoxon(a, b).pvalue)
