"""Optimizers over a flat theta: Adam (the paper's, lr 1e-3) and plain SGD.

Both take the *descent* gradient of a loss (for ES, the negative of the reward gradient of
Eq. (1)) and update theta in place, so the same code serves SGD, ES and the ES proxy. State
is a dict of arrays + a step count, so a checkpoint can store and restore it exactly.
"""
import numpy as np

OPTIMIZERS = ("adam", "sgd")


class SGD:
    """theta <- theta - lr * g (Eq. (2) with the sign for a loss)."""

    def __init__(self, n_params, lr, dtype=np.float32):
        self.lr = lr
        self.step_count = 0

    def step(self, theta, grad):
        theta -= self.lr * grad
        self.step_count += 1

    def state(self):
        return {"step_count": np.array(self.step_count)}

    def replicated_state(self):
        """What every rank holds alike (here all of :meth:`state`): the drift check compares it."""
        return self.state()

    def slice(self, lo, hi):
        """This optimizer over parameters [lo, hi) only (a sharded update): the same steps there."""
        part = SGD(hi - lo, self.lr)
        part.step_count = self.step_count
        return part

    def load_state(self, state):
        self.step_count = int(state["step_count"])


class Adam:
    """Adam (Kingma & Ba 2015) with TensorFlow's defaults (beta1 0.9, beta2 0.999, eps 1e-8).

    Uses TensorFlow's formulation, where eps is added to sqrt(v) and the bias correction is
    folded into the step size: lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t).
    """

    def __init__(self, n_params, lr, beta1=0.9, beta2=0.999, eps=1e-8, dtype=np.float32):
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = np.zeros(n_params, dtype)
        self.v = np.zeros(n_params, dtype)
        self._tmp = np.empty(n_params, dtype)
        self.step_count = 0

    def step(self, theta, grad):
        self.step_count += 1
        t = self.step_count
        lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
        m, v, tmp = self.m, self.v, self._tmp
        m *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr_t
        theta -= tmp

    def state(self):
        return {"m": self.m, "v": self.v, "step_count": np.array(self.step_count)}

    def replicated_state(self):
        """What every rank holds alike (here all of :meth:`state`): the drift check compares it."""
        return self.state()

    def slice(self, lo, hi):
        """This optimizer over parameters [lo, hi) only (a sharded update): its state there, so
        its steps give the same bits as this one's on that slice (the update is elementwise)."""
        part = Adam(hi - lo, self.lr, self.beta1, self.beta2, self.eps, self.m.dtype)
        part.m[:], part.v[:], part.step_count = self.m[lo:hi], self.v[lo:hi], self.step_count
        return part

    def load_state(self, state):
        self.m[:] = state["m"]
        self.v[:] = state["v"]
        self.step_count = int(state["step_count"])


def build(cfg, n_params, dtype=np.float32):
    """The optimizer named by an :class:`hpc_es.config.OptimConfig`."""
    if cfg.name == "adam":
        return Adam(n_params, cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, dtype=dtype)
    if cfg.name == "sgd":
        return SGD(n_params, cfg.lr, dtype=dtype)
    raise ValueError(f"optim.name {cfg.name!r}: expected one of {OPTIMIZERS}")
