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
* :func:`expected_layer_rho` is the same theory restricted to a part S of theta (ours): the
  estimate's S-part has E[g_hat_S . g_S] = |g_S|^2 and per-element variance (|g|^2 + g_j^2) / n,
  so rho_S^2 ~ n |g_S|^2 / (n |g_S|^2 + |S| |g|^2 + |g_S|^2): a layer is estimated well when its
  share of |g|^2 is large against its share of the parameters. S = all of theta gives the above.
* :func:`smoothed_gradient` estimates the gradient of the Gaussian-smoothed loss
  E[f(theta + sigma eps)] (what ES follows at any sigma) as the mean exact gradient at
  antithetic points theta +- sigma eps, and reports how well its own n pairs pin it down.
* :func:`proxy_gradient` is the ES proxy of Sec. 4: g_proxy = g_true + m g_noise with
  m = sqrt(var(g_true) (1 - rho^2) / (var(g_noise) rho^2)), so that
  correlation(g_proxy, g_true) = rho up to the sampling correlation of g_noise with g_true
  (of order 1/sqrt(P)).

Comparing methods over runs (rank-sum, signed-rank, power) is :mod:`hpc_es.stats`.
"""
import math

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


def layer_shares(net, g):
    """{layer name: |g_S|^2 / |g|^2}, each layer's share of the squared gradient norm."""
    g = np.asarray(g, np.float64)
    total = float(np.dot(g, g))
    return {name: float(np.dot(g[s], g[s])) / total if total > 0 else float("nan")
            for name, s in layer_slices(net).items()}


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


def expected_layer_rho(g_true, slices, n_pairs):
    """{name: the theory's rho between the S-part of ES's estimate from ``n_pairs`` antithetic
    pairs and that of ``g_true``} for each slice S of ``slices`` (module doc; our derivation)."""
    g = np.asarray(g_true, np.float64)
    total = float(np.dot(g, g))
    out = {}
    for name, s in slices.items():
        part = g[s]
        energy, size = float(np.dot(part, part)), part.size
        out[name] = math.sqrt(n_pairs * energy / (n_pairs * energy + size * total + energy)) if energy > 0 else 0.0
    return out


def expected_rho_smoothed(n_pairs, n_params, mean_sq_difference, smoothed_sq_norm):
    """Our theory of rho between ES's estimate from ``n_pairs`` antithetic pairs and the
    gradient g_s of the Gaussian-smoothed loss, at any sigma: with d = (f(theta + sigma eps)
    - f(theta - sigma eps)) / (2 sigma) a pair's reward difference, the estimate is the mean of
    d eps, E[d eps] = g_s and E|d eps|^2 ~ P E[d^2], so rho^2 = n / (n - 1 + P E[d^2] / |g_s|^2).
    On a locally linear loss E[d^2] = |g|^2 = |g_s|^2 and this is sqrt(n / (n + P - 1)) ~ the
    finite-difference theory; as sigma grows, the pairs' differences pick up curvature that
    adds to E[d^2] but not to |g_s|^2, and rho with g_s falls below that theory."""
    return math.sqrt(n_pairs / (n_pairs - 1.0 + n_params * mean_sq_difference / smoothed_sq_norm))


def smoothed_gradient(grad, theta, sigma, n_pairs, rng):
    """Estimate of the gradient of E[f(theta + sigma eps)] (eps ~ N(0, I)) as the mean over
    ``n_pairs`` antithetic pairs of (grad(theta + sigma eps) + grad(theta - sigma eps)) / 2;
    ``grad(point)`` returns f's exact gradient there, ``rng`` draws eps (a numpy Generator).

    Returns (estimate (float64), half_correlation, rho_with_truth): the Pearson correlation of
    the means of the first and second half of the pairs, and from it (Spearman-Brown) the
    expected correlation of the whole estimate with the true smoothed gradient,
    sqrt(2 r / (1 + r)), so a user sees how far the reference itself is off."""
    if n_pairs < 2:
        raise ValueError(f"n_pairs = {n_pairs}: expected at least 2 (two halves)")
    theta = np.asarray(theta)
    halves = [np.zeros(theta.size, np.float64), np.zeros(theta.size, np.float64)]
    point = np.empty_like(theta)
    for k in range(n_pairs):
        eps = rng.standard_normal(theta.size, dtype=np.float32).astype(theta.dtype, copy=False)
        acc = halves[0 if k < n_pairs // 2 else 1]
        for sign in (1.0, -1.0):
            np.multiply(eps, sign * sigma, out=point)
            point += theta
            acc += grad(point)
    first, second = halves[0] / (2 * (n_pairs // 2)), halves[1] / (2 * (n_pairs - n_pairs // 2))
    r = pearson(first, second)
    rho_truth = math.sqrt(max(2 * r / (1 + r), 0.0)) if r > -1 else 0.0
    return (halves[0] + halves[1]) / (2 * n_pairs), r, min(rho_truth, 1.0)


def proxy_gradient(g_true, rho, g_noise, out):
    """ES proxy: ``out = g_true + m * g_noise`` with m chosen for correlation ``rho`` (0 < rho <= 1).

    A negative rho (0 < |rho| <= 1; ours, for ``proxy.rho_from``: an ES run at large sigma measures
    rho < 0 at some iterations) gives ``out = -g_true + m * g_noise`` with m chosen for |rho|."""
    var_true = float(np.var(g_true, dtype=np.float64))
    var_noise = float(np.var(g_noise, dtype=np.float64))
    m = np.sqrt(var_true * (1.0 - rho ** 2) / (var_noise * rho ** 2)) if var_noise > 0 else 0.0
    np.multiply(g_noise, m, out=out)
    if rho < 0:
        out -= g_true
    else:
        out += g_true
    return out
