"""The paper's two CNNs over one flat parameter vector ``theta``.

The paper says its convolutional layers have "32 and 64 kernels ... (both with stride of 5)".
We read that as 5x5 kernels with stride 1 and 'SAME' padding, as in the TensorFlow tutorial it
cites: the only reading that gives its 3,274,634 parameters (with stride 5 the first dense
layer would be far smaller); the small net's 28,938 follow from the same reading (our
interpretation, not the paper's words).

``tf_tutorial`` (Sec. 4; the TensorFlow "Deep MNIST" tutorial net), 3,274,634 parameters::

    conv5x5 1->32, pool, ReLU | conv5x5 32->64, pool, ReLU | fc 3136->1024, ReLU | fc 1024->10

``small`` (Sec. 4.3, the 99% net), 28,938 parameters::

    conv5x5 1->16, pool, ReLU | conv5x5 16->32, pool, ReLU | fc 1568->10

Layout of theta: layers in order, each layer's weight then its bias, each C-ordered in
TensorFlow's shapes (conv ``(5, 5, C_in, C_out)``, dense ``(n_in, n_out)``). The flatten
before the first dense layer is NHWC order (row, col, channel). ``Net.layout`` lists every
slice with its offset and :meth:`Net.locate` maps an index of theta to (tensor, position).

Images enter as (B, 28, 28) or (B, 28, 28, 1), either raw uint8 (scaled by 1/255 on the fly,
so a rank keeps the data set in 47 MB of uint8) or float already in [0, 1].
"""
import bisect
from dataclasses import dataclass

import numpy as np

from hpc_es import kernels
from hpc_es.layers import ConvPoolReLU, Dense

INIT_SCHEMES = ("tf", "he")
IMAGE_SHAPE = (28, 28, 1)
N_CLASSES = 10


@dataclass(frozen=True)
class ParamInfo:
    """One tensor of theta: ``theta[offset:offset+size].reshape(shape)``."""

    name: str
    layer: int
    kind: str  # "w" or "b"
    shape: tuple
    offset: int
    size: int


class Net:
    """A feed-forward CNN over a flat theta. Not thread-safe: it reuses scratch buffers."""

    def __init__(self, name, layers):
        self.name = name
        self.layers = list(layers)
        layout, offset = [], 0
        for i, layer in enumerate(self.layers):
            for kind, shape in layer.param_shapes:
                size = int(np.prod(shape))
                layout.append(ParamInfo(f"{layer.name}.{kind}", i, kind, shape, offset, size))
                offset += size
        self.layout = tuple(layout)
        self.n_params = offset
        self._offsets = [p.offset for p in layout]
        self._buffers = {}
        self.forward_chunk = _forward_chunk(self.layers)

    # ---- parameters -------------------------------------------------------------------
    def init_theta(self, seed=0, scheme="tf", dtype=np.float32):
        """A fresh theta (n_params,).

        ``tf``: weights from a normal of std 0.1 truncated at 2 std (redrawn), biases 0.1, as
        the TensorFlow tutorial. ``he``: weights normal with std sqrt(2 / fan_in), biases 0.
        """
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"init scheme {scheme!r}: expected one of {INIT_SCHEMES}")
        rng = np.random.default_rng(seed)
        theta = np.empty(self.n_params, dtype)
        for p in self.layout:
            view = theta[p.offset:p.offset + p.size]
            if p.kind == "b":
                view[:] = 0.1 if scheme == "tf" else 0.0
            elif scheme == "tf":
                view[:] = _truncated_normal(rng, p.size, 0.1)
            else:
                fan_in = int(np.prod(p.shape[:-1]))
                view[:] = rng.standard_normal(p.size) * np.sqrt(2.0 / fan_in)
        return theta

    def views(self, theta):
        """[(w, b), ...] per layer: views of theta (or of a gradient laid out like it)."""
        self._check_theta(theta)
        out = []
        for i in range(0, len(self.layout), 2):
            pw, pb = self.layout[i], self.layout[i + 1]
            out.append((theta[pw.offset:pw.offset + pw.size].reshape(pw.shape),
                        theta[pb.offset:pb.offset + pb.size]))
        return out

    def locate(self, index):
        """(tensor name, position tuple) of ``theta[index]``."""
        if not 0 <= index < self.n_params:
            raise IndexError(f"index {index} outside theta of {self.n_params} parameters")
        p = self.layout[bisect.bisect_right(self._offsets, index) - 1]
        return p.name, tuple(int(v) for v in np.unravel_index(index - p.offset, p.shape))

    def weight_slices(self):
        """Slices of theta that hold weights (the tensors the L2 term penalises)."""
        return [slice(p.offset, p.offset + p.size) for p in self.layout if p.kind == "w"]

    def flops_per_image(self, backward=False):
        """GEMM flops per image (2 per multiply-add) of a forward pass, or forward + backward.

        The backward pass repeats each layer's GEMM twice (dW and dx) except dx of the first
        layer, which is not needed.
        """
        forward = sum(layer.flops(1) for layer in self.layers)
        return 3 * forward - self.layers[0].flops(1) if backward else forward

    # ---- evaluation --------------------------------------------------------------------
    def logits(self, theta, x):
        """Logits (B, 10) of images x; a buffer reused by the next call (copy to keep)."""
        self._check_theta(theta)
        x, scale = self._prepare(x)
        return self._forward(theta, x, scale, backward=False)

    def loss(self, theta, x, y, l2=0.0):
        """Mean softmax cross-entropy on (x, y) + ``l2``/2 * sum of squared weights (float).

        Evaluated in near-equal chunks of at most :attr:`forward_chunk` images when the net
        has one (see :func:`_forward_chunk`): the ES hot path.
        """
        xs, scale, y = self.check_batch(theta, x, y)
        batch = xs.shape[0]
        total = 0.0
        for lo, hi in self.chunks(batch):
            logits = self._forward(theta, xs[lo:hi], scale, backward=False)
            empty = np.empty((0, N_CLASSES), logits.dtype)
            total += kernels.softmax_xent(logits, y[lo:hi], empty) * (hi - lo)
        return total / batch + self._l2_loss(theta, l2)

    def chunks(self, batch):
        """(first, end) images of the near-equal chunks a forward-only pass of ``batch`` images
        runs in (one chunk when the net has no :attr:`forward_chunk`)."""
        n_chunks = -(-batch // self.forward_chunk) if self.forward_chunk else 1
        return [(i * batch // n_chunks, (i + 1) * batch // n_chunks) for i in range(n_chunks)]

    def loss_and_grad(self, theta, x, y, l2=0.0, out=None):
        """(loss, exact gradient (n_params,) like theta); ``out`` receives the gradient if given."""
        xs, scale, y = self.check_batch(theta, x, y)
        grad = np.empty_like(theta) if out is None else out
        if grad.shape != theta.shape or grad.dtype != theta.dtype or not grad.flags.c_contiguous:
            raise ValueError(f"out: expected a C-contiguous {theta.dtype} array of shape {theta.shape}")
        logits = self._forward(theta, xs, scale, backward=True)
        bufs = self._buffers[(xs.shape[0], theta.dtype.str, True)]
        dlogits = bufs[-1].dlogits
        loss = kernels.softmax_xent(logits, y, dlogits)
        params, grads = self.views(theta), self.views(grad)
        d = dlogits
        for i in range(len(self.layers) - 1, -1, -1):
            layer = self.layers[i]
            d = d.reshape((d.shape[0],) + layer.out_shape)
            d = layer.backward(params[i][0], grads[i][0], grads[i][1], d, bufs[i], need_dx=i > 0)
        self.add_l2_grad(theta, l2, grad)
        return loss + self._l2_loss(theta, l2), grad

    def add_l2_grad(self, theta, l2, grad, lo=0, hi=None):
        """grad += the gradient of ``l2``/2 * sum of squared weights (biases are not penalised),
        on parameters [lo, hi) only (default all: a sharded update adds it to its slice)."""
        hi = self.n_params if hi is None else hi
        if l2:
            for s in self.weight_slices():
                a, b = max(s.start, lo), min(s.stop, hi)
                if a < b:
                    grad[a:b] += l2 * theta[a:b]
        return grad

    def grad(self, theta, x, y, l2=0.0, out=None):
        """Exact gradient of :meth:`loss` with respect to theta."""
        return self.loss_and_grad(theta, x, y, l2, out)[1]

    def n_correct(self, theta, x, y, chunk=100):
        """Number of images in (x, y) classified correctly, evaluated ``chunk`` images at a time."""
        self._check_theta(theta)
        y = self._check_labels(y, x.shape[0])
        if chunk < 1:
            raise ValueError(f"chunk={chunk}: expected a positive integer")
        correct = 0
        chunk = min(chunk, self.forward_chunk or chunk)
        for start in range(0, x.shape[0], chunk):
            logits = self.logits(theta, x[start:start + chunk])
            correct += kernels.count_correct(logits, y[start:start + chunk])
        return correct

    def accuracy(self, theta, x, y, chunk=100):
        """Fraction of (x, y) classified correctly (e.g. the whole 10,000-image test set)."""
        return self.n_correct(theta, x, y, chunk) / x.shape[0]

    def check_batch(self, theta, x, y):
        """(images, pixel scale, int64 labels) for a loss on (x, y) at theta, after the checks
        every evaluation makes; a ValueError names what is wrong. For evaluators built on this
        net (e.g. :class:`hpc_es.limited.DeltaEvaluator`)."""
        self._check_theta(theta)
        xs, scale = self._prepare(x)
        return xs, scale, self._check_labels(y, xs.shape[0])

    # ---- internals ----------------------------------------------------------------------
    def _forward(self, theta, x, scale, backward, start=0):
        """Logits from ``x``, the input of layer ``start`` (the images when 0)."""
        bufs = self._get_buffers(x.shape[0], theta.dtype, backward)
        h = x
        for i, (layer, (w, b)) in enumerate(zip(self.layers, self.views(theta))):
            if i >= start:
                h = layer.forward(w, b, h.reshape((h.shape[0],) + layer.in_shape), bufs[i],
                                  scale if i == 0 else 1.0)
        return h

    def _get_buffers(self, batch, dtype, backward):
        key = (batch, np.dtype(dtype).str, backward)
        bufs = self._buffers.get(key)
        if bufs is None:
            if len(self._buffers) >= 6:  # e.g. train batch, eval chunk, forward chunks, remainders
                self._buffers.pop(next(iter(self._buffers)))
            bufs = [layer.buffers(batch, dtype, backward) for layer in self.layers]
            if backward:
                bufs[-1].dlogits = np.empty((batch, N_CLASSES), dtype)
            self._buffers[key] = bufs
        return bufs

    def _check_theta(self, theta):
        if not isinstance(theta, np.ndarray) or theta.shape != (self.n_params,):
            got = getattr(theta, "shape", type(theta).__name__)
            raise ValueError(f"{self.name}: theta must have shape ({self.n_params},), got {got}")
        if theta.dtype not in (np.float32, np.float64) or not theta.flags.c_contiguous:
            raise ValueError(f"{self.name}: theta must be C-contiguous float32 or float64, "
                             f"got {theta.dtype}")

    @staticmethod
    def _prepare(x):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x.reshape(x.shape + (1,))
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or x.shape[0] == 0:
            raise ValueError(f"images must have shape (B, 28, 28) or (B, 28, 28, 1) with B >= 1, "
                             f"got {np.shape(x)}")
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x), 1.0 / 255.0
        if x.dtype in (np.float32, np.float64):
            return np.ascontiguousarray(x), 1.0
        raise ValueError(f"images must be uint8 pixels or float32/float64 in [0, 1], got {x.dtype}")

    @staticmethod
    def _check_labels(y, batch):
        y = np.asarray(y)
        if y.shape != (batch,) or y.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers of shape ({batch},), got {y.dtype} {y.shape}")
        if batch and (y.min() < 0 or y.max() >= N_CLASSES):
            raise ValueError(f"labels must lie in 0..{N_CLASSES - 1}, got {y.min()}..{y.max()}")
        return np.ascontiguousarray(y, dtype=np.int64)

    def _l2_loss(self, theta, l2):
        if not l2:
            return 0.0
        return 0.5 * l2 * sum(float(np.dot(theta[s], theta[s])) for s in self.weight_slices())


class SharedInput:
    """Losses of many perturbations ``theta + scale * eps`` of one theta on one batch: an ES
    iteration's offspring on its mini-batch, with the first layer's theta part computed once.

    The first layer reads the images, the same for every offspring, and is linear in its
    parameters: conv(x; W + s E) + b + s e = conv(x; W) + s conv(x; E) + (b + s e). So the
    images' im2col matrix and conv(x; W) are computed once per batch, conv(x; E) once per
    perturbation (the two members of an antithetic pair share it), and the sum is formed as
    the pooling reads it. In float32 this differs from evaluating conv(x; W + s E) by rounding
    only (docs/RESULTS.md, "CNN speed against PyTorch"). Not thread-safe, like the net.
    """

    def __init__(self, net, theta, x, y):
        xs, scale, self.y = net.check_batch(theta, x, y)
        first = net.layers[0]
        if not isinstance(first, ConvPoolReLU):
            raise ValueError(f"{net.name}: SharedInput needs a convolution as the first layer")
        self.net, self.first, self.batch = net, first, xs.shape[0]
        w, b = net.views(theta)[0]
        rows, n_in = first._gemm_shape(self.batch)
        cols = np.empty((rows, n_in), theta.dtype)
        kernels.im2col_same(xs, first.k, scale, cols)
        self.cols, self.z0, self.b = cols, cols @ w.reshape(n_in, first.c_out), b.copy()
        self.dz, self.bias = np.empty_like(self.z0), np.empty_like(b)
        self.out = np.empty((self.batch,) + first.out_shape, theta.dtype)
        self.pw, self.pb = net.layout[0], net.layout[1]
        self.rest = net.layout[2].offset if len(net.layout) > 2 else net.n_params
        self._offset = None
        self._empty = np.empty((0, N_CLASSES), theta.dtype)

    def loss(self, work, table, offset, scale):
        """Mean cross-entropy at ``theta + scale * table[offset:offset + P]``, whose parameters
        above the first layer (``work[rest:]``) the caller has already written into ``work``.
        The table window is not checked here (callers check an iteration's windows once)."""
        pw, pb, first = self.pw, self.pb, self.first
        if offset != self._offset:
            eps_w = table[offset + pw.offset:offset + pw.offset + pw.size]
            np.matmul(self.cols, eps_w.reshape(-1, first.c_out), out=self.dz)
            self._offset = offset
        np.multiply(table[offset + pb.offset:offset + pb.offset + pb.size], scale, out=self.bias)
        self.bias += self.b
        shape = (self.batch, first.height, first.width, first.c_out)
        z0, dz = self.z0.reshape(shape), self.dz.reshape(shape)
        total = 0.0
        for lo, hi in self.net.chunks(self.batch):
            kernels.pool_bias_relu_sum(z0[lo:hi], dz[lo:hi], scale, self.bias, self.out[lo:hi])
            logits = self.net._forward(work, self.out[lo:hi], 1.0, backward=False, start=1)
            total += kernels.softmax_xent(logits, self.y[lo:hi], self._empty) * (hi - lo)
        return total / self.batch


# Forward-only passes of nets whose dense weights are small run in chunks whose largest im2col
# buffer stays within CHUNK_NBYTES, so the working set stays in cache: on the small net a
# 50-image loss took 4.5 ms whole and 3.5 ms in 10-image chunks (5.2 vs 3.7 ms with a second
# process running beside it), while tf_tutorial, whose 12.8 MB fc1 weight would be re-read
# per chunk, gained nothing (16.7 vs 16.2 ms at 25, worse below).
CHUNK_NBYTES = 3 << 20
SMALL_DENSE_NBYTES = 1 << 20


def _forward_chunk(layers):
    """Images per forward-only chunk, or None to evaluate a batch whole (see CHUNK_NBYTES)."""
    dense_nbytes = sum(4 * layer.n_in * layer.n_out for layer in layers if isinstance(layer, Dense))
    if dense_nbytes > SMALL_DENSE_NBYTES:
        return None
    cols_nbytes = max(4 * layer.height * layer.width * layer.k ** 2 * layer.c_in
                      for layer in layers if isinstance(layer, ConvPoolReLU))
    return max(1, CHUNK_NBYTES // cols_nbytes)


def _truncated_normal(rng, size, std):
    """Normal(0, std) samples redrawn until inside +-2 std (TensorFlow's truncated_normal)."""
    out = rng.standard_normal(size)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return out * std


def tf_tutorial():
    """The paper's 3,274,634-parameter network (Sec. 4)."""
    return Net("tf_tutorial", [
        ConvPoolReLU("conv1", 28, 28, 1, 32),
        ConvPoolReLU("conv2", 14, 14, 32, 64),
        Dense("fc1", 7 * 7 * 64, 1024, relu=True),
        Dense("fc2", 1024, N_CLASSES, relu=False),
    ])


def small():
    """The paper's 28,938-parameter network of the 99% experiment (Sec. 4.3)."""
    return Net("small", [
        ConvPoolReLU("conv1", 28, 28, 1, 16),
        ConvPoolReLU("conv2", 14, 14, 16, 32),
        Dense("fc1", 7 * 7 * 32, N_CLASSES, relu=False),
    ])


ARCHITECTURES = {"tf_tutorial": tf_tutorial, "small": small}


def build(name):
    """The network called ``name`` (one of :data:`ARCHITECTURES`)."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        raise ValueError(f"net {name!r}: expected one of {sorted(ARCHITECTURES)}") from None
