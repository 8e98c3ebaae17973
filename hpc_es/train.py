"""The training loop: wires config, data, net and optimizer; progress lines; timing.

Today it runs the SGD baseline of the paper (Sec. 4: mini-batch 50, Adam 1e-3, validation
on the whole 10,000-image test set). Every random draw of iteration t comes from a
generator keyed by (run seed, t), so the data order does not depend on how a run is split
or resumed, and the ES modes will share it.
"""
import logging
import time
from dataclasses import dataclass, field

import numpy as np

from hpc_es import data as data_mod
from hpc_es import nets, optim

log = logging.getLogger(__name__)


def iteration_rng(seed, t):
    """The generator of iteration ``t``: a pure function of (run seed, t)."""
    return np.random.Generator(np.random.PCG64([seed, t]))


def minibatch(seed, t, n_train, batch_size):
    """Indices (batch_size,) of iteration t's mini-batch, drawn without replacement."""
    return iteration_rng(seed, t).choice(n_train, size=batch_size, replace=False)


@dataclass
class History:
    """What a run produced: per-iteration loss, validation points, seconds per phase."""

    loss: list = field(default_factory=list)
    eval_iterations: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: dict = field(default_factory=lambda: {"step": 0.0, "eval": 0.0})


def run(cfg, dataset=None):
    """Train as ``cfg`` says; return (theta, History). Serial: the SGD baseline needs no MPI."""
    dataset = dataset or data_mod.load_mnist(cfg.data.dir or None, verify=cfg.data.verify)
    net = nets.build(cfg.net.arch)
    theta = net.init_theta(cfg.net.init_seed, cfg.net.init)
    opt = optim.build(cfg.optim, net.n_params)
    grad = np.empty_like(theta)
    x_train, y_train = dataset.train_images, dataset.train_labels
    history = History()
    log.info("%s on %s (%d parameters): %d iterations, optimizer %s lr %g, batch %d", cfg.run.method,
             net.name, net.n_params, cfg.run.iterations, cfg.optim.name, cfg.optim.lr, cfg.data.batch_size)
    for t in range(cfg.run.iterations):
        start = time.perf_counter()
        idx = minibatch(cfg.run.seed, t, len(y_train), cfg.data.batch_size)
        loss, _ = net.loss_and_grad(theta, x_train[idx], y_train[idx], cfg.optim.l2, out=grad)
        if not np.isfinite(loss):
            raise FloatingPointError(f"iteration {t}: loss is {loss}; lower optim.lr (now {cfg.optim.lr})")
        opt.step(theta, grad)
        history.loss.append(loss)
        history.seconds["step"] += time.perf_counter() - start
        done = t + 1
        if (cfg.run.eval_every and done % cfg.run.eval_every == 0) or done == cfg.run.iterations:
            _validate(net, theta, dataset, cfg, done, history)
    return theta, history


def _validate(net, theta, dataset, cfg, done, history):
    start = time.perf_counter()
    acc = net.accuracy(theta, dataset.test_images, dataset.test_labels, cfg.run.eval_chunk)
    history.seconds["eval"] += time.perf_counter() - start
    history.eval_iterations.append(done)
    history.val_accuracy.append(acc)
    recent = history.loss[-min(len(history.loss), cfg.run.eval_every or len(history.loss)):]
    log.info("iter %6d/%d  loss %.4f (mean of last %d)  val_acc %.2f%%  %.1f ms/iter",
             done, cfg.run.iterations, float(np.mean(recent)), len(recent), 100 * acc,
             1e3 * history.seconds["step"] / done)
