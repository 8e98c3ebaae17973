"""OpenAI-ES maths: sample a population, shape fitness, aggregate the gradient estimate.

References: Salimans, Ho, Chen, Sidor & Sutskever (2017), *Evolution Strategies as a Scalable
Alternative to Reinforcement Learning*; Zhang, Clune & Stanley (2017), Sec. 2 and 4.

Symbols (Zhang et al.):
  theta_t           parameters at iteration t                      ``theta``
  sigma             perturbation std, fixed at 0.002 (Sec. 4)       ``sigma``
  v_{t,i}           = sigma * eps_i, eps_i ~ N(0, I)               ``eps_i = table[offset_i : offset_i + P]``
  r_{t,i}           reward of pseudo-offspring i: -cross-entropy    ``rewards[i]``
  g_t^ES, Eq. (1)   1/(N sigma^2) sum_i v_i r_i = 1/(N sigma) sum_i eps_i r_i
  Eq. (2)           theta_{t+1} = theta_t + alpha g_t^ES (here: any optimizer fed -g_t^ES)

N counts pseudo-offspring; with antithetic ("mirrored") sampling they come in pairs
(+eps_k, -eps_k), offspring 2k and 2k+1. The paper never mentions mirrored sampling: it is our
inference (its measured rho of 3.9% at N = 10,000 equals sqrt(n / (n + P + 1)) only with
n = N/2 pairs; N independent perturbations would give 5.5%), and Salimans et al. (2017), whose
OpenAI-ES the paper studies, use mirrored sampling. Then Eq. (1) reduces to
g = 1/(N sigma) sum_k (f_{2k} - f_{2k+1}) eps_k, which is what :func:`perturbation_weights`
and :func:`hpc_es.kernels.aggregate_dense` compute. The fitness f is the raw reward (the
paper: MNIST has no rollout noise) or centred ranks in [-0.5, 0.5] (Salimans et al.).

First-order ES (ours: an instrument, not the paper's method). For an antithetic pair,
F(theta + sigma eps) - F(theta - sigma eps) = 2 sigma eps . grad F(theta) + O(sigma^3). Replacing
every offspring's reward by its first-order value, r_i = F(theta) + sign_i sigma eps_i . grad F
(:func:`first_order_rewards`, from the directional derivatives of :func:`directional_derivatives`),
and feeding them through the same fitness shaping and aggregation gives an estimate on the same
population (offsets, signs, buckets and 1/p weights, mini-batch) that differs from real ES only
by the higher-order terms; it costs one backward pass and K dot products of table windows with
the gradient instead of N forward passes. Without a noise table, the same estimator is the
"forward gradient" with n random directions of the literature (e.g. Baydin et al. 2022,
*Gradients without Backpropagation*; Nesterov & Spokoiny 2017 for the smoothing view). It needs
one gradient per data set the offspring are scored on, so it has no shortcut in no-mini-batch
mode (every pair has its own subset).

Randomness: iteration t draws its data from ``Generator(PCG64([seed, t, DATA_STREAM]))``
(shared with the SGD baseline, so ES, SGD and the proxy see the same mini-batches) and its
perturbations from ``Generator(PCG64([seed, t, NOISE_STREAM]))``. Every rank draws the same
arrays; no messages. Stream tags are nonzero because numpy's SeedSequence treats trailing
zeros as absent (``[s, t, 0]`` seeds the same stream as ``[s, t]``).
"""
from dataclasses import dataclass

import numpy as np

from hpc_es import kernels, limited, nets, noise

DATA_STREAM, NOISE_STREAM = 1, 2  # noise.TABLE_STREAM is 3
PROXY_STREAM, SELF_STREAM = 4, 5  # g_noise of the ES proxy; the two mini-batches of SGD self-correlation


def stream(seed, t, which):
    """The generator of iteration ``t`` for one purpose: a pure function of (seed, t, which)."""
    return np.random.Generator(np.random.PCG64([seed, t, which]))


def minibatch(seed, t, n_train, batch_size):
    """Indices (batch_size,) of iteration t's shared mini-batch, drawn without replacement."""
    return stream(seed, t, DATA_STREAM).choice(n_train, size=batch_size, replace=False)


def subsets(seed, t, count, n_train, batch_size):
    """``count`` independent random subsets (count, batch_size) of the training set, each
    without replacement: the no-mini-batch mode of Sec. 4.2."""
    rng = stream(seed, t, DATA_STREAM)
    idx = rng.integers(0, n_train, size=(count, batch_size))
    srt = np.sort(idx, axis=1)
    for row in np.nonzero((srt[:, 1:] == srt[:, :-1]).any(axis=1))[0]:
        idx[row] = rng.choice(n_train, size=batch_size, replace=False)
    return idx


@dataclass(frozen=True)
class Population:
    """The pseudo-offspring of one iteration.

    offsets (K,) int64   table offset of perturbation k (K = N/2 antithetic, else N)
    member  (N,) int64   perturbation used by offspring i
    sign    (N,) float32 +1 or -1: offspring i is theta + sign_i * sigma * eps_{member_i}
    batch   (B,) shared mini-batch indices, or (K, B) one subset per perturbation, or (N, B)
            one per pseudo-offspring (no-mini-batch mode, es.subset = "offspring")
    limited perturbation (:mod:`hpc_es.limited`) only, else None:
    start   (K,) int64   first parameter of perturbation k's bucket
    length  (K,) int64   its size: the perturbation is theta[start:start+length] += s sigma T[o:o+length]
    inv_p   (K,) float64 1 / the probability of drawing that bucket (the estimator's weight)
    """

    offsets: np.ndarray
    member: np.ndarray
    sign: np.ndarray
    batch: np.ndarray
    start: np.ndarray = None
    length: np.ndarray = None
    inv_p: np.ndarray = None

    @property
    def limited(self):
        return self.start is not None

    @property
    def size(self):
        return self.member.size

    def batch_of(self, i):
        """The data indices offspring i is evaluated on."""
        return self.batch if self.batch.ndim == 1 else self.batch[self.subset_of(i)]

    def subset_of(self, i):
        """The row of ``batch`` offspring i uses (no-mini-batch mode)."""
        return i if self.batch.shape[0] == self.size else self.member[i]


def antithetic_members(n):
    """(member (n,) int64, sign (n,) float32) of n offspring in antithetic pairs: offspring 2k
    and 2k+1 use perturbation k with signs +1 and -1."""
    member = np.arange(n, dtype=np.int64) // 2
    sign = np.where(np.arange(n) % 2 == 0, 1.0, -1.0).astype(np.float32)
    return member, sign


def sample_population(es_cfg, seed, t, n_params, table_size, n_train, batch_size, buckets=None):
    """Draw iteration t's population (identical on every rank). ``buckets`` (a
    :class:`hpc_es.limited.Buckets`) is required when ``es_cfg.perturbation == "limited"``."""
    n = es_cfg.n_offspring
    k = n // 2 if es_cfg.antithetic else n
    rng = stream(seed, t, NOISE_STREAM)
    bucket_fields = {}
    if es_cfg.perturbation == "limited":
        ids, offsets = limited.sample(rng, buckets, k, table_size, es_cfg.bucket_choice)
        inv_p = 1.0 / buckets.probabilities(es_cfg.bucket_choice)
        bucket_fields = dict(start=buckets.start[ids], length=buckets.size[ids], inv_p=inv_p[ids])
    else:
        offsets = noise.sample_offsets(rng, k, n_params, table_size)
    if es_cfg.antithetic:
        member, sign = antithetic_members(n)
    else:
        member = np.arange(n, dtype=np.int64)
        sign = np.ones(n, np.float32)
    if es_cfg.mode == "minibatch":
        batch = minibatch(seed, t, n_train, batch_size)
    elif es_cfg.subset == "offspring":  # the paper's words: a subset per pseudo-offspring
        batch = subsets(seed, t, n, n_train, batch_size)
    else:  # antithetic partners share their subset, so their difference isolates eps
        batch = subsets(seed, t, k, n_train, batch_size)
    return Population(offsets, member, sign, batch, **bucket_fields)


def evaluate(net, theta, table, pop, sigma, x, y, lo, hi, rewards, work, delta=None, based=False):
    """Rewards -loss(theta + sign_i sigma eps_i) of offspring lo..hi-1 into ``rewards`` (hi-lo,).

    ``work`` (P,) is scratch for the perturbed parameters; eps is read from the table in place.
    Limited perturbation: with a :class:`hpc_es.limited.DeltaEvaluator` as ``delta``, offspring
    are evaluated incrementally from theta's cached activations (once per shared mini-batch,
    or once per antithetic pair's subset in no-mini-batch mode); without, ``work`` holds theta
    and only the bucket is perturbed and restored per offspring. With one mini-batch for all
    offspring, the first layer's theta part is computed once (:class:`hpc_es.nets.SharedInput`).
    ``based``: the caller has already set ``delta``'s base for theta and the shared mini-batch
    (a node's ranks compute it together).
    """
    check_population(pop, theta.size, table.size)
    if hi <= lo:
        return
    if pop.limited:
        return _evaluate_limited(net, theta, table, pop, sigma, x, y, lo, hi, rewards, work, delta, based)
    if pop.batch.ndim == 1:
        shared = nets.SharedInput(net, theta, x[pop.batch], y[pop.batch])
        a, i = shared.rest, lo
        partner = np.empty_like(work) if hi - lo > 1 else None
        while i < hi:  # windows checked above
            m = pop.member[i]
            offset, scale = pop.offsets[m], pop.sign[i] * sigma
            if i + 1 < hi and pop.member[i + 1] == m and pop.sign[i + 1] == -pop.sign[i]:
                # an antithetic pair: both members' parameters in one pass over theta and eps
                kernels._perturb_pair(theta[a:], table, offset + a, scale, work[a:], partner[a:])
                rewards[i - lo] = -shared.loss(work, table, offset, scale)
                rewards[i + 1 - lo] = -shared.loss(partner, table, offset, -scale)
                i += 2
            else:
                kernels._perturb(theta[a:], table, offset + a, scale, work[a:])
                rewards[i - lo] = -shared.loss(work, table, offset, scale)
                i += 1
        return
    for i in range(lo, hi):
        kernels._perturb(theta, table, pop.offsets[pop.member[i]], pop.sign[i] * sigma, work)  # checked above
        b = pop.batch_of(i)
        rewards[i - lo] = -net.loss(work, x[b], y[b])


def _evaluate_limited(net, theta, table, pop, sigma, x, y, lo, hi, rewards, work, delta, based=False):
    shared_batch = pop.batch.ndim == 1
    if based and not (shared_batch and delta is not None):
        raise ValueError("based = True needs delta evaluation on a shared mini-batch")
    if delta is None:
        work[:] = theta
    elif getattr(delta, "batched", False):
        return _evaluate_limited_batched(theta, table, pop, sigma, x, y, lo, hi, rewards, delta, based)
    unset = based_on = object()  # the row of pop.batch (None: the shared batch) the cache is for
    if based:
        based_on = None
    for i in range(lo, hi):
        m = pop.member[i]
        start, length, offset = pop.start[m], pop.length[m], pop.offsets[m]
        scale = pop.sign[i] * sigma
        row = None if shared_batch else pop.subset_of(i)
        b = pop.batch if shared_batch else pop.batch[row]
        if delta is not None:
            if based_on is unset or (not shared_batch and based_on != row):
                delta.set_base(theta, x[b], y[b])
                based_on = row
            rewards[i - lo] = -delta.loss(start, length, table, offset, scale)
        else:
            seg = work[start:start + length]
            seg += scale * table[offset:offset + length]
            rewards[i - lo] = -net.loss(work, x[b], y[b])
            seg[:] = theta[start:start + length]


def _evaluate_limited_batched(theta, table, pop, sigma, x, y, lo, hi, rewards, delta, based=False):
    """Offspring lo..hi-1 by :func:`evaluate_limited_set`."""
    evaluate_limited_set(theta, table, pop, sigma, x, y, np.arange(lo, hi), rewards, delta, based)


def evaluate_limited_set(theta, table, pop, sigma, x, y, idx, rewards, delta, based=False):
    """Rewards of limited-perturbation offspring ``idx`` (any set, e.g. a rank's share from
    :func:`deal`) into ``rewards`` (idx.size,), by :meth:`hpc_es.limited.DeltaEvaluator.losses`:
    all at once on a shared mini-batch (``based``: its base already set), else one call per
    run of offspring on the same subset. Windows must have been checked (:func:`check_population`)."""
    m = pop.member[idx]
    starts, sizes, offsets = pop.start[m], pop.length[m], pop.offsets[m]
    scales = (pop.sign[idx] * np.float32(sigma)).astype(np.float32)
    antithetic = bool((pop.sign < 0).any())
    losses = np.empty(idx.size, np.float64)
    if pop.batch.ndim == 1:
        runs = [(0, idx.size, pop.batch)]
    else:
        rows = np.array([pop.subset_of(i) for i in idx])
        cut = np.flatnonzero(np.diff(rows)) + 1
        edges = np.concatenate([[0], cut, [idx.size]])
        runs = [(a, b, pop.batch[rows[a]]) for a, b in zip(edges[:-1], edges[1:])]
    for a, b, batch in runs:
        if not based:
            delta.set_base(theta, x[batch], y[batch])
        delta.losses(table, starts[a:b], sizes[a:b], offsets[a:b], scales[a:b], losses[a:b], antithetic)
    np.negative(losses, out=rewards[:idx.size])


def deal(cost, size, antithetic):
    """(counts (size,), order (N,)): the offspring of a population dealt to ``size`` ranks so that
    each gets an equal share of the costly ones: the perturbations sorted by ``cost`` (K,),
    highest first (ties by index), dealt to ranks 0, 1, .., size-1, size-1, .., 0, 0, 1, ..
    (snake order); a perturbation's offspring (both members of an antithetic pair) stay
    together. Rank r evaluates offspring ``order[sum(counts[:r]):][:counts[r]]``. The counts
    depend on K and ``size`` only; which offspring a rank gets changes no reward."""
    K = cost.size
    per = 2 if antithetic else 1
    ranked = np.argsort(-np.asarray(cost, np.float64), kind="stable")
    pos = np.arange(K)
    lap, seat = pos // size, pos % size
    rank = np.where(lap % 2 == 0, seat, size - 1 - seat)
    by_rank = np.argsort(rank, kind="stable")  # positions grouped by rank, in dealing order
    perturbations = ranked[by_rank]
    counts = per * np.bincount(rank, minlength=size).astype(np.int64)
    members = (per * perturbations[:, None] + np.arange(per)[None, :]).ravel()
    return counts, members


FITNESS = ("raw", "centered_ranks")
SUBSETS = ("pair", "offspring")  # no-mini-batch: one subset per antithetic pair (ours) or per offspring


def check_population(pop, n_params, table_size):
    """Raise a ValueError naming the first perturbation of ``pop`` whose table window leaves a
    table of ``table_size`` floats, or (limited perturbation) whose bucket leaves theta (P =
    ``n_params``): the kernels read the table unchecked. Vectorised: once per call."""
    if pop.limited:
        bad = np.flatnonzero((pop.start < 0) | (pop.start + pop.length > n_params))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"perturbation {k}: bucket [{pop.start[k]}, {pop.start[k] + pop.length[k]}) is outside "
                             f"theta of {n_params} parameters")
        kernels.check_windows(pop.offsets, pop.length, table_size)
    else:
        kernels.check_windows(pop.offsets, n_params, table_size)


def fitness(rewards, method):
    """Raw rewards (the paper) or centred ranks in [-0.5, 0.5] (Salimans et al. 2017)."""
    if method not in FITNESS:
        raise ValueError(f"fitness {method!r}: expected one of {FITNESS}")
    if method == "raw":
        return np.asarray(rewards, np.float64)
    ranks = np.empty(rewards.size, np.float64)
    ranks[np.argsort(rewards, kind="stable")] = np.arange(rewards.size)
    return ranks / max(rewards.size - 1, 1) - 0.5


def perturbation_sums(f, pop):
    """sum of sign_i f_i over the offspring i using perturbation k, for every k (K,)."""
    w = np.zeros(pop.offsets.size, np.float64)
    np.add.at(w, pop.member, pop.sign * f)
    return w


def perturbation_weights(f, pop, sigma):
    """w_k = 1/(N sigma) * sum of sign_i f_i over the offspring i using perturbation k (times
    1/p of its bucket under limited perturbation: the unbiased estimator of hpc_es.limited)."""
    w = perturbation_sums(f, pop) / (pop.size * sigma)
    return w * pop.inv_p if pop.limited else w


def gradient(table, pop, f, sigma, out, lo=0, hi=None):
    """g_ES of Eq. (1) (an ascent direction for the reward) into ``out`` (P,) float32.

    With ``lo``/``hi`` only ``out[lo:hi]`` is computed (sharded aggregation: each rank one
    contiguous slice, see :func:`hpc_es.comm.allgatherv`); every element is the same sum in
    the same order whatever the slice, so sharding does not change a single bit.
    """
    hi = out.size if hi is None else hi
    w = perturbation_weights(f, pop, sigma)
    if pop.limited:  # grouped by bucket, ties in perturbation order: one order on every rank
        order = np.argsort(pop.start, kind="stable")
        kernels.aggregate_sparse(table, pop.offsets[order], w[order], pop.start[order], pop.length[order],
                                 lo, out[lo:hi])
    else:
        aggregate(table, pop.offsets, w, out[lo:hi], lo)
    return out


def aggregate(table, offsets, weights, out, lo=0):
    """``out[j] = sum_k weights[k] table[offsets[k] + lo + j]`` by the dense kernel, perturbations
    sorted by table offset (stable) so that overlapping table windows are reused from cache."""
    order = np.argsort(offsets, kind="stable")
    kernels.aggregate_dense(table[lo:], offsets[order], weights[order], out)


def directional_derivatives(table, pop, g, lo, hi, out):
    """eps_k . g for perturbations k in [lo, hi) of ``pop`` into ``out`` (hi-lo,) float64: over
    the whole of theta (full perturbation) or over perturbation k's bucket (limited), g (P,)
    float32. Each value is the same sum in the same order whatever [lo, hi), so ranks that
    split the perturbations differently agree bit for bit."""
    if pop.limited:
        kernels.directional_sparse(table, pop.offsets[lo:hi], pop.start[lo:hi], pop.length[lo:hi], g, out)
    else:
        kernels.directional_dense(table, pop.offsets[lo:hi], g, out)
    return out


def first_order_rewards(reward0, derivatives, pop, sigma):
    """(N,) float64: r_i = reward0 + sign_i sigma d_{member_i}, the first-order value of offspring
    i's reward, where ``reward0`` is the reward of theta itself and ``derivatives`` (K,) the
    reward's directional derivatives eps_k . grad r (see the module docstring)."""
    return reward0 + pop.sign.astype(np.float64) * sigma * derivatives[pop.member]

