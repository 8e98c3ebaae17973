"""The training loop: the only place that mixes MPI, ES and the model. Reads top to bottom.

One iteration t (see docs/ARCHITECTURE.md):
  ES:  draw the population from (seed, t) on every rank -> evaluate this rank's share of
       offspring -> Allgatherv the rewards -> fitness -> g_ES by aggregation over the noise
       table (every rank, identically) -> optimizer step.
  SGD: draw the mini-batch from (seed, t) -> exact gradient (every rank, identically) -> step.
Validation splits the 10,000 test images over the ranks and sums the correct counts. Rank 0
alone writes results and checkpoints (``hpc_es.io``) and prints progress.
"""
import contextlib
import logging
import os
import platform
import signal
import socket
import time

import numpy as np

from hpc_es import __version__, analysis, comm as comm_mod, config, es, faults, io, limited, nets, noise, optim
from hpc_es import data as data_mod

log = logging.getLogger(__name__)

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what Slurm and most schedulers send first
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; the job scripts resume on it


class Preempted(Exception):
    """A preemption signal arrived; every rank stopped after writing a checkpoint."""

    def __init__(self, signum, iteration, out):
        super().__init__(f"received {signal.Signals(signum).name}: checkpoint written after iteration "
                         f"{iteration} in {out}; continue with --resume --out {out}")
        self.signum, self.iteration = signum, iteration


# Raised on every rank alike (decided from shared input, a broadcast verdict or an agreement).
COLLECTIVE_ERRORS = (Preempted, config.ConfigError, data_mod.DataError, io.RunDirError, FloatingPointError)

PHASES = ("seconds_evaluate", "seconds_communicate", "seconds_aggregate", "seconds_update",
          "seconds_measure", "seconds_validate", "seconds_total")


def new_history():
    """Series by name, as lists (saved as HDF5 datasets). Per iteration: ``iteration``,
    ``loss``, ``reward_std``, the phase timings and, when measured, ``rho``, ``rho_<layer>``,
    ``rho_sgd_self``; per validation: ``eval_iteration``, ``val_accuracy``."""
    return {key: [] for key in ("iteration", "loss", "reward_std") + PHASES + ("eval_iteration", "val_accuracy")}


def run(cfg, comm=None, out=None, resume=False, force=False, dataset=None, quiet=False):
    """Collective over ``comm``: train as ``cfg`` says; returns (theta, history) on every rank.

    ``out``: run directory for results.h5 and checkpoints (None: write nothing). ``resume``
    continues from its newest checkpoint and refuses a config that would change the
    trajectory; ``force`` overwrites another run's files there.
    """
    comm = comm if comm is not None else comm_mod.world()
    cfg_dict = cfg.to_dict()

    # -- everything that can be wrong with the input is decided before the first real work --
    try:
        checkpoint = _prepare_out_dir(comm, out, resume, force, cfg_dict) if out else None
        return _run(cfg, comm, out, checkpoint, dataset, quiet)
    finally:
        if out and comm.Get_rank() == 0:
            io.release_lock(out)  # only if this process holds it
            with contextlib.suppress(OSError):
                os.rmdir(out)  # a run that stopped before writing anything leaves no empty directory


def _run(cfg, comm, out, checkpoint, dataset, quiet):
    dataset = dataset or _load_data(comm, cfg)
    net = nets.build(cfg.net.arch)
    theta = net.init_theta(cfg.net.init_seed, cfg.net.init)
    opt = optim.build(cfg.optim, net.n_params)
    history, start = new_history(), 0
    if checkpoint is not None:
        theta[:] = checkpoint["theta"]
        opt.load_state(checkpoint["optimizer"])
        history.update({key: list(values) for key, values in checkpoint["history"].items()})
        start = checkpoint["iteration"]
        log.info("resuming %s at iteration %d", checkpoint["path"], start)

    if cfg.run.method == "population":
        if cfg.population.theta_from:
            theta[:] = io.load_theta(cfg.population.theta_from, net.n_params)
        history = {}
    uses_table = cfg.run.method in ("es", "population")
    table = comm_mod.shared_noise_table(comm, cfg.noise.seed, cfg.noise.size) if uses_table else None
    meta = _metadata(comm, cfg)
    # Freeing the shared window is collective: only on the ways out that every rank takes (the
    # end, or an outcome all ranks agreed on). Any other exception may have been raised on one
    # rank only, and a collective then would hang the others; the job is aborted instead.
    try:
        if cfg.run.method == "population":
            _population(cfg, comm, net, theta, dataset, table, history, out, quiet, meta)
        else:
            with _signal_flag(enabled=bool(out)) as flag:
                _loop(cfg, comm, net, theta, opt, dataset, table, history, start, out, quiet, meta, flag)
    except COLLECTIVE_ERRORS:
        if table is not None:
            table.free()
        raise
    if table is not None:
        table.free()
    return theta, history


def _loop(cfg, comm, net, theta, opt, dataset, table, history, start, out, quiet, meta, flag):
    rank, size = comm.Get_rank(), comm.Get_size()
    x, y = dataset.train_images, dataset.train_labels
    n_iter, batch_size, method = cfg.run.iterations, cfg.data.batch_size, cfg.run.method
    grad = np.empty_like(theta)
    g_true = np.empty_like(theta) if method == "proxy" else None
    weight_slices = net.weight_slices()
    if method == "es":
        n = cfg.es.n_offspring
        shares = [comm_mod.split_range(n, r, size) for r in range(size)]
        lo, hi = shares[rank]
        counts = np.array([b - a for a, b in shares], np.int64)
        mine, rewards = np.empty(hi - lo, np.float64), np.empty(n, np.float64)
        work = np.empty_like(theta)
        sharded = cfg.es.aggregation == "sharded" and size > 1
        slices = [comm_mod.split_range(net.n_params, r, size) for r in range(size)]
        g_lo, g_hi = slices[rank] if sharded else (0, net.n_params)
        g_counts = np.array([b - a for a, b in slices], np.int64)
        buckets = delta = None
        if cfg.es.perturbation == "limited":
            buckets = limited.partition(net.layout, cfg.es.bucket_size)
            delta = limited.DeltaEvaluator(net) if cfg.es.delta else None
    log.info("%s on %s (%d parameters), %d ranks: iterations %d..%d%s", method, net.name,
             net.n_params, size, start + 1, n_iter,
             f", N = {cfg.es.n_offspring}, sigma = {cfg.es.sigma}, {cfg.es.mode}"
             + (f", limited to buckets of <= {cfg.es.bucket_size}" if cfg.es.perturbation == "limited" else "")
             if method == "es" else
             f", rho = {cfg.proxy.rho}" if method == "proxy" else "")
    wall_start, window_start, window_iters = time.perf_counter(), time.perf_counter(), 0
    if out and start >= n_iter and rank == 0:  # resumed a finished run: its results may be older
        io.save_results(out, cfg.to_dict(), {**meta, "completed_iterations": start}, history, theta)
    for t in range(start, n_iter):
        rec = {"iteration": t + 1, "reward_std": 0.0}
        gather_seconds = 0.0  # of the sharded gradient: communication, not aggregation
        t0 = time.perf_counter()
        if method == "es":
            pop = es.sample_population(cfg.es, cfg.run.seed, t, net.n_params, cfg.noise.size, len(y), batch_size,
                                       buckets)
            if faults.armed():  # the reliability tests can stop a rank half-way through
                mid = (lo + hi) // 2
                es.evaluate(net, theta, table.array, pop, cfg.es.sigma, x, y, lo, mid, mine, work, delta)
                faults.point("evaluate", t + 1, rank)
                es.evaluate(net, theta, table.array, pop, cfg.es.sigma, x, y, mid, hi, mine[mid - lo:], work, delta)
            else:
                es.evaluate(net, theta, table.array, pop, cfg.es.sigma, x, y, lo, hi, mine, work, delta)
            t1 = time.perf_counter()
            comm_mod.allgatherv(comm, mine, rewards, counts)
            t2 = time.perf_counter()
            _check_finite(rewards, t, cfg, "rewards")
            es.gradient(table.array, pop, es.fitness(rewards, cfg.es.fitness), cfg.es.sigma, grad, g_lo, g_hi)
            if sharded:  # assemble g from every rank's slice (P floats, in place)
                t_gather = time.perf_counter()
                comm_mod.allgatherv(comm, grad[g_lo:g_hi], grad, g_counts)
                gather_seconds = time.perf_counter() - t_gather
            rec["loss"], rec["reward_std"] = -float(rewards.mean()), float(rewards.std())
            batch = pop.batch
        else:  # sgd, proxy: the exact (descent) gradient of the mini-batch of stream DATA_STREAM
            batch = es.minibatch(cfg.run.seed, t, len(y), batch_size)
            target = g_true if method == "proxy" else grad
            rec["loss"], _ = net.loss_and_grad(theta, x[batch], y[batch], cfg.optim.l2, out=target)
            t1 = t2 = time.perf_counter()
            _check_finite(np.array([rec["loss"]]), t, cfg, "loss")
            if method == "proxy":
                g_noise = es.stream(cfg.run.seed, t, es.PROXY_STREAM).standard_normal(net.n_params, np.float32)
                analysis.proxy_gradient(g_true, cfg.proxy.rho, g_noise, grad)
        t3 = time.perf_counter()
        if rank == 0 and (cfg.measure.correlation or cfg.measure.sgd_self_correlation):
            # ES's g is an ascent direction of the reward; the proxy's a descent one of the loss.
            ref = -1.0 if method == "es" else 1.0
            rec.update(_measure(cfg, net, theta, x, y, t, batch, grad, ref, g_true))
        t4 = time.perf_counter()
        if method == "es":
            np.negative(grad, out=grad)  # the optimizers descend the loss = -reward
            if cfg.optim.l2:  # L2's gradient is known exactly; OpenAI's ES adds it the same way
                for s in weight_slices:
                    grad[s] += cfg.optim.l2 * theta[s]
        opt.step(theta, grad)
        t5 = time.perf_counter()
        done = t + 1
        if (cfg.run.eval_every and done % cfg.run.eval_every == 0) or done == n_iter:
            acc = validate(comm, net, theta, dataset, cfg.run.eval_chunk)
            history["eval_iteration"].append(done)
            history["val_accuracy"].append(acc)
        t6 = time.perf_counter()
        rec.update(zip(PHASES, (t1 - t0, t2 - t1 + gather_seconds, t3 - t2 - gather_seconds, t5 - t4,
                                t4 - t3, t6 - t5, t6 - t0)))
        for key, value in rec.items():
            history.setdefault(key, []).append(value)
        window_iters += 1
        if rank == 0 and not quiet and (done % cfg.run.log_every == 0 or done == n_iter):
            _progress(cfg, history, done, n_iter, time.perf_counter() - window_start, window_iters,
                      time.perf_counter() - wall_start, done - start)
            window_start, window_iters = time.perf_counter(), 0
        # A signal may reach the ranks at different iterations; they agree on it here, together.
        stop = comm_mod.max_int(comm, flag["signum"]) if out else 0
        due = (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or done == n_iter
        if out and (due or stop):
            problem = None
            if rank == 0:
                try:
                    io.save_checkpoint(out, done, theta, opt.state(), cfg.to_dict(), history)
                    io.save_results(out, cfg.to_dict(), {**meta, "completed_iterations": done}, history, theta)
                except OSError as err:  # e.g. a full disk: the previous files are intact
                    problem = (f"{out}: writing the checkpoint of iteration {done} failed ({err}); "
                               f"{_last_good(out)} Free space (or move the run) and continue with --resume")
            # Everybody learns the outcome; nobody runs ahead of a checkpoint needed to resume.
            problem = comm.bcast(problem, root=0)
            if problem:
                raise io.RunDirError(problem)
        if stop:
            raise Preempted(stop, done, out)


@contextlib.contextmanager
def _signal_flag(enabled):
    """While active, SIGTERM/SIGUSR1 only set ``flag["signum"]``; the loop then checkpoints and stops."""
    flag = {"signum": 0}
    previous = {}
    if enabled:
        def handler(signum, frame):
            flag["signum"] = signum

        try:
            for sig in PREEMPT_SIGNALS:
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: leave the signals alone
            previous = {}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _population(cfg, comm, net, theta, dataset, table, history, out, quiet, meta):
    """Sec. 4: at fixed theta and mini-batch, add ``population.step`` pseudo-offspring at a time,
    re-estimate g_ES from all of them, and stop when rho(g_ES, g_true) >= the target.

    Block b's perturbations come from stream (seed, b, NOISE_STREAM); the mini-batch is
    iteration 0's. Each rank evaluates its share of every block; the rewards are gathered and
    every rank adds the block's unscaled sum sign_i r_i eps_i to a float64 running sum S, so
    g_ES(N) = S / (N sigma) for all N offspring so far (raw rewards, Eq. (1)).
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    pc, sigma, P = cfg.population, cfg.es.sigma, net.n_params
    x, y = dataset.train_images, dataset.train_labels
    batch = es.minibatch(cfg.run.seed, 0, len(y), cfg.data.batch_size)
    g_true = -net.grad(theta, x[batch], y[batch])  # the reward's gradient (cheap: one backward pass)
    lo, hi = comm_mod.split_range(pc.step, rank, size)
    counts = np.array([b - a for a, b in (comm_mod.split_range(pc.step, r, size) for r in range(size))], np.int64)
    mine, rewards = np.empty(hi - lo), np.empty(pc.step)
    work, block_sum, total = np.empty_like(theta), np.empty_like(theta), np.zeros(P, np.float64)
    member = np.arange(pc.step, dtype=np.int64) // 2
    sign = np.where(np.arange(pc.step) % 2 == 0, 1.0, -1.0).astype(np.float32)
    log.info("population on %s (%d parameters), %d ranks: +%d offspring per step until rho >= %.3f "
             "(theory: N = %.0f) or N = %d", net.name, P, size, pc.step, pc.target_rho,
             2 * analysis.pairs_for_rho(pc.target_rho, P), pc.max_offspring)
    n_total, block, rho = 0, 0, 0.0
    while n_total < pc.max_offspring and rho < pc.target_rho:
        t0 = time.perf_counter()
        offsets = noise.sample_offsets(es.stream(cfg.run.seed, block, es.NOISE_STREAM), pc.step // 2, P, cfg.noise.size)
        pop = es.Population(offsets, member, sign, batch)
        es.evaluate(net, theta, table.array, pop, sigma, x, y, lo, hi, mine, work)
        comm_mod.allgatherv(comm, mine, rewards, counts)
        _check_finite(rewards, block, cfg, "rewards")
        es.aggregate(table.array, offsets, es.perturbation_sums(rewards, pop), block_sum)
        total += block_sum
        n_total += pc.step
        block += 1
        rho = analysis.pearson(total, g_true)
        theory = float(analysis.expected_rho(n_total / 2, P))
        for key, value in (("population_n", n_total), ("population_rho", rho), ("population_rho_theory", theory),
                           ("seconds_total", time.perf_counter() - t0)):
            history.setdefault(key, []).append(value)
        if rank == 0 and not quiet and (block % cfg.run.log_every == 0 or rho >= pc.target_rho):
            log.info("N = %d  rho %.2f%%  theory %.2f%%  %.0f offspring/s", n_total, 100 * rho, 100 * theory,
                     pc.step / history["seconds_total"][-1])
    history["population_reached"] = [int(rho >= pc.target_rho)]
    if out and rank == 0:
        io.save_results(out, cfg.to_dict(), {**meta, "completed_iterations": block}, history, theta)
    comm.Barrier()


def _measure(cfg, net, theta, x, y, t, batch, g_est, sign, g_true):
    """Rank 0's measurements of iteration t (never used by the optimizer).

    ``g_est`` is the estimate used this iteration (g_ES or g_proxy), ``sign`` the sign that
    turns the loss gradient into its direction (-1 for ES, which ascends the reward), and
    ``g_true`` the exact loss gradient of the same mini-batch if already computed.
    """
    rec = {}
    if cfg.measure.correlation:
        if g_true is None:
            g_true = net.grad(theta, x[batch], y[batch])  # the cross-entropy's gradient, no L2
        g_true = g_true if sign > 0 else -g_true
        rec["rho"] = analysis.pearson(g_est, g_true)
        for name, rho in analysis.layer_correlations(net, g_est, g_true).items():
            rec[f"rho_{name}"] = rho
    if cfg.measure.sgd_self_correlation:
        rng = es.stream(cfg.run.seed, t, es.SELF_STREAM)
        b1, b2 = (rng.choice(len(y), cfg.data.batch_size, replace=False) for _ in range(2))
        g1 = net.grad(theta, x[b1], y[b1]).copy()
        rec["rho_sgd_self"] = analysis.pearson(g1, net.grad(theta, x[b2], y[b2]))
    return rec


def validate(comm, net, theta, dataset, chunk):
    """Collective over ``comm``: accuracy on the whole test set, split over the ranks."""
    n = len(dataset.test_labels)
    lo, hi = comm_mod.split_range(n, comm.Get_rank(), comm.Get_size())
    mine = net.n_correct(theta, dataset.test_images[lo:hi], dataset.test_labels[lo:hi], chunk) if hi > lo else 0
    return comm_mod.sum_int(comm, mine) / n


def _last_good(out):
    try:
        return f"the checkpoint of iteration {io.load_checkpoint(out)['iteration']} is intact."
    except io.RunDirError:
        return "no earlier checkpoint exists."


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
    rho = f"  rho {100 * history['rho'][-1]:.2f}%" if history.get("rho") else ""
    log.info("iter %d/%d  loss %.4f  %s%s  %s  ETA %s", done, n_iter, history["loss"][-1], acc, rho, speed,
             _hms(eta))


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def _prepare_out_dir(comm, out, resume, force, cfg_dict):
    """Collective: check the run directory on rank 0, share the verdict, load a checkpoint."""
    problem = None
    if comm.Get_rank() == 0:
        locked = False
        try:
            if os.path.exists(out) and not os.path.isdir(out):
                raise io.RunDirError(f"{out}: exists and is not a directory")
            os.makedirs(out, exist_ok=True)
            note = io.acquire_lock(out)
            locked = True
            if note:
                log.warning("%s", note)
            io.check_out_dir(out, resume, force)
            if force and not resume:
                io.clear_run(out)
            io.remove_stale_temporaries(out)  # we hold the lock: any temporary is a dead writer's
        except (io.RunDirError, OSError) as err:
            problem = str(err)
            if locked:
                io.release_lock(out)
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
