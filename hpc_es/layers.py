"""The two layer kinds of the paper's CNNs, forward and exact backward, over preallocated buffers.

A layer owns no parameters: it receives views of its weight ``w`` and bias ``b`` (slices of
the flat theta) and, for the backward pass, views ``gw``/``gb`` of the flat gradient, so
gradients land in place with no packing step. Activations are kept in a per-batch-size
:class:`Buffers` object that the backward pass (and, later, incremental evaluation) reads.
"""
import numpy as np

from hpc_es import kernels


class Buffers:
    """Named scratch arrays of one layer for one batch size and dtype (attribute access)."""

    def __init__(self, **arrays):
        self.__dict__.update(arrays)


class ConvPoolReLU:
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
        if backward:
            buf.dz = np.empty((rows, self.c_out), dtype)
            buf.dcols = np.empty((rows, cols), dtype)
            buf.dx = np.empty((batch,) + self.in_shape, dtype)
        return buf

    def forward(self, w, b, x, buf, scale=1.0):
        """x (B, H, W, C_in) -> buf.out (B, H/2, W/2, C_out); ``scale`` multiplies x first."""
        kernels.im2col_same(x, self.k, scale, buf.cols)
        np.matmul(buf.cols, w.reshape(-1, self.c_out), out=buf.z)
        z4 = buf.z.reshape((x.shape[0], self.height, self.width, self.c_out))
        kernels.pool_bias_relu(z4, b, buf.out, buf.argmax)
        return buf.out

    def backward(self, w, gw, gb, dout, buf, need_dx):
        """Writes gw, gb from dout (B, H/2, W/2, C_out); returns dL/dx (a buffer) or None."""
        dz4 = buf.dz.reshape((dout.shape[0], self.height, self.width, self.c_out))
        kernels.pool_bias_relu_backward(dout, buf.out, buf.argmax, dz4, gb)
        np.matmul(buf.cols.T, buf.dz, out=gw.reshape(-1, self.c_out))
        if not need_dx:
            return None
        np.matmul(buf.dz, w.reshape(-1, self.c_out).T, out=buf.dcols)
        kernels.col2im_same(buf.dcols, self.k, buf.dx)
        return buf.dx


class Dense:
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
