"""Slow, plain numpy reference implementations the fast code is tested against.

Nothing here shares code with the package's kernels: convolution is a direct sum over
kernel taps, pooling a reshape-max, activations in the textbook order conv -> bias ->
ReLU -> pool, all in float64.
"""
import numpy as np


def conv2d_same(x, w):
    """Direct 'SAME' stride-1 convolution (cross-correlation, as TF): x (B,H,W,Ci), w (k,k,Ci,Co)."""
    B, H, W, _ = x.shape
    k = w.shape[0]
    pad = k // 2
    xp = np.zeros((B, H + 2 * pad, W + 2 * pad, x.shape[3]))
    xp[:, pad:pad + H, pad:pad + W, :] = x
    out = np.zeros((B, H, W, w.shape[3]))
    for i in range(H):
        for j in range(W):
            patch = xp[:, i:i + k, j:j + k, :]  # (B, k, k, Ci)
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out


def maxpool2x2(x):
    B, H, W, C = x.shape
    return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def forward(net, theta, images):
    """Logits (B, 10) of ``net`` at ``theta`` in float64, layer by layer from the layout."""
    theta = np.asarray(theta, np.float64)
    h = np.asarray(images, np.float64).reshape(-1, 28, 28, 1)
    if np.asarray(images).dtype == np.uint8:
        h = h / 255.0
    params = {p.name: theta[p.offset:p.offset + p.size].reshape(p.shape) for p in net.layout}
    for layer in net.layers:
        w, b = params[layer.name + ".w"], params[layer.name + ".b"]
        if w.ndim == 4:
            h = maxpool2x2(np.maximum(conv2d_same(h, w) + b, 0.0))
        else:
            h = h.reshape(h.shape[0], -1) @ w + b
            if layer.relu:
                h = np.maximum(h, 0.0)
    return h


def xent(logits, labels):
    """Mean softmax cross-entropy in float64."""
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def loss(net, theta, images, labels, l2=0.0):
    theta = np.asarray(theta, np.float64)
    reg = sum(0.5 * l2 * np.sum(theta[p.offset:p.offset + p.size] ** 2)
              for p in net.layout if p.kind == "w")
    return xent(forward(net, theta, images), labels) + reg
