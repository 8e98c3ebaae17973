"""Limited-perturbation ES (Sec. 4.1 of Zhang et al. 2017): buckets, sampling, and incremental
("delta") evaluation of offspring that perturb one bucket.

Buckets. Every tensor of theta (a layer's weight or bias, see :attr:`hpc_es.nets.Net.layout`)
of S parameters is cut into ``ceil(S / B)`` contiguous buckets of near-equal size (sizes
differ by at most one, none exceeds B), so buckets never cross a tensor or layer boundary and
cover every parameter exactly once (our choice: the paper says only "buckets, each of which
contains a subset of up to 5,000 parameters"). ``tf_tutorial`` with B = 5,000 has 662 buckets (643 of
them in fc1's weight), ``small`` has 12.

Estimator. Perturbation k picks bucket b_k with probability p_b (uniform: 1/M, our reading of
the paper's "randomly chosen bucket"; or proportional to bucket size) and perturbs only its parameters:
theta + sign sigma E_b eps, with eps the table slice of length |b| and E_b placing it into
bucket b. For a bucket b, E_eps[f(theta + sigma E_b eps) E_b eps] / sigma is the gradient of
the Gaussian-smoothed f restricted to b's coordinates, so weighting each sample by 1/p_b,

    g = 1/(N sigma) sum_i sign_i f_i (1/p_{b_i}) E_{b_i} eps_{m_i},

has expectation sum_b p_b (1/p_b) grad_b f_sigma = grad f_sigma over all of theta: unbiased
for the same smoothed objective as full ES (raw fitness; exactly the gradient for a quadratic).
The 1/(N sigma) normalisation is Eq. (1)'s, so full and limited estimates are on one scale.

Correlation with the true gradient (ours; to first order in sigma, where an antithetic pair's
reward difference is 2 sigma eps . g). With n pairs, a pair's term is X = (eps . g_b) E_b eps
/ p_b for its bucket b (m_b parameters, eps ~ N(0, I)), so E[X] = g and, since
E[(eps . u)^2 |eps|^2] = (m + 2) |u|^2, E|X|^2 = sum_b (m_b + 2) |g_b|^2 / p_b. The mean of n
such terms then has

    rho = sqrt(n / (n - 1 + S)),   S = sum_b (m_b + 2) |g_b|^2 / (p_b |g|^2),

and restricted to bucket b's own coordinates rho_b = sqrt(n / (n - 1 + (m_b + 2) / p_b)),
whatever g_b is: the full-ES theory sqrt(n / (n + P + 1)) for the n p_b pairs the bucket gets
on average and its m_b parameters (one bucket of all P parameters gives exactly that theory).
With equal buckets and gradient energy in proportion to size, the uniform draw gives S = P +
2M (M buckets): limited ES with n pairs correlates like full ES with n pairs, at a fraction of
the evaluation cost; a size-proportional draw gives S = sum_b (1 + 2/m_b) P |g_b|^2/|g|^2.
Where the gradient's energy per parameter differs between buckets (a small conv bucket drawn
as often as a 5,000-parameter fc1 bucket under the uniform draw), the two draws differ. :func:`expected_correlation` evaluates both formulas for a given gradient;
``tests/test_limited.py`` checks them against measured correlations on the small net.

Delta evaluation. An offspring that perturbs a bucket in layer l leaves every activation
below l unchanged. :class:`DeltaEvaluator` caches, for theta and the mini-batch, each layer's
input (the im2col matrix for a conv) and its pre-bias GEMM output z; an offspring then costs
z' = z + input[:, rows] @ dW over the bucket's rows only, the layer's pooling / bias / ReLU,
and the full forward pass of the layers above l. For fc1 of tf_tutorial that is a
(50 x ~5) @ (~5 x 1024) product plus the tiny fc2 instead of the two convolutions.
"""
from dataclasses import dataclass

import numpy as np

from hpc_es import kernels
from hpc_es.layers import Buffers, Dense

CHOICES = ("uniform", "size")


@dataclass(frozen=True)
class Buckets:
    """A partition of theta: bucket m is ``theta[start[m] : start[m] + size[m]]`` in ``tensor[m]``."""

    start: np.ndarray
    size: np.ndarray
    tensor: np.ndarray

    @property
    def count(self):
        return self.start.size

    def probabilities(self, choice):
        """p_b of each bucket under ``choice`` ("uniform" or "size")."""
        if choice == "uniform":
            return np.full(self.count, 1.0 / self.count)
        if choice == "size":
            return self.size / self.size.sum()
        raise ValueError(f"bucket choice {choice!r}: expected one of {CHOICES}")


def partition(layout, max_size):
    """Buckets of at most ``max_size`` parameters over a net's ``layout`` (see module doc)."""
    if max_size < 1:
        raise ValueError(f"bucket size {max_size}: expected a positive integer")
    start, size, tensor = [], [], []
    for t, p in enumerate(layout):
        n = -(-p.size // max_size)
        edges = p.offset + (np.arange(n + 1) * p.size) // n
        start.extend(edges[:-1])
        size.extend(np.diff(edges))
        tensor.extend([t] * n)
    return Buckets(np.array(start, np.int64), np.array(size, np.int64), np.array(tensor, np.int64))


def sample(rng, buckets, count, table_size, choice):
    """(bucket ids, table offsets) of ``count`` limited perturbations, offsets uniform over the
    table positions where the chosen bucket's slice fits."""
    if buckets.size.max() > table_size:
        raise ValueError(f"noise table of {table_size} floats is shorter than a bucket of {buckets.size.max()}")
    if choice == "uniform":
        ids = rng.integers(0, buckets.count, size=count, dtype=np.int64)
    else:
        ids = rng.choice(buckets.count, size=count, p=buckets.probabilities(choice)).astype(np.int64)
    offsets = rng.integers(0, table_size - buckets.size[ids] + 1, dtype=np.int64)
    return ids, offsets


def expected_correlation(grad, buckets, choice, n_pairs):
    """(rho, rho per bucket) expected between the limited estimate from ``n_pairs`` antithetic
    pairs drawn with ``choice`` and the true gradient ``grad`` (P,), to first order in sigma
    (module doc). ``buckets`` must partition theta in order, as :func:`partition` does."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs = {n_pairs}: expected a positive integer")
    p, m = buckets.probabilities(choice), buckets.size.astype(np.float64)
    energy = np.add.reduceat(np.square(grad, dtype=np.float64), buckets.start)
    s = float(np.sum((m + 2.0) * energy / p) / energy.sum())
    return float(np.sqrt(n_pairs / (n_pairs - 1.0 + s))), np.sqrt(n_pairs / (n_pairs - 1.0 + (m + 2.0) / p))


BASE_BLOCK = 10  # images per block of the base pass (a conv's chunk is cut to it: every block computed alike)


def _rows(buf, batch, a, z):
    """A view of a layer's cache for images [a, z) of a batch of ``batch``."""
    out = {}
    for name, arr in vars(buf).items():
        if isinstance(arr, np.ndarray):
            per = arr.shape[0] // batch
            arr = arr[a * per:z * per]
        out[name] = arr
    return Buffers(**out)


class DeltaEvaluator:
    """Loss of theta + (a perturbation confined to one bucket) from cached activations of theta.

    Call :meth:`set_base` with theta and a batch, then :meth:`loss` per offspring. Equal to
    ``net.loss(perturbed theta, x, y)`` up to float rounding (tested on every tensor of both
    nets). theta must not change between :meth:`set_base` and the calls that use it.
    """

    def __init__(self, net, batched=True):
        self.net = net
        self.batched = batched  # es.evaluate calls :meth:`losses` (else :meth:`loss` per offspring)
        self._tensors = net.layout
        self._offsets = np.array([p.offset for p in net.layout], np.int64)
        self._key = None
        # the dense layer the fused kernel serves: the one below a dense output layer (fc1 of
        # tf_tutorial). The output layer's own buckets span hundreds of 10-wide rows, which BLAS
        # does better: they go by pairs like the convolutions.
        layers = net.layers
        self._fused = {i: layers[i] for i in range(max(0, len(layers) - 2), len(layers) - 1)
                       if all(isinstance(a, Dense) for a in layers[i:])}

    def set_base(self, theta, x, y, part=(0, 1)):
        """Cache every layer's input and pre-bias output for (theta, x, y); returns the base loss.

        The images go through the layers in blocks of :data:`BASE_BLOCK`, each block alike
        whoever computes it. With ``part`` = (k, n) only the k-th of n contiguous shares of the
        blocks is computed (and None returned): the ranks of a node each compute a share into a
        cache they share (:meth:`share_cache`), then wait for each other before using it; every
        call still sets this evaluator's theta, batch and labels."""
        net = self.net
        xs, scale, self.y = net.check_batch(theta, x, y)
        batch = xs.shape[0]
        key = (batch, theta.dtype.str)
        if key != self._key:
            self._allocate(*key)
        self.theta, self.views = theta, net.views(theta)
        last = len(net.layers) - 1
        w, b = self.views[last]
        if last - 1 in self._fused:  # the output layer, transposed for the batched path's dot products
            self._top = (np.ascontiguousarray(w.T), b, net.layers[last].relu)
        k, n = part
        blocks = -(-batch // BASE_BLOCK)
        for blk in range(blocks * k // n, blocks * (k + 1) // n):
            a, z = blk * BASE_BLOCK, min(batch, (blk + 1) * BASE_BLOCK)
            h = xs[a:z]
            for i, (layer, (w, b)) in enumerate(zip(net.layers, self.views)):
                h = layer.forward_cached(w, b, h.reshape((z - a,) + layer.in_shape), _rows(self.cache[i], batch, a, z),
                                         scale if i == 0 else 1.0)
        inputs = [xs] + [c.out for c in self.cache[:-1]]
        for layer, cache, h in zip(net.layers, self.cache, inputs):
            if isinstance(layer, Dense):  # its cache keeps its input: the whole batch's
                cache.x = h.reshape(batch, layer.n_in)
        return kernels.softmax_xent(self.cache[-1].out, self.y, self._no_grad) if n == 1 else None

    def share_cache(self, batch, dtype, alloc):
        """Hold the cache of a batch of ``batch`` (dtype ``dtype``) in memory from
        ``alloc(nbytes)`` (a uint8 array, e.g. a node's shared window: one copy per node),
        instead of this process's own. Returns the bytes used."""
        self._allocate(batch, dtype)
        arrays = [(c, name, a) for c in self.cache for name, a in vars(c).items() if isinstance(a, np.ndarray)]
        sizes = [-(-a.nbytes // 64) * 64 for _, _, a in arrays]
        memory = alloc(sum(sizes))
        at = 0
        for (c, name, a), size in zip(arrays, sizes):
            setattr(c, name, memory[at:at + a.nbytes].view(a.dtype).reshape(a.shape))
            at += size
        return at

    def loss(self, start, size, table, offset, scale):
        """Loss with ``theta[start:start+size] += scale * table[offset:offset+size]`` (one bucket)."""
        p = self._tensors[self._tensor_of(start, size)]
        i = p.layer
        w, b = self.views[i]
        h = self.net.layers[i].forward_delta(w, b, self.cache[i], self.delta[i], p.kind, start - p.offset,
                                             table[offset:offset + size], scale)
        for j in range(i + 1, len(self.net.layers)):
            above = self.net.layers[j]
            h = above.forward(*self.views[j], h.reshape((h.shape[0],) + above.in_shape), self.tail[j], 1.0)
        return kernels.softmax_xent(h, self.y, self._no_grad)

    def losses(self, table, starts, sizes, offsets, scales, out, antithetic=True):
        """:meth:`loss` of many offspring into ``out``: offspring k adds ``scales[k] *
        table[offsets[k]:offsets[k] + sizes[k]]`` at ``theta[starts[k]:]`` (one bucket).

        Buckets in a dense layer below a dense output layer (fc1 of tf_tutorial: 644 of its
        662 buckets) go to one numba call per tensor
        (:func:`hpc_es.kernels._dense_delta_losses`: an antithetic pair's change of the layer is
        formed once, then both members run to the loss without leaving the kernel); the others
        (convolutions, whose layers above cost a full forward pass, and the output layer) go pair by pair: the
        layer's change once (:meth:`~hpc_es.layers.ConvPoolReLU.forward_delta_pair`), the layers
        above on both members stacked (one GEMM of 2B rows per layer). With ``antithetic``, a
        member whose partner is not in the call (a pair split between ranks) is evaluated as
        the whole pair too, so each offspring's loss is computed by the same code whatever else
        is in the call and the rewards do not depend on how offspring are split over ranks.
        Against :meth:`loss` they differ only by the order of float32 sums (the dense layers'
        loops; BLAS on 2B rows instead of B), tested. Windows and buckets must have been
        checked (``es.check_population``)."""
        if not starts.size:
            return out
        tensor = np.searchsorted(self._offsets, starts, side="right") - 1
        for t in np.unique(tensor):
            ks = np.flatnonzero(tensor == t)
            p = self._tensors[t]
            fused = self._fused.get(p.layer)
            if fused is None:
                self._pairs(table, starts, sizes, offsets, scales, ks, antithetic, out)
                continue
            w, b = self.views[p.layer]
            cache = self.cache[p.layer]
            top_wt, top_b, top_relu = self._top
            res = np.empty(ks.size, np.float64)
            kernels._dense_delta_losses(
                cache.x, cache.z, b, fused.relu, top_wt, top_b, top_relu, self.y, table, p.kind == "w",
                starts[ks] - p.offset, sizes[ks], offsets[ks], scales[ks].astype(w.dtype), res,
                *self._fused_scratch(sizes[ks].max(), w.dtype))
            out[ks] = res
        return out

    # ---- internals ----------------------------------------------------------------------
    def _pairs(self, table, starts, sizes, offsets, scales, ks, antithetic, out):
        """Losses of offspring ``ks`` (all in one tensor below the top dense layers) into ``out``."""
        i, n = 0, ks.size
        while i < n:
            k = ks[i]
            partner = (i + 1 < n and ks[i + 1] == k + 1 and starts[k + 1] == starts[k] and
                       offsets[k + 1] == offsets[k] and scales[k + 1] == -scales[k])
            if not (partner or antithetic):
                out[k] = self.loss(starts[k], sizes[k], table, offsets[k], scales[k])
                i += 1
                continue
            plus, minus = self._pair_loss(starts[k], sizes[k], table, offsets[k], abs(scales[k]))
            if partner:
                out[k], out[k + 1] = (plus, minus) if scales[k] > 0 else (minus, plus)
                i += 2
            else:  # its partner is on another rank: the same computation, one half kept
                out[k] = plus if scales[k] > 0 else minus
                i += 1

    def _pair_loss(self, start, size, table, offset, scale):
        """(loss at +scale, loss at -scale) of one bucket: both members through the layers above at once."""
        p = self._tensors[self._tensor_of(start, size)]
        i = p.layer
        w, b = self.views[i]
        stack = self._stack[i]
        h = self.net.layers[i].forward_delta_pair(w, b, self.cache[i], self.delta[i], p.kind, start - p.offset,
                                                  table[offset:offset + size], scale, stack.out, stack.argmax)
        for j in range(i + 1, len(self.net.layers)):
            above = self.net.layers[j]
            h = above.forward(*self.views[j], h.reshape((h.shape[0],) + above.in_shape), self.tail2[j], 1.0)
        half = h.shape[0] // 2
        return (kernels.softmax_xent(h[:half], self.y, self._no_grad),
                kernels.softmax_xent(h[half:], self.y, self._no_grad))

    def _tensor_of(self, start, size):
        for t, p in enumerate(self._tensors):
            if p.offset <= start and start + size <= p.offset + p.size:
                return t
        raise ValueError(f"bucket [{start}, {start + size}) is not inside one tensor of {self.net.name}")

    def _allocate(self, batch, dtype):
        dtype = np.dtype(dtype)
        self.tail = [layer.buffers(batch, dtype, False) for layer in self.net.layers]
        self.cache, self.delta = zip(*(layer.delta_buffers(batch, dtype) for layer in self.net.layers))
        # an antithetic pair's outputs of each layer stacked (2B, ...), and the layers above on 2B
        self._stack = [layer.output_buffers(2 * batch, dtype) for layer in self.net.layers]
        self.tail2 = [layer.buffers(2 * batch, dtype, False) for layer in self.net.layers]
        self._no_grad = np.empty((0, self.net.layers[-1].n_out), dtype)
        self._key = (batch, dtype.str)
        self._scratch = None

    def _fused_scratch(self, longest, dtype):
        """(dz, h, logits, e) for :func:`hpc_es.kernels._dense_delta_losses`, kept between calls."""
        width = max(layer.n_out for layer in self._fused.values())
        if self._scratch is None or self._scratch[3].size < longest:
            n_out = self.net.layers[-1].n_out
            self._scratch = (np.empty(width, dtype), np.empty((2, width), dtype), np.empty((2, n_out), dtype),
                             np.empty(max(longest, 1), dtype))
        return self._scratch
