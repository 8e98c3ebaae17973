"""numba kernels: the CNN's non-GEMM work (im2col, col2im, pooling, activations, loss).

Every ``@njit`` of the package lives here. The kernels a user can call with their own arrays
(``perturb``, ``aggregate_dense``, ``aggregate_sparse``, ``directional_dense``,
``directional_sparse``) are plain-Python wrappers that check
shapes, dtypes and every table window, then call the unchecked ``@njit`` core (``_perturb``,
...), as stumpy does; package code that checked an iteration's windows once calls the core.
Kernels are pure: no globals, no I/O, no MPI, no random numbers; they write into preallocated ``out`` arrays and assume C-contiguous inputs
of one float dtype (float32 in production, float64 in the finite-difference tests). The
GEMMs themselves go to BLAS through ``numpy.matmul`` in :mod:`hpc_es.layers`.

Layout is NHWC throughout (as the TensorFlow tutorial the paper takes its network from),
so an im2col row is one output pixel and its columns run (kernel row, kernel col, channel),
which is exactly a TF ``(k, k, C_in, C_out)`` weight tensor reshaped to ``(k*k*C_in, C_out)``.
"""
import numpy as np
from numba import njit

# A safe fastmath set: reassociation and contraction (FMA) for vectorised loops, but no
# 'nnan'/'ninf', so NaN and inf still propagate and can be detected by the caller.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
NJIT = dict(cache=True, nogil=True, fastmath=FASTMATH)
# The perturbation kernels do without: an antithetic pair's parameters come from the pair kernel
# on one rank and from the single one on two ranks that split the pair, and with contraction
# allowed the two compiled to different FMA choices (0.5% of elements differed in the last bit).
NJIT_EXACT = dict(cache=True, nogil=True)


@njit(**NJIT)
def im2col_same(x, k, scale, out):
    """Patches of ``x`` (B, H, W, C) for a k x k 'SAME' stride-1 conv into ``out`` (B*H*W, k*k*C).

    Pixels outside the image are zero; every value is multiplied by ``scale`` (1/255 when
    ``x`` holds raw uint8 pixels, else 1). Every element of ``out`` is written.
    """
    B, H, W, C = x.shape
    pad = k // 2
    if C == 1:
        _im2col_one_channel(x, k, scale, out)
        return
    for b in range(B):
        for i in range(H):
            for j in range(W):
                row = (b * H + i) * W + j
                for di in range(k):
                    ii = i + di - pad
                    for dj in range(k):
                        jj = j + dj - pad
                        base = (di * k + dj) * C
                        if ii >= 0 and ii < H and jj >= 0 and jj < W:
                            for c in range(C):
                                out[row, base + c] = x[b, ii, jj, c] * scale
                        else:
                            for c in range(C):
                                out[row, base + c] = 0.0


@njit(**NJIT)
def _im2col_one_channel(x, k, scale, out):
    """:func:`im2col_same` for C = 1 (the input layer): each image is first copied, scaled, into
    a zero-padded frame, so every im2col element is a branch-free load (3x faster than testing
    each tap for the border; docs/RESULTS.md, "CNN speed against PyTorch")."""
    B, H, W, _ = x.shape
    pad = k // 2
    frame = np.zeros((H + 2 * pad, W + 2 * pad), out.dtype)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                frame[i + pad, j + pad] = x[b, i, j, 0] * scale
        for i in range(H):
            for j in range(W):
                row = (b * H + i) * W + j
                for di in range(k):
                    for dj in range(k):
                        out[row, di * k + dj] = frame[i + di, j + dj]


@njit(**NJIT)
def col2im_same(dcols, k, out):
    """Adjoint of :func:`im2col_same` (scale 1): sums ``dcols`` (B*H*W, k*k*C) into ``out`` (B, H, W, C)."""
    B, H, W, C = out.shape
    pad = k // 2
    out[...] = 0.0
    for b in range(B):
        for i in range(H):
            for j in range(W):
                row = (b * H + i) * W + j
                for di in range(k):
                    ii = i + di - pad
                    if ii < 0 or ii >= H:
                        continue
                    for dj in range(k):
                        jj = j + dj - pad
                        if jj < 0 or jj >= W:
                            continue
                        base = (di * k + dj) * C
                        for c in range(C):
                            out[b, ii, jj, c] += dcols[row, base + c]


@njit(inline="always", **NJIT)
def _max4(v0, v1, v2, v3):
    """(largest, which) of a 2x2 window in row-major order; NaN wins, as in np.maximum."""
    best, arg = v0, 0
    if v1 > best or v1 != v1:
        best, arg = v1, 1
    if v2 > best or v2 != v2:
        best, arg = v2, 2
    if v3 > best or v3 != v3:
        best, arg = v3, 3
    return best, arg


@njit(**NJIT)
def pool_bias_relu(z, bias, out, argmax):
    """``out = relu(maxpool2x2(z) + bias)`` for z (B, H, W, C), H and W even.

    Pooling before the bias and ReLU is exact (both are monotone and the bias is constant
    per channel) and touches 4x fewer elements. NaN propagates (a NaN in a window wins and
    survives the ReLU), so a broken offspring or input shows up as a NaN loss. ``argmax``
    (B, H/2, W/2, C) int8 records which of the four inputs won (0..3, row-major in the 2x2
    window) for the backward pass.
    """
    B, H, W, C = z.shape
    for b in range(B):
        for i in range(H // 2):
            for j in range(W // 2):
                for c in range(C):
                    best, arg = _max4(z[b, 2 * i, 2 * j, c], z[b, 2 * i, 2 * j + 1, c],
                                      z[b, 2 * i + 1, 2 * j, c], z[b, 2 * i + 1, 2 * j + 1, c])
                    best += bias[c]
                    out[b, i, j, c] = 0.0 if best <= 0.0 else best  # keeps NaN
                    argmax[b, i, j, c] = arg


@njit(**NJIT)
def pool_bias_relu_sum(z0, dz, scale, bias, out):
    """:func:`pool_bias_relu` of ``z0 + scale * dz`` (no argmax: forward only), formed as it is
    read: a first layer's output for a perturbed weight from its unperturbed part ``z0`` and
    its perturbation's part ``dz`` (see :class:`hpc_es.nets.SharedInput`)."""
    B, H, W, C = z0.shape
    for b in range(B):
        for i in range(H // 2):
            for j in range(W // 2):
                for c in range(C):
                    best, _ = _max4(z0[b, 2 * i, 2 * j, c] + scale * dz[b, 2 * i, 2 * j, c],
                                    z0[b, 2 * i, 2 * j + 1, c] + scale * dz[b, 2 * i, 2 * j + 1, c],
                                    z0[b, 2 * i + 1, 2 * j, c] + scale * dz[b, 2 * i + 1, 2 * j, c],
                                    z0[b, 2 * i + 1, 2 * j + 1, c] + scale * dz[b, 2 * i + 1, 2 * j + 1, c])
                    best += bias[c]
                    out[b, i, j, c] = 0.0 if best <= 0.0 else best


@njit(**NJIT)
def pool_bias_relu_backward(dout, out, argmax, dz, dbias):
    """Backward of :func:`pool_bias_relu`: writes every element of ``dz`` (B, H, W, C) and ``dbias`` (C,).

    The gradient reaches the winning input of each window where the output was positive.
    """
    B, H2, W2, C = dout.shape
    for c in range(C):
        dbias[c] = 0.0
    for b in range(B):
        for i in range(H2):
            for j in range(W2):
                for c in range(C):
                    g = dout[b, i, j, c] if out[b, i, j, c] > 0.0 else 0.0
                    dbias[c] += g
                    arg = argmax[b, i, j, c]
                    dz[b, 2 * i, 2 * j, c] = g if arg == 0 else 0.0
                    dz[b, 2 * i, 2 * j + 1, c] = g if arg == 1 else 0.0
                    dz[b, 2 * i + 1, 2 * j, c] = g if arg == 2 else 0.0
                    dz[b, 2 * i + 1, 2 * j + 1, c] = g if arg == 3 else 0.0


@njit(**NJIT)
def bias_act(z, bias, relu):
    """In place: ``z += bias`` per column of z (B, F), then ReLU if ``relu``."""
    B, F = z.shape
    for b in range(B):
        for f in range(F):
            v = z[b, f] + bias[f]
            if relu and v < 0.0:
                v = 0.0
            z[b, f] = v


@njit(**NJIT)
def relu_backward(dh, h, dbias):
    """In place: ``dh *= (h > 0)``; writes the column sums of the result into ``dbias``."""
    B, F = dh.shape
    for f in range(F):
        dbias[f] = 0.0
    for b in range(B):
        for f in range(F):
            if h[b, f] <= 0.0:
                dh[b, f] = 0.0
            dbias[f] += dh[b, f]


@njit(**NJIT)
def column_sums(d, out):
    """``out[f] = sum_b d[b, f]`` for d (B, F)."""
    B, F = d.shape
    for f in range(F):
        out[f] = 0.0
    for b in range(B):
        for f in range(F):
            out[f] += d[b, f]


@njit(**NJIT)
def softmax_xent(logits, labels, dlogits):
    """Mean softmax cross-entropy of logits (B, K) against int labels (B,), in float64.

    If ``dlogits`` has B rows it receives d(mean loss)/d(logits) = (softmax - onehot) / B;
    pass an empty (0, K) array to skip the gradient.
    """
    B, K = logits.shape
    want_grad = dlogits.shape[0] == B
    total = 0.0
    for b in range(B):
        m = logits[b, 0]
        for k in range(1, K):
            if logits[b, k] > m:
                m = logits[b, k]
        s = 0.0
        for k in range(K):
            s += np.exp(np.float64(logits[b, k]) - m)
        lse = m + np.log(s)
        total += lse - logits[b, labels[b]]
        if want_grad:
            for k in range(K):
                p = np.exp(np.float64(logits[b, k]) - lse)
                dlogits[b, k] = p / B
            dlogits[b, labels[b]] -= 1.0 / B
    return total / B


@njit(**NJIT)
def count_correct(logits, labels):
    """Number of rows of logits (B, K) whose first argmax equals the label."""
    B, K = logits.shape
    n = 0
    for b in range(B):
        best = 0
        for k in range(1, K):
            if logits[b, k] > logits[b, best]:
                best = k
        if best == labels[b]:
            n += 1
    return n


# ---- ES: perturbation and aggregation over the noise table ---------------------------------
# Table slices are taken as views (``table[o:o + m]``), never indexed as ``table[o + j]``: numba
# must allow a negative ``o + j`` there and compiles the loop to AVX gathers, 6x slower
# (measured: 3.9 vs 22.6 GFLOP/s multiply-adds on an L1-resident axpy).
@njit(**NJIT_EXACT)
def _perturb(theta, table, offset, scale, out):
    """:func:`perturb` without the checks (callers that checked every offset of an iteration)."""
    eps = table[offset:offset + theta.size]
    for j in range(theta.size):
        out[j] = theta[j] + scale * eps[j]


@njit(**NJIT_EXACT)
def _perturb_pair(theta, table, offset, scale, plus, minus):
    """:func:`_perturb` with ``scale`` into ``plus`` and ``-scale`` into ``minus`` (an antithetic
    pair) in one pass over theta and the table; each equals :func:`_perturb`'s result bit for
    bit (both compiled without fastmath: one rounded product, one rounded sum)."""
    eps = table[offset:offset + theta.size]
    neg = -scale
    for j in range(theta.size):
        plus[j] = theta[j] + scale * eps[j]
        minus[j] = theta[j] + neg * eps[j]


AGG_BLOCK = 1 << 20  # outputs per block of the dense aggregation (an 8 MiB float64 accumulator: L3)
AGG_FLUSH = 256  # perturbations summed in float32 before each float64 flush (dense)


@njit(inline="always", **NJIT)
def _axpy8(acc, table, offsets, weights, k, shift, m):
    """``acc[:m] += sum_{q<8} weights[k+q] * table[offsets[k+q] + shift :][:m]`` in float32
    products: eight table streams at once keep more memory requests in flight than one."""
    o = offsets[k:k + 8] + shift
    w0, w1, w2, w3 = (np.float32(weights[k]), np.float32(weights[k + 1]),
                      np.float32(weights[k + 2]), np.float32(weights[k + 3]))
    w4, w5, w6, w7 = (np.float32(weights[k + 4]), np.float32(weights[k + 5]),
                      np.float32(weights[k + 6]), np.float32(weights[k + 7]))
    t0, t1, t2, t3 = table[o[0]:o[0] + m], table[o[1]:o[1] + m], table[o[2]:o[2] + m], table[o[3]:o[3] + m]
    t4, t5, t6, t7 = table[o[4]:o[4] + m], table[o[5]:o[5] + m], table[o[6]:o[6] + m], table[o[7]:o[7] + m]
    for j in range(m):
        acc[j] += (((w0 * t0[j] + w1 * t1[j]) + (w2 * t2[j] + w3 * t3[j]))
                   + ((w4 * t4[j] + w5 * t5[j]) + (w6 * t6[j] + w7 * t7[j])))


@njit(inline="always", **NJIT)
def _axpy1(acc, table, offset, weight, m):
    w = np.float32(weight)
    t = table[offset:offset + m]
    for j in range(m):
        acc[j] += w * t[j]


@njit(**NJIT)
def _aggregate_dense(table, offsets, weights, out, block=AGG_BLOCK, flush=AGG_FLUSH):
    """:func:`aggregate_dense` without the checks.

    Pass ``offsets`` sorted ascending (and ``weights`` in the same order). Within a block of
    ``block`` outputs, consecutive perturbations then read overlapping table windows (a
    window starts ~L/K floats after the previous one but is ``block`` long), so each table
    float fetched from memory is reused ~K*block/L times from cache (40x for the paper's
    table, K = 10,000 and the default block). Eight perturbations are combined per pass in
    float32, passes are summed in a float32 partial for ``flush`` perturbations, and partials
    in a float64 accumulator. The order of every output's sum depends only on k, never on j,
    ``block`` or the slice computed, so sharded and replicated aggregation agree bit for bit.
    """
    n, K = out.size, offsets.size
    acc_all = np.empty(min(block, n), np.float64)
    part_all = np.empty(min(block, n), np.float32)
    for j0 in range(0, n, block):
        m = min(block, n - j0)
        acc, part = acc_all[:m], part_all[:m]
        acc[:] = 0.0
        k = 0
        while k < K:
            k_end = min(K, k + flush)
            part[:] = 0.0
            while k + 8 <= k_end:
                _axpy8(part, table, offsets, weights, k, j0, m)
                k += 8
            while k < k_end:
                _axpy1(part, table, offsets[k] + j0, weights[k], m)
                k += 1
            for j in range(m):
                acc[j] += part[j]
        for j in range(m):
            out[j0 + j] = acc[j]


@njit(**NJIT)
def _aggregate_sparse(table, offsets, weights, starts, sizes, lo, out):
    """Limited perturbation (:func:`aggregate_sparse` without the checks):
    ``out[j - lo] = sum_k weights[k] * table[offsets[k] + j - starts[k]]``
    over the perturbations k whose bucket ``[starts[k], starts[k] + sizes[k])`` holds j, for
    every j in ``[lo, lo + out.size)``; parameters no bucket of this iteration holds get 0.

    Pass the perturbations grouped by bucket (sorted by ``starts``, stable): a bucket's
    accumulator (at most ``max(sizes)`` values) then stays in L1 while its slices stream
    from memory eight at a time, each table float is read once, and each output is the same
    sum in the same order whatever ``lo`` (sharded and replicated agree bit for bit).
    """
    hi = lo + out.size
    out[:] = 0.0
    K = offsets.size
    acc_all = np.empty(sizes.max() if K else 0, np.float64)
    part_all = np.empty(sizes.max() if K else 0, np.float32)
    k = 0
    while k < K:
        start, size = starts[k], sizes[k]
        end = k
        while end < K and starts[end] == start:
            end += 1
        a, b = max(start, lo), min(start + size, hi)
        if a < b:
            m = b - a
            acc, part = acc_all[:m], part_all[:m]
            acc[:] = 0.0
            q = k
            while q < end:  # eight slices per pass, then the last (< 8) one by one
                part[:] = 0.0
                if q + 8 <= end:
                    _axpy8(part, table, offsets, weights, q, a - start, m)
                    q += 8
                else:
                    while q < end:
                        _axpy1(part, table, offsets[q] + a - start, weights[q], m)
                        q += 1
                for j in range(m):
                    acc[j] += part[j]
            dst = out[a - lo:b - lo]
            for j in range(m):
                dst[j] = acc[j]
        k = end


DIR_BLOCK = 1 << 20  # parameters per block of the dense directional derivatives (4 MiB of g: L3; fastest here)


@njit(inline="always", **NJIT)
def _dot8(table, offsets, k, g, shift, m, out):
    """``out[q] = sum_{j<m} table[offsets[k+q] + shift + j] * g[j]`` for q < 8, in float32:
    eight table streams against one window of g (the transpose of :func:`_axpy8`)."""
    o = offsets[k:k + 8] + shift
    t0, t1, t2, t3 = table[o[0]:o[0] + m], table[o[1]:o[1] + m], table[o[2]:o[2] + m], table[o[3]:o[3] + m]
    t4, t5, t6, t7 = table[o[4]:o[4] + m], table[o[5]:o[5] + m], table[o[6]:o[6] + m], table[o[7]:o[7] + m]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = np.float32(0.0)
    for j in range(m):
        gj = g[j]
        s0 += t0[j] * gj
        s1 += t1[j] * gj
        s2 += t2[j] * gj
        s3 += t3[j] * gj
        s4 += t4[j] * gj
        s5 += t5[j] * gj
        s6 += t6[j] * gj
        s7 += t7[j] * gj
    out[0], out[1], out[2], out[3] = s0, s1, s2, s3
    out[4], out[5], out[6], out[7] = s4, s5, s6, s7


@njit(**NJIT)
def _directional_dense(table, offsets, g, out, block=DIR_BLOCK):
    """:func:`directional_dense` without the checks.

    Pass ``offsets`` sorted ascending and a multiple of 8 of them (the caller pads with copies
    of the last): every derivative is then computed by the same eight-stream loop, whatever
    its position, so a perturbation's value does not depend on which others share its call
    (1, 2 or 3 ranks agree bit for bit). Per block of ``block`` parameters, consecutive
    perturbations read overlapping table windows while the block of g stays in cache; each
    block's float32 dot product is added to a float64 total.
    """
    n, K = g.size, offsets.size
    acc = np.zeros(K, np.float64)
    part = np.empty(8, np.float32)
    for j0 in range(0, n, block):
        m = min(block, n - j0)
        gb = g[j0:j0 + m]
        for k in range(0, K, 8):
            _dot8(table, offsets, k, gb, j0, m, part)
            for q in range(8):
                acc[k + q] += part[q]
    for k in range(K):
        out[k] = acc[k]


@njit(**NJIT)
def _directional_sparse(table, offsets, starts, sizes, g, out):
    """:func:`directional_sparse` without the checks: ``out[k] = sum_{j < sizes[k]}
    table[offsets[k] + j] * g[starts[k] + j]``, one float32 loop per perturbation (the same
    code for every k, so the value does not depend on the others in the call). Pass the
    perturbations grouped by bucket so a bucket's window of g stays in L1."""
    for k in range(offsets.size):
        m = sizes[k]
        t = table[offsets[k]:offsets[k] + m]
        gb = g[starts[k]:starts[k] + m]
        s = np.float32(0.0)
        for j in range(m):
            s += t[j] * gb[j]
        out[k] = s


# ---- batched delta evaluation of buckets in the dense layers (limited perturbation) ---------------
@njit(inline="always", **NJIT)
def _row_xent(logits, label):
    """Softmax cross-entropy of one row of logits against ``label``, in float64 (as softmax_xent)."""
    K = logits.size
    m = logits[0]
    for k in range(1, K):
        if logits[k] > m:
            m = logits[k]
    s = 0.0
    for k in range(K):
        s += np.exp(np.float64(logits[k]) - m)
    return m + np.log(s) - logits[label]


@njit(**NJIT)
def _dense_rows2(h, wt, b, relu, out):
    """``out[q] = act(h[q] @ wt.T + b)`` for the two rows of h (2, F), ``wt`` (K, F): float32 dot
    products four outputs at a time, each read of wt feeding both rows (the loop is bound by its
    loads); every output's sum runs in the same order whichever group it falls in."""
    K, F = wt.shape
    h0, h1 = h[0], h[1]
    j = 0
    while j < K:
        if j + 4 <= K:
            w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
            a0 = a1 = a2 = a3 = c0 = c1 = c2 = c3 = np.float32(0.0)
            for c in range(F):
                x0, x1 = h0[c], h1[c]
                a0 += w0[c] * x0
                a1 += w1[c] * x0
                a2 += w2[c] * x0
                a3 += w3[c] * x0
                c0 += w0[c] * x1
                c1 += w1[c] * x1
                c2 += w2[c] * x1
                c3 += w3[c] * x1
            out[0, j], out[0, j + 1], out[0, j + 2], out[0, j + 3] = a0, a1, a2, a3
            out[1, j], out[1, j + 1], out[1, j + 2], out[1, j + 3] = c0, c1, c2, c3
            j += 4
        else:
            w0 = wt[j]
            a0 = c0 = np.float32(0.0)
            for c in range(F):
                a0 += w0[c] * h0[c]
                c0 += w0[c] * h1[c]
            out[0, j], out[1, j] = a0, c0
            j += 1
    for q in range(2):
        for j in range(K):
            v = out[q, j] + b[j]
            if relu and v < 0.0:
                v = 0.0
            out[q, j] = v


@njit(**NJIT)
def _dense_delta_losses(x, z0, bias, relu, top_wt, top_b, top_relu, labels, table, is_weight,
                        starts, sizes, offsets, scales, out, dz, h, logits, e):
    """Loss of every offspring k whose perturbation ``scales[k] * table[offsets[k]:+sizes[k]]``
    is added at flat index ``starts[k]`` of one dense layer's weight (n_in, F) (``is_weight``)
    or bias (F,), from the layer's cached input ``x`` (B, n_in) and pre-bias output ``z0``
    (B, F); above it, the dense output layer given transposed (``top_wt`` (K, F), ``top_b`` (K,)).

    Per image, the layer's change dz = x[:, rows] @ dW (only the bucket's rows; zero inputs
    skipped) is formed once for an antithetic pair (consecutive offspring with the same bucket,
    offset and opposite scales: dW of the minus member is exactly -dW), then each member's
    output relu(z0 +- dz + b), the layer above, and the cross-entropy. The same arithmetic as
    the per-offspring path (``DeltaEvaluator.loss``: float32 values, float64 loss) except the
    order of the sums inside dz and the layer above (BLAS there, these loops here).
    Scratch: ``dz`` (>= F,), ``h`` (2, >= F), ``logits`` (2, K_out), ``e`` (>= sizes.max(),).
    """
    B, F = z0.shape
    n = offsets.size
    k = 0
    while k < n:
        s, o, st, m = scales[k], offsets[k], starts[k], sizes[k]
        pair = (k + 1 < n and offsets[k + 1] == o and starts[k + 1] == st and sizes[k + 1] == m
                and scales[k + 1] == -s)
        em = e[:m]
        t = table[o:o + m]
        for j in range(m):
            em[j] = t[j] * s
        r0 = st // F
        r1 = (st + m - 1) // F + 1
        total0 = 0.0
        total1 = 0.0
        for b in range(B):
            zb = z0[b]
            if is_weight:
                for c in range(F):
                    dz[c] = 0.0
                xb = x[b]
                for r in range(r0, r1):
                    xv = xb[r]
                    if xv != 0.0:
                        c0 = max(st - r * F, 0)
                        c1 = min(st + m - r * F, F)
                        er = em[r * F + c0 - st:r * F + c1 - st]
                        for c in range(c1 - c0):
                            dz[c0 + c] += xv * er[c]
            for q in range(2):  # a lone offspring's row 1 is its own copy: the same code either way
                hq = h[q]
                sg = np.float32(1.0) if q == 0 or not pair else np.float32(-1.0)  # times +-1: exact
                if is_weight:
                    for c in range(F):
                        v = (zb[c] + sg * dz[c]) + bias[c]
                        if relu and v < 0.0:
                            v = 0.0
                        hq[c] = v
                else:
                    for c in range(F):
                        hq[c] = bias[c]
                    for j in range(m):
                        hq[st + j] += sg * em[j]
                    for c in range(F):
                        v = zb[c] + hq[c]
                        if relu and v < 0.0:
                            v = 0.0
                        hq[c] = v
            _dense_rows2(h, top_wt, top_b, top_relu, logits)
            total0 += _row_xent(logits[0], labels[b])
            total1 += _row_xent(logits[1], labels[b])
        out[k] = total0 / B
        if pair:
            out[k + 1] = total1 / B
        k += 2 if pair else 1


# ---- validated wrappers (stumpy's style): the checks a caller can fail, then the kernel ---------
# numba does no bounds checks: an offset past the table would read other memory silently. The
# checks are vectorised min/max over the perturbations, once per call.
def perturb(theta, table, offset, scale, out):
    """``out = theta + scale * table[offset : offset + theta.size]``, reading the table in place.

    theta, out: (P,) C-contiguous, one float dtype; table: 1-D of that dtype; the slice must lie
    inside the table. A ValueError names what is wrong."""
    _check_vector("theta", theta)
    _check_vector("out", out, theta.dtype, theta.size)
    _check_vector("table", table, theta.dtype)
    check_windows(np.array([offset], np.int64), theta.size, table.size)
    _perturb(theta, table, offset, scale, out)


def aggregate_dense(table, offsets, weights, out, block=AGG_BLOCK, flush=AGG_FLUSH):
    """``out[j] = sum_k weights[k] * table[offsets[k] + j]`` for all j < out.size (Eq. (1)).

    table: 1-D float32; offsets (K,) integers with every window ``[offsets[k], offsets[k] +
    out.size)`` inside the table; weights (K,) floats; out: 1-D float32, C-contiguous. Pass
    ``offsets`` sorted ascending (and ``weights`` in the same order) for speed. Within a block of
    ``block`` outputs, consecutive perturbations then read overlapping table windows (a window
    starts ~L/K floats after the previous one but is ``block`` long), so each table float fetched
    from memory is reused ~K*block/L times from cache (40x for the paper's table, K = 10,000 and
    the default block). Eight perturbations are combined per pass in float32, passes are summed
    in a float32 partial for ``flush`` perturbations, and partials in a float64 accumulator. The
    order of every output's sum depends only on k, never on j, ``block`` or the slice computed,
    so sharded and replicated aggregation agree bit for bit. A ValueError names what is wrong
    (the first perturbation whose window leaves the table, a shape or dtype).
    """
    offsets, weights = _check_perturbations(offsets, weights)
    _check_vector("table", table, np.float32)
    _check_vector("out", out, np.float32)
    check_windows(offsets, out.size, table.size)
    _aggregate_dense(table, offsets, weights, out, block, flush)


def aggregate_sparse(table, offsets, weights, starts, sizes, lo, out):
    """Limited perturbation: ``out[j - lo] = sum_k weights[k] * table[offsets[k] + j - starts[k]]``
    over the perturbations k whose bucket ``[starts[k], starts[k] + sizes[k])`` holds j, for
    every j in ``[lo, lo + out.size)``; parameters no bucket of this iteration holds get 0.

    Pass the perturbations grouped by bucket (``starts`` non-decreasing, as a stable sort by
    start gives): a bucket's accumulator then stays in L1 while its slices stream from memory
    eight at a time, each table float is read once, and each output is the same sum in the
    same order whatever ``lo``. Every window ``[offsets[k], offsets[k] + sizes[k])`` must lie
    inside the table. A ValueError names the first offending perturbation.
    """
    offsets, weights = _check_perturbations(offsets, weights)
    starts, sizes = _check_buckets(offsets, starts, sizes)
    _check_vector("table", table, np.float32)
    _check_vector("out", out, np.float32)
    if offsets.size:
        bad = np.flatnonzero((starts < 0) | (sizes < 1))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"perturbation {k}: bucket start {starts[k]}, size {sizes[k]}: expected start >= 0 "
                             f"and size >= 1")
        back = np.flatnonzero(np.diff(starts) < 0)
        if back.size:
            k = int(back[0]) + 1
            raise ValueError(f"perturbation {k}: bucket start {starts[k]} after {starts[k - 1]}: pass the "
                             f"perturbations grouped by bucket (sorted by start)")
        check_windows(offsets, sizes, table.size)
    _aggregate_sparse(table, offsets, weights, starts, sizes, int(lo), out)


def directional_dense(table, offsets, g, out, block=DIR_BLOCK):
    """Directional derivatives of the dense perturbations: ``out[k] = sum_j table[offsets[k] + j]
    * g[j]`` over all j < g.size (eps_k . g, the transpose of :func:`aggregate_dense`).

    table, g: 1-D float32; offsets (K,) integers with every window inside the table; out (K,)
    float64. The offsets are sorted here (and the tail padded to a multiple of eight), so any
    order may be passed; each derivative is the same sum in the same order whatever the other
    offsets of the call. A ValueError names what is wrong.
    """
    offsets = _check_offsets(offsets)
    _check_vector("table", table, np.float32)
    _check_vector("g", g, np.float32)
    _check_vector("out", out, np.float64, offsets.size)
    check_windows(offsets, g.size, table.size)
    if not offsets.size:
        return
    order = np.argsort(offsets, kind="stable")
    padded = np.empty(-(-offsets.size // 8) * 8, np.int64)
    padded[:offsets.size] = offsets[order]
    padded[offsets.size:] = padded[offsets.size - 1]
    d = np.empty(padded.size, np.float64)
    _directional_dense(table, padded, g, d, block)
    out[order] = d[:offsets.size]


def directional_sparse(table, offsets, starts, sizes, g, out):
    """Directional derivatives under limited perturbation: ``out[k] = sum_{j < sizes[k]}
    table[offsets[k] + j] * g[starts[k] + j]`` (eps_k . g restricted to perturbation k's bucket,
    the transpose of :func:`aggregate_sparse`). Any order may be passed (grouped by bucket here);
    out (K,) float64. A ValueError names the first offending perturbation."""
    offsets = _check_offsets(offsets)
    starts, sizes = _check_buckets(offsets, starts, sizes)
    _check_vector("table", table, np.float32)
    _check_vector("g", g, np.float32)
    _check_vector("out", out, np.float64, offsets.size)
    if not offsets.size:
        return
    bad = np.flatnonzero((starts < 0) | (sizes < 1) | (starts + sizes > g.size))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"perturbation {k}: bucket [{starts[k]}, {starts[k] + sizes[k]}) is outside g of "
                         f"{g.size} parameters")
    check_windows(offsets, sizes, table.size)
    order = np.argsort(starts, kind="stable")
    d = np.empty(offsets.size, np.float64)
    _directional_sparse(table, offsets[order], starts[order], sizes[order], g, d)
    out[order] = d


def check_windows(offsets, lengths, table_size):
    """Raise a ValueError naming the first perturbation k whose table window ``[offsets[k],
    offsets[k] + lengths[k])`` (``lengths``: an array or one length) is not inside a table of
    ``table_size`` floats."""
    offsets = np.asarray(offsets)
    if not offsets.size:
        return
    ends = offsets + lengths
    if offsets.min() >= 0 and ends.max() <= table_size:
        return
    k = int(np.flatnonzero((offsets < 0) | (ends > table_size))[0])
    length = lengths if np.ndim(lengths) == 0 else lengths[k]
    raise ValueError(f"perturbation {k}: table window [{offsets[k]}, {offsets[k] + length}) is outside the noise "
                     f"table of {table_size} floats (is noise.size the size of the table in use?)")


def _check_offsets(offsets):
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise ValueError(f"offsets: expected a 1-D integer array, got {offsets.dtype} {offsets.shape}")
    return np.ascontiguousarray(offsets, np.int64)


def _check_buckets(offsets, starts, sizes):
    """(starts, sizes) as int64, one per perturbation of ``offsets``, or a ValueError."""
    starts = np.ascontiguousarray(starts, np.int64)
    sizes = np.ascontiguousarray(sizes, np.int64)
    if starts.shape != offsets.shape or sizes.shape != offsets.shape:
        raise ValueError(f"starts {starts.shape} and sizes {sizes.shape}: expected one per perturbation "
                         f"{offsets.shape}")
    return starts, sizes


def _check_perturbations(offsets, weights):
    offsets, weights = _check_offsets(offsets), np.asarray(weights)
    if weights.shape != offsets.shape or weights.dtype.kind != "f":
        raise ValueError(f"weights: expected floats of shape {offsets.shape} (one per offset), got "
                         f"{weights.dtype} {weights.shape}")
    return np.ascontiguousarray(offsets, np.int64), np.ascontiguousarray(weights)


def _check_vector(name, a, dtype=None, size=None):
    if not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous:
        raise ValueError(f"{name}: expected a 1-D C-contiguous numpy array, got "
                         f"{getattr(a, 'shape', type(a).__name__)}")
    if (dtype is not None and a.dtype != dtype) or a.dtype.kind != "f":
        raise ValueError(f"{name}: expected {np.dtype(dtype or np.float32)}, got {a.dtype}")
    if size is not None and a.size != size:
        raise ValueError(f"{name}: expected {size} elements, got {a.size}")


@njit(**NJIT)
def read_bandwidth_sum(x):
    """Sum of ``x`` (float32) in 16 float32 lanes: a streaming read for bandwidth measurement."""
    lanes = np.zeros(16, np.float32)
    n = x.size - x.size % 16
    for i in range(0, n, 16):
        v = x[i:i + 16]
        for q in range(16):
            lanes[q] += v[q]
    total = np.float64(lanes.sum())
    for i in range(n, x.size):
        total += x[i]
    return total
