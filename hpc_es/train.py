"""The training loop: the only place that mixes MPI, ES and the model. Reads top to bottom.

One iteration t (see docs/ARCHITECTURE.md):
  ES:  draw the population from (seed, t) on every rank -> evaluate this rank's share of
       offspring -> Allgatherv the rewards -> fitness -> g_ES by aggregation over the noise
       table (every rank, identically) -> optimizer step.
  SGD: draw the mini-batch from (seed, t) -> exact gradient (every rank, identically) -> step.
Validation splits the 10,000 test images over the ranks and sums the correct counts. Rank 0
alone writes results and checkpoints (``hpc_es.io``) and prints progress.
"""
import logging
import os
import platform
import socket
import time

import numpy as np

from hpc_es import __version__, comm as comm_mod, config, es, io, nets, optim
from hpc_es import data as data_mod

log = logging.getLogger(__name__)

PER_ITERATION = ("iteration", "loss", "reward_std", "seconds_evaluate", "seconds_communicate",
                 "seconds_aggregate", "seconds_update", "seconds_validate", "seconds_total")
PER_EVAL = ("eval_iteration", "val_accuracy")


def new_history():
    """Per-iteration and per-validation series, as lists (saved as HDF5 datasets)."""
    return {key: [] for key in PER_ITERATION + PER_EVAL}


def run(cfg, comm=None, out=None, resume=False, force=False, dataset=None, quiet=False):
    """Collective over ``comm``: train as ``cfg`` says; returns (theta, history) on every rank.

    ``out``: run directory for results.h5 and checkpoints (None: write nothing). ``resume``
    continues from its newest checkpoint and refuses a config that would change the
    trajectory; ``force`` overwrites another run's files there.
    """
    comm = comm if comm is not None else comm_mod.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    cfg_dict = cfg.to_dict()

    # -- everything that can be wrong with the input is decided before the first real work --
    checkpoint = _prepare_out_dir(comm, out, resume, force, cfg_dict) if out else None
    dataset = dataset or _load_data(comm, cfg)
    net = nets.build(cfg.net.arch)
    theta = net.init_theta(cfg.net.init_seed, cfg.net.init)
    opt = optim.build(cfg.optim, net.n_params)
    history, start = new_history(), 0
    if checkpoint is not None:
        theta[:] = checkpoint["theta"]
        opt.load_state(checkpoint["optimizer"])
        history = {key: list(checkpoint["history"].get(key, [])) for key in history}
        start = checkpoint["iteration"]
        log.info("resuming %s at iteration %d", checkpoint["path"], start)

    table = comm_mod.shared_noise_table(comm, cfg.noise.seed, cfg.noise.size) if cfg.run.method == "es" else None
    meta = _metadata(comm, cfg)
    try:
        _loop(cfg, comm, net, theta, opt, dataset, table, history, start, out, quiet, meta)
    finally:
        if table is not None:
            table.free()
    return theta, history


def _loop(cfg, comm, net, theta, opt, dataset, table, history, start, out, quiet, meta):
    rank, size = comm.Get_rank(), comm.Get_size()
    x, y = dataset.train_images, dataset.train_labels
    n_iter, batch_size = cfg.run.iterations, cfg.data.batch_size
    grad = np.empty_like(theta)
    weight_slices = net.weight_slices()
    if cfg.run.method == "es":
        n = cfg.es.n_offspring
        shares = [comm_mod.split_range(n, r, size) for r in range(size)]
        lo, hi = shares[rank]
        counts = np.array([b - a for a, b in shares], np.int64)
        mine, rewards = np.empty(hi - lo, np.float64), np.empty(n, np.float64)
        work = np.empty_like(theta)
    log.info("%s on %s (%d parameters), %d ranks: iterations %d..%d%s", cfg.run.method, net.name,
             net.n_params, size, start + 1, n_iter,
             f", N = {cfg.es.n_offspring}, sigma = {cfg.es.sigma}, {cfg.es.mode}" if cfg.run.method == "es" else "")
    wall_start, window_start, window_iters = time.perf_counter(), time.perf_counter(), 0
    for t in range(start, n_iter):
        t0 = time.perf_counter()
        if cfg.run.method == "es":
            pop = es.sample_population(cfg.es, cfg.run.seed, t, net.n_params, cfg.noise.size, len(y), batch_size)
            es.evaluate(net, theta, table.array, pop, cfg.es.sigma, x, y, lo, hi, mine, work)
            t1 = time.perf_counter()
            comm_mod.allgatherv(comm, mine, rewards, counts)
            t2 = time.perf_counter()
            _check_finite(rewards, t, cfg, "rewards")
            es.gradient(table.array, pop, es.fitness(rewards, cfg.es.fitness), cfg.es.sigma, grad)
            np.negative(grad, out=grad)  # the optimizers descend the loss = -reward
            if cfg.optim.l2:  # the L2 term's gradient is known exactly; OpenAI's ES adds it the same way
                for s in weight_slices:
                    grad[s] += cfg.optim.l2 * theta[s]
            loss, reward_std = -float(rewards.mean()), float(rewards.std())
        else:
            idx = es.minibatch(cfg.run.seed, t, len(y), batch_size)
            loss, _ = net.loss_and_grad(theta, x[idx], y[idx], cfg.optim.l2, out=grad)
            t1 = t2 = time.perf_counter()
            _check_finite(np.array([loss]), t, cfg, "loss")
            reward_std = 0.0
        t3 = time.perf_counter()
        opt.step(theta, grad)
        t4 = time.perf_counter()
        done = t + 1
        if (cfg.run.eval_every and done % cfg.run.eval_every == 0) or done == n_iter:
            acc = validate(comm, net, theta, dataset, cfg.run.eval_chunk)
            history["eval_iteration"].append(done)
            history["val_accuracy"].append(acc)
        t5 = time.perf_counter()
        for key, value in zip(PER_ITERATION, (done, loss, reward_std, t1 - t0, t2 - t1, t3 - t2,
                                              t4 - t3, t5 - t4, t5 - t0)):
            history[key].append(value)
        window_iters += 1
        if rank == 0 and not quiet and (done % cfg.run.log_every == 0 or done == n_iter):
            _progress(cfg, history, done, n_iter, time.perf_counter() - window_start, window_iters,
                      time.perf_counter() - wall_start, done - start)
            window_start, window_iters = time.perf_counter(), 0
        if out and ((cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or done == n_iter):
            if rank == 0:
                io.save_checkpoint(out, done, theta, opt.state(), cfg.to_dict(), history)
                io.save_results(out, cfg.to_dict(), {**meta, "completed_iterations": done}, history, theta)
            comm.Barrier()  # nobody runs ahead of a checkpoint that may be needed to resume


def validate(comm, net, theta, dataset, chunk):
    """Collective over ``comm``: accuracy on the whole test set, split over the ranks."""
    n = len(dataset.test_labels)
    lo, hi = comm_mod.split_range(n, comm.Get_rank(), comm.Get_size())
    mine = net.n_correct(theta, dataset.test_images[lo:hi], dataset.test_labels[lo:hi], chunk) if hi > lo else 0
    return comm_mod.sum_int(comm, mine) / n


def _check_finite(values, t, cfg, what):
    if not np.isfinite(values).all():
        hint = (f"es.sigma = {cfg.es.sigma} or optim.lr = {cfg.optim.lr} is likely too large"
                if cfg.run.method == "es" else f"optim.lr = {cfg.optim.lr} is likely too large")
        raise FloatingPointError(f"iteration {t + 1}: non-finite {what}; {hint}. The last checkpoint "
                                 f"is kept; resume from it with a smaller value and --force into a new --out")


def _progress(cfg, history, done, n_iter, window_seconds, window_iters, elapsed, iters_this_run):
    rate = window_iters / window_seconds if window_seconds > 0 else float("nan")
    eta = (n_iter - done) * elapsed / max(iters_this_run, 1)
    acc = (f"val_acc {100 * history['val_accuracy'][-1]:.2f}% (@{history['eval_iteration'][-1]})"
           if history["val_accuracy"] else "val_acc -")
    speed = (f"{rate * cfg.es.n_offspring:,.0f} offspring/s" if cfg.run.method == "es"
             else f"{rate * cfg.data.batch_size:,.0f} images/s")
    log.info("iter %d/%d  loss %.4f  %s  %s  ETA %s", done, n_iter, history["loss"][-1], acc, speed,
             _hms(eta))


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def _prepare_out_dir(comm, out, resume, force, cfg_dict):
    """Collective: check the run directory on rank 0, share the verdict, load a checkpoint."""
    problem = None
    if comm.Get_rank() == 0:
        try:
            io.check_out_dir(out, resume, force)
            if force and not resume:
                io.clear_run(out)
            os.makedirs(out, exist_ok=True)
        except (io.RunDirError, OSError) as err:
            problem = str(err)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise io.RunDirError(problem)
    if not resume:
        return None
    checkpoint = io.load_checkpoint(out)
    diff = config.trajectory_diff(checkpoint["config"], cfg_dict)
    if diff:
        raise config.ConfigError(f"--resume {out}: the config differs from the checkpoint's in keys that "
                                 f"change the trajectory: {'; '.join(diff)}")
    return checkpoint


def _load_data(comm, cfg):
    """Collective: rank 0 loads (downloading into the user cache if needed) before the others."""
    problem, dataset = None, None
    if comm.Get_rank() == 0:
        try:
            dataset = data_mod.load_mnist(cfg.data.dir or None, verify=cfg.data.verify)
        except data_mod.DataError as err:
            problem = str(err)
    problem = comm.bcast(problem, root=0)
    if problem:
        raise data_mod.DataError(problem)
    if comm.Get_rank() != 0:
        dataset = data_mod.load_mnist(cfg.data.dir or None, verify=cfg.data.verify, download=False)
    return dataset


def _metadata(comm, cfg):
    import h5py
    import numba

    try:
        from mpi4py import MPI
        mpi = {"mpi4py": __import__("mpi4py").__version__, "mpi": MPI.Get_library_version().splitlines()[0]}
    except ImportError:
        mpi = {"mpi4py": None, "mpi": None}
    from hpc_es.threads import blas_threads
    hosts = sorted(set(comm.allgather(socket.gethostname())))
    return {
        "hpc_es": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "h5py": h5py.__version__, **mpi, "ranks": comm.Get_size(),
        "hosts": hosts, "blas_threads": blas_threads() or 0, "numba_threads": numba.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
