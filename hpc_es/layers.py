"""The two layer kinds of the paper's CNNs, forward and exact backward, over preallocated buffers.

A layer owns no parameters: it receives views of its weight ``w`` and bias ``b`` (slices of
the flat theta) and, for the backward pass, views ``gw``/``gb`` of the flat gradient, so
gradients land in place with no packing step. Activations are kept in a per-batch-size
:class:`Buffers` object that the backward pass reads.

Incremental ("delta") evaluation, for limited perturbation (:mod:`hpc_es.limited`): a
layer's :meth:`forward_cached` keeps its input as its GEMM reads it (the im2col matrix of a
conv) and its pre-bias GEMM output z; :meth:`forward_delta` then gives the layer's output
with ``scale * eps`` added to a contiguous run of its weight (z + input[:, rows] @ dW over
the touched rows only) or its bias, without touching the cache.
"""
import numpy as np

from hpc_es import kernels

# Images per chunk of a convolution: im2col rows of about this many bytes (float32), about one
# core's L2. Swept on both nets, one thread, batch 50 (`benchmarks/cnn_phases.py --sweep-chunks`,
# docs/RESULTS.md "CNN speed against PyTorch"): at 1 MB tf_tutorial's forward+backward took
# 99 ms against 117 at 3 MB and 127 unchunked, the small net's 26 ms against 36 unchunked.
CHUNK_NBYTES = 1 << 20


class Buffers:
    """Named scratch arrays of one layer for one batch size and dtype (attribute access)."""

    def __init__(self, **arrays):
        self.__dict__.update(arrays)


class _DeltaForward:
    """forward_delta shared by both layer kinds; they supply ``_gemm_input`` and ``_finish``."""

    def delta_buffers(self, batch, dtype):
        """(cache, delta) scratch for :meth:`forward_cached` / :meth:`forward_delta`."""
        rows, n_in = self._gemm_shape(batch)
        cache = self._cache_buffers(batch, dtype)
        delta = Buffers(dw=np.empty(n_in * self.n_outputs, dtype), dz=np.empty((rows, self.n_outputs), dtype),
                        z=np.empty((rows, self.n_outputs), dtype), b=np.empty(self.n_outputs, dtype),
                        **self._output_buffers(batch, dtype))
        return cache, delta

    def output_buffers(self, batch, dtype):
        """``out`` (and for a conv ``argmax``, else None) for this layer's output on ``batch`` images."""
        return Buffers(**self._output_buffers(batch, dtype))

    def forward_delta(self, w, b, cache, delta, kind, start, eps, scale):
        """This layer's output (a ``delta`` buffer) for w, b with ``scale * eps`` added at
        ``start`` of the weight (``kind`` "w", flat index into w) or the bias ("b"), from the
        cache of :meth:`forward_cached` (left unchanged)."""
        size = eps.size
        if kind == "w":
            n_out = self.n_outputs
            r0, r1 = start // n_out, (start + size - 1) // n_out + 1
            dw = delta.dw[:(r1 - r0) * n_out]
            dw[:] = 0.0
            np.multiply(eps, scale, out=dw[start - r0 * n_out:start - r0 * n_out + size])
            np.matmul(self._gemm_input(cache)[:, r0:r1], dw.reshape(r1 - r0, n_out), out=delta.dz)
            np.add(cache.z, delta.dz, out=delta.z)
            z, bias = delta.z, b
        else:
            delta.b[:] = b
            delta.b[start:start + size] += scale * eps
            z, bias = cache.z, delta.b
        return self._finish(z, bias, delta.out, delta.argmax)

    def forward_delta_pair(self, w, b, cache, delta, kind, start, eps, scale, out, argmax):
        """:meth:`forward_delta` at ``+scale`` and ``-scale`` (an antithetic pair) into the two
        halves of ``out`` (2B, ...) (and of ``argmax`` (2B, ...) for a conv; None for a dense
        layer): the change of the GEMM output is formed once; the minus member's is its exact
        negation, so each half equals :meth:`forward_delta` of that member bit for bit."""
        size, half = eps.size, out.shape[0] // 2
        halves = ((out[:half], None if argmax is None else argmax[:half]),
                  (out[half:], None if argmax is None else argmax[half:]))
        if kind == "w":
            n_out = self.n_outputs
            r0, r1 = start // n_out, (start + size - 1) // n_out + 1
            dw = delta.dw[:(r1 - r0) * n_out]
            dw[:] = 0.0
            np.multiply(eps, scale, out=dw[start - r0 * n_out:start - r0 * n_out + size])
            np.matmul(self._gemm_input(cache)[:, r0:r1], dw.reshape(r1 - r0, n_out), out=delta.dz)
            np.add(cache.z, delta.dz, out=delta.z)
            self._finish(delta.z, b, *halves[0])
            np.subtract(cache.z, delta.dz, out=delta.z)
            self._finish(delta.z, b, *halves[1])
            return out
        step = scale * eps
        for sign, (o, a) in zip((1, -1), halves):
            delta.b[:] = b
            if sign > 0:
                delta.b[start:start + size] += step
            else:
                delta.b[start:start + size] -= step
            self._finish(cache.z, delta.b, o, a)
        return out


class ConvPoolReLU(_DeltaForward):
    """k x k 'SAME' convolution (stride 1) -> 2x2 max-pool -> + bias -> ReLU, NHWC.

    Weights are ``(k, k, c_in, c_out)`` as in TensorFlow, bias ``(c_out,)``. Pooling comes
    before bias and ReLU, which is exactly the same function as conv+bias -> ReLU -> pool.
    """

    def __init__(self, name, height, width, c_in, c_out, k=5):
        if height % 2 or width % 2:
            raise ValueError(f"{name}: 2x2 pooling needs even height and width, got {height}x{width}")
        self.name, self.height, self.width = name, height, width
        self.c_in, self.c_out, self.k = c_in, c_out, k
        self.in_shape = (height, width, c_in)
        self.out_shape = (height // 2, width // 2, c_out)
        self.param_shapes = (("w", (k, k, c_in, c_out)), ("b", (c_out,)))
        self.chunk = self.chunk_for(CHUNK_NBYTES)

    def chunk_for(self, nbytes):
        """Images per chunk whose float32 im2col rows take about ``nbytes`` (at least one)."""
        return max(1, int(nbytes) // (4 * self.height * self.width * self.k * self.k * self.c_in))

    def flops(self, batch):
        """Multiply-adds x 2 of the convolution GEMM for ``batch`` images."""
        return 2 * batch * self.height * self.width * self.k * self.k * self.c_in * self.c_out

    def buffers(self, batch, dtype, backward):
        rows, cols = batch * self.height * self.width, self.k * self.k * self.c_in
        buf = Buffers(
            cols=np.empty((rows, cols), dtype),
            z=np.empty((rows, self.c_out), dtype),
            out=np.empty((batch,) + self.out_shape, dtype),
            argmax=np.empty((batch,) + self.out_shape, np.int8),
        )
        if backward:  # chunk-sized: the backward pass works chunk by chunk
            chunk_rows = min(batch, self.chunk) * self.height * self.width
            buf.dz = np.empty((chunk_rows, self.c_out), dtype)
            buf.dcols = np.empty((chunk_rows, cols), dtype)
            buf.dx = np.empty((batch,) + self.in_shape, dtype)
            buf.gw, buf.gb = np.empty((cols, self.c_out), dtype), np.empty(self.c_out, dtype)
        return buf

    def forward(self, w, b, x, buf, scale=1.0):
        """x (B, H, W, C_in) -> buf.out (B, H/2, W/2, C_out); ``scale`` multiplies x first.

        In chunks of :attr:`chunk` images: each chunk's im2col rows are still in cache when
        its GEMM reads them (the whole batch's would not be: 31 MB for conv2 of tf_tutorial).
        """
        w2 = w.reshape(-1, self.c_out)
        for lo, hi, rows in self._chunks(x.shape[0]):
            cols = buf.cols[rows]
            kernels.im2col_same(x[lo:hi], self.k, scale, cols)
            np.matmul(cols, w2, out=buf.z[rows])
            z4 = buf.z[rows].reshape((hi - lo, self.height, self.width, self.c_out))
            kernels.pool_bias_relu(z4, b, buf.out[lo:hi], buf.argmax[lo:hi])
        return buf.out

    def _chunks(self, batch):
        """(first image, end image, row slice of the im2col matrix) of each chunk of a batch."""
        hw = self.height * self.width
        for lo in range(0, batch, self.chunk):
            hi = min(batch, lo + self.chunk)
            yield lo, hi, slice(lo * hw, hi * hw)

    def forward_cached(self, w, b, x, cache, scale=1.0):
        """:meth:`forward` into the cache of :meth:`delta_buffers` (its im2col matrix and z are kept)."""
        return self.forward(w, b, x, cache, scale)

    @property
    def n_outputs(self):
        return self.c_out

    def _gemm_shape(self, batch):
        return batch * self.height * self.width, self.k ** 2 * self.c_in

    def _cache_buffers(self, batch, dtype):
        return self.buffers(batch, dtype, False)

    def _output_buffers(self, batch, dtype):
        return {"out": np.empty((batch,) + self.out_shape, dtype),
                "argmax": np.empty((batch,) + self.out_shape, np.int8)}

    @staticmethod
    def _gemm_input(cache):
        return cache.cols

    def _finish(self, z, bias, out, argmax):
        z4 = z.reshape((-1, self.height, self.width, self.c_out))
        kernels.pool_bias_relu(z4, bias, out, argmax)
        return out

    def backward(self, w, gw, gb, dout, buf, need_dx):
        """Writes gw, gb from dout (B, H/2, W/2, C_out); returns dL/dx (a buffer) or None.

        In the forward pass's chunks, so dz and dL/dcols of a chunk stay in cache between the
        pooling backward, the two GEMMs and col2im; gw and gb are summed over the chunks.
        """
        w2, gw2 = w.reshape(-1, self.c_out), gw.reshape(-1, self.c_out)
        for lo, hi, rows in self._chunks(dout.shape[0]):
            n = hi - lo
            dz = buf.dz[:n * self.height * self.width]
            dz4 = dz.reshape((n, self.height, self.width, self.c_out))
            first = lo == 0
            kernels.pool_bias_relu_backward(dout[lo:hi], buf.out[lo:hi], buf.argmax[lo:hi], dz4,
                                            gb if first else buf.gb)
            np.matmul(buf.cols[rows].T, dz, out=gw2 if first else buf.gw)
            if not first:
                gb += buf.gb
                gw2 += buf.gw
            if need_dx:
                dcols = buf.dcols[:dz.shape[0]]
                np.matmul(dz, w2.T, out=dcols)
                kernels.col2im_same(dcols, self.k, buf.dx[lo:hi])
        return buf.dx if need_dx else None


class Dense(_DeltaForward):
    """Fully connected layer ``x @ w + b`` (w is ``(n_in, n_out)``), optionally followed by ReLU."""

    def __init__(self, name, n_in, n_out, relu):
        self.name, self.n_in, self.n_out, self.relu = name, n_in, n_out, relu
        self.in_shape, self.out_shape = (n_in,), (n_out,)
        self.param_shapes = (("w", (n_in, n_out)), ("b", (n_out,)))

    def flops(self, batch):
        return 2 * batch * self.n_in * self.n_out

    def buffers(self, batch, dtype, backward):
        buf = Buffers(out=np.empty((batch, self.n_out), dtype), x=None)
        if backward:
            buf.dx = np.empty((batch, self.n_in), dtype)
        return buf

    def forward(self, w, b, x, buf, scale=1.0):
        """x (B, n_in) -> buf.out (B, n_out). Keeps a reference to x for the backward pass."""
        if scale != 1.0:
            raise ValueError(f"{self.name}: raw-pixel scaling is only supported in a first conv layer")
        buf.x = x
        np.matmul(x, w, out=buf.out)
        kernels.bias_act(buf.out, b, self.relu)
        return buf.out

    def forward_cached(self, w, b, x, cache, scale=1.0):
        """:meth:`forward` into the cache of :meth:`delta_buffers`, keeping x and the pre-bias x @ w."""
        cache.x = x
        np.matmul(x, w, out=cache.z)
        cache.out[:] = cache.z
        kernels.bias_act(cache.out, b, self.relu)
        return cache.out

    @property
    def n_outputs(self):
        return self.n_out

    def _gemm_shape(self, batch):
        return batch, self.n_in

    def _cache_buffers(self, batch, dtype):
        return Buffers(x=None, z=np.empty((batch, self.n_out), dtype), out=np.empty((batch, self.n_out), dtype))

    def _output_buffers(self, batch, dtype):
        return {"out": np.empty((batch, self.n_out), dtype), "argmax": None}

    @staticmethod
    def _gemm_input(cache):
        return cache.x

    def _finish(self, z, bias, out, argmax=None):
        out[:] = z
        kernels.bias_act(out, bias, self.relu)
        return out

    def backward(self, w, gw, gb, dout, buf, need_dx):
        """Writes gw, gb from dout (B, n_out), which it may overwrite; returns dL/dx or None."""
        if self.relu:
            kernels.relu_backward(dout, buf.out, gb)
        else:
            kernels.column_sums(dout, gb)
        np.matmul(buf.x.T, dout, out=gw)
        if not need_dx:
            return None
        np.matmul(dout, w.T, out=buf.dx)
        return buf.dx
