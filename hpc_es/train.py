"""The training loop: the only place, with the step objects of :mod:`hpc_es.steps`, that
mixes MPI, ES and the model. Reads top to bottom.

:func:`session` checks the input and sets up what a run works with (run directory, checkpoint,
data, net, optimizer, noise table, metadata); :func:`run` then hands it to :func:`_loop`:

  iteration t:  grad = step.gradient(theta, t)   # ES, limited ES, SGD or the proxy (steps)
                optimizer step -> validation (every k) -> progress (rank 0) -> agree on a
                signal -> checkpoint + results (rank 0; every k, at the end, on a signal)

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
import uuid
from dataclasses import dataclass, field

import numpy as np

from hpc_es import __version__, comm as comm_mod, config, drift, faults, io, kinds, nets, optim, steps
from hpc_es import data as data_mod
from hpc_es.steps import PHASES
from hpc_es.text import plural

log = logging.getLogger(__name__)

PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # what Slurm and most schedulers send first
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again"; the job scripts resume on it


class Preempted(Exception):
    """A preemption signal arrived; every rank stopped after writing a checkpoint. Made from its
    message alone, like every collective error (:func:`hpc_es.comm.every_rank` rebuilds the
    first failing rank's error on every rank from its text)."""

    @classmethod
    def after(cls, signum, iteration, out):
        return cls(f"received {signal.Signals(signum).name}: checkpoint written after iteration {iteration} in "
                   f"{out}; continue with --resume --out {out}")


# Raised on every rank alike (decided from shared input, a broadcast verdict or an agreement).
COLLECTIVE_ERRORS = (Preempted, config.ConfigError, data_mod.DataError, io.RunDirError, FloatingPointError,
                     comm_mod.RankFailure)

def new_history():
    """Series by name, as lists (saved as HDF5 datasets). Per iteration: ``iteration``,
    ``loss``, ``reward_std``, the phase timings and, when measured, ``rho``, ``rho_<layer>``,
    each layer's share of |g_true|^2 (``gshare_<layer>``), ES's theory for the correlations
    (``rho_theory``, ``rho_theory_<layer>``; limited: overall only),
    ``rho_sgd_self``, a scheduled proxy's ``rho_target``; per validation: ``eval_iteration``, ``val_accuracy``."""
    return {key: [] for key in ("iteration", "loss", "reward_std") + PHASES + ("eval_iteration", "val_accuracy")}


@dataclass
class Session:
    """What a run works with once its input is checked: set up by :func:`session`."""

    cfg: object
    comm: object
    out: str
    net: object
    theta: np.ndarray
    opt: object
    history: dict
    start: int  # iterations already done (a resumed run's checkpoint)
    dataset: object
    table: object  # the node-shared noise table (comm.SharedArray), or None
    meta: dict
    quiet: bool
    saved: int = 0  # iteration of the newest checkpoint on disk (0: none)
    state: dict = field(default_factory=dict)  # a resumed experiment's own arrays (io.save_checkpoint)
    finished: bool = False  # resumed from a checkpoint that had done all it was asked (kinds.finished)


def run(cfg, comm=None, out=None, resume=False, force=False, dataset=None, quiet=False, command=""):
    """Collective over ``comm``: train as ``cfg`` says (sgd, proxy or es); returns (theta,
    history) on every rank.

    ``out``: run directory for results.h5 and checkpoints (None: write nothing). ``resume``
    continues from its newest checkpoint and refuses a config that would change the
    trajectory ("auto": resume if a checkpoint exists, else start); ``force`` overwrites
    another run's files there. A run already complete is left unchanged ("nothing to do").
    ``command``: the command line to record in the results (the CLI passes its own).
    """
    kind = kinds.of(cfg.to_dict())
    if kinds.resolve(kind.run) is not run:
        raise config.ConfigError(f"a {kind.name} config is not training: {kind.run} runs it "
                                 f"(`{kind.command}` dispatches to it)")
    with session(cfg, comm, out, resume, force, dataset, quiet, cfg.run.method in config.ES_METHODS, command) as s:
        if s.finished:
            nothing_to_do(s)
        else:
            with signal_flag(enabled=bool(out)) as flag:
                step = steps.build(cfg, s.comm, s.net, s.dataset, s.table)
                _loop(s, step, flag)
                step.close()  # only on the way out every rank takes (as the table's window)
        return s.theta, s.history


@contextlib.contextmanager
def session(cfg, comm=None, out=None, resume=False, force=False, dataset=None, quiet=False, uses_table=False,
            command=""):
    """Collective over ``comm``: check the input, then set up a :class:`Session`: the run
    directory (checked on rank 0, verdict shared; the lock held until the end), the checkpoint
    to resume from, MNIST, the net, theta, the optimizer, the node-shared noise table if
    ``uses_table``, and the run's metadata. A resumed run that is already complete gets no
    data or table (nothing will be computed)."""
    comm = comm if comm is not None else comm_mod.world()
    try:
        checkpoint = _prepare_out_dir(comm, out, resume, force, cfg.to_dict()) if out else None
        net = nets.build(cfg.net.arch)
        theta = net.init_theta(cfg.net.init_seed, cfg.net.init)
        opt = optim.build(cfg.optim, net.n_params)
        history, start = new_history(), 0
        if checkpoint is None and cfg.net.theta_from:  # rank 0 reads: every rank gets theta or the same error
            theta[:] = comm_mod.from_root(comm, lambda: _theta_from(cfg.net.theta_from, net.n_params), io.RunDirError)
        if checkpoint is not None:
            theta[:] = checkpoint["theta"]
            opt.load_state(checkpoint["optimizer"])
            history.update({key: list(values) for key, values in checkpoint["history"].items()})
            start = checkpoint["iteration"]
        meta = _metadata(comm, checkpoint, command, cfg)
        if checkpoint is not None and kinds.finished(cfg.to_dict(), history, start):
            yield Session(cfg, comm, out, net, theta, opt, history, start, None, None, meta, quiet, finished=True)
            return
        if checkpoint is not None:
            log.info("resuming %s at iteration %d", checkpoint["path"], start)
        dataset = dataset or _load_data(comm, cfg)
        table = comm_mod.shared_noise_table(comm, cfg.noise.seed, cfg.noise.size) if uses_table else None
        # Freeing the shared window is collective: only on the ways out that every rank takes
        # (the end, or an outcome all ranks agreed on). Any other exception may have been raised
        # on one rank only, and a collective then would hang the others; the job is aborted instead.
        try:
            yield Session(cfg, comm, out, net, theta, opt, history, start, dataset, table, meta, quiet,
                          state=checkpoint["state"] if checkpoint is not None else {})
        except COLLECTIVE_ERRORS:
            if table is not None:
                table.free()
            raise
        if table is not None:
            table.free()
    finally:
        if out and comm.Get_rank() == 0:
            io.release_lock(out)  # only if this process holds it
            with contextlib.suppress(OSError):
                os.rmdir(out)  # a run that stopped before writing anything leaves no empty directory


def _loop(s, step, flag):
    """Iterations s.start .. cfg.run.iterations - 1: gradient, update, validation, progress,
    checkpoint; every rank alike."""
    cfg, comm, theta, history, out = s.cfg, s.comm, s.theta, s.history, s.out
    rank, n_iter = comm.Get_rank(), cfg.run.iterations
    grad = np.empty_like(theta)
    s.opt = step.optimizer(s.opt)  # sharded ES: each rank keeps the state of its slice
    log.info("%s on %s (%d parameters), %s: iterations %d..%d%s", cfg.run.method, s.net.name, s.net.n_params,
             plural(comm.Get_size(), "rank"), s.start + 1, n_iter, step.describe())
    if s.start == 0 and cfg.run.eval_every:  # curves start at theta_0
        _record_validation(s, 0)
    wall_start, window_start, window_iters = time.perf_counter(), time.perf_counter(), 0
    s.saved = s.start
    for t in range(s.start, n_iter):
        timer = steps.PhaseTimer()
        try:
            rec = {"iteration": t + 1, **step.gradient(theta, t, grad, timer)}
        except comm_mod.RankFailure as err:  # every rank has it: say what is safe on disk
            raise comm_mod.RankFailure(f"{err}. {_kept(s)}") from None
        step.update(s.opt, theta, grad, timer)
        done = t + 1
        faults.point("theta_update", done, rank, theta)
        if (cfg.run.eval_every and done % cfg.run.eval_every == 0) or done == n_iter:
            with timer("validate"):
                _record_validation(s, done)
        rec.update(timer.total())
        for key, value in rec.items():
            history.setdefault(key, []).append(value)
        window_iters += 1
        if rank == 0 and not s.quiet and (done % cfg.run.log_every == 0 or done == n_iter):
            _progress(cfg, history, done, n_iter, time.perf_counter() - window_start, window_iters,
                      time.perf_counter() - wall_start, done - s.start)
            window_start, window_iters = time.perf_counter(), 0
        # A signal may reach the ranks at different iterations; they agree on it here, together,
        # and compare their copies of theta and the optimizer state (hpc_es.drift), before any
        # checkpoint: every checkpoint written is one on which all ranks agreed.
        stop, digests = comm_mod.agree(comm, flag["signum"] if out else 0, drift.state_digest(theta, s.opt.replicated_state()))
        _check_drift(s, done, digests)
        keep = done in config.keep_theta(cfg)
        due = (cfg.run.checkpoint_every and done % cfg.run.checkpoint_every == 0) or done == n_iter or keep
        if out and (due or stop):
            save(s, done, keep_theta=keep)
        if stop:
            raise Preempted.after(stop, done, out)


def _check_drift(s, done, digests):
    """Collective (on the digests every rank gathered alike): raise :class:`comm.StateDrift` on
    every rank if the ranks' states differ, naming the odd ranks, their hosts, and the last
    checkpoint on which all agreed (the newest on disk: ``--resume`` takes it)."""
    if len(set(digests)) == 1:
        return
    line = drift.describe(done, digests, comm_mod.all_hostnames(s.comm))
    if not s.out:
        where = "nothing was written (no --out)"
    elif not s.saved:
        where = f"no checkpoint was written yet in {s.out}: start again with --force"
    else:
        where = (f"the checkpoint of iteration {s.saved} in {s.out} is the last on which all ranks agreed: continue "
                 f"with --resume")
    raise comm_mod.StateDrift(f"{line}; {where}")


def _record_validation(s, done):
    history = s.history
    history["eval_iteration"].append(done)
    history["val_accuracy"].append(validate(s.comm, s.net, s.theta, s.dataset, s.cfg.run.eval_chunk))


def save(s, done, state=None, keep_theta=False):
    """Collective: rank 0 writes the checkpoint (with an experiment's own ``state`` arrays) and
    results of iteration ``done`` (and theta_<done>.h5 with ``keep_theta``); every rank learns the
    outcome, so all continue or all stop (exit 2; 1 for a bug) and nobody runs ahead of a
    checkpoint needed to resume."""
    problem, what = None, "checkpoint"
    opt_state = s.opt.state()  # collective for a sharded optimizer: the slices gathered on rank 0
    if s.comm.Get_rank() == 0:
        try:
            io.save_checkpoint(s.out, done, s.theta, opt_state, s.cfg.to_dict(), s.history, s.meta, state)
            what = "results.h5"
            io.save_results(s.out, s.cfg.to_dict(), {**s.meta, "completed_iterations": done}, s.history, s.theta)
            if keep_theta:
                what = f"theta_{done}.h5"
                io.save_theta(s.out, done, s.cfg.to_dict(), s.meta, s.theta)
        except OSError as err:  # e.g. a full disk: the previous files are intact
            problem = (io.RunDirError, f"{s.out}: writing the {what} of iteration {done} failed ({err}); "
                       f"{_last_good(s.out)} Free space (or move the run) and continue with --resume")
        except Exception as err:  # a bug on rank 0: the others must not wait for it
            problem = (comm_mod.RankFailure, f"rank 0 on {socket.gethostname()}: writing the {what} of iteration "
                       f"{done} failed: {comm_mod.describe_failure(err)}; {_last_good(s.out)}")
    problem = s.comm.bcast(problem, root=0)
    if problem:
        raise problem[0](problem[1])
    s.saved = done


def stopped(cfg, history, start):
    """Why a finished training run has nothing to do (its kind's ``stopped``), in words."""
    return (f"the checkpoint is at iteration {start} and run.iterations = {cfg.run.iterations} (raise "
            "run.iterations with --set to continue training)")


def summary(cfg, history, out, ranks):
    """The line `hpc-es train` prints when a training run ends (its kind's ``summary``)."""
    seconds = sum(history["seconds_total"])
    return (f"final validation accuracy (10,000 test images): {100 * history['val_accuracy'][-1]:.2f}% "
            f"({cfg.net.arch}, {cfg.run.method}/{cfg.optim.name}, {cfg.run.iterations} iterations, "
            f"{plural(ranks, 'rank')}, {seconds:.1f} s of training; results in {os.path.join(out, io.RESULTS)})")


def nothing_to_do(s):
    """A resumed run whose checkpoint had done all it was asked (``s.finished``): change
    nothing, except write results.h5 if a crash left it missing or older than the checkpoint."""
    problem = None
    if s.comm.Get_rank() == 0:
        stopped = kinds.resolve(kinds.of(s.cfg.to_dict()).stopped)
        log.info("%s: nothing to do: %s", s.out, stopped(s.cfg, s.history, s.start))
        try:
            done = io.read_results(os.path.join(s.out, io.RESULTS)).get("completed_iterations")
        except io.RunDirError:
            done = None
        if done != s.start:
            log.warning("%s: results.h5 %s; rewriting it from the checkpoint", s.out,
                        "is missing or unreadable" if done is None else f"stops at iteration {done}")
            try:
                io.save_results(s.out, s.cfg.to_dict(), {**s.meta, "completed_iterations": s.start}, s.history,
                                s.theta)
            except OSError as err:
                problem = f"{s.out}: rewriting results.h5 failed ({err}); the checkpoint is intact"
    problem = s.comm.bcast(problem, root=0)
    if problem:
        raise io.RunDirError(problem)


@contextlib.contextmanager
def signal_flag(enabled):
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


def validate(comm, net, theta, dataset, chunk):
    """Collective over ``comm``: accuracy on the whole test set, split over the ranks."""
    n = len(dataset.test_labels)
    lo, hi = comm_mod.split_range(n, comm.Get_rank(), comm.Get_size())
    mine = net.n_correct(theta, dataset.test_images[lo:hi], dataset.test_labels[lo:hi], chunk) if hi > lo else 0
    return comm_mod.sum_int(comm, mine) / n


def _kept(s):
    if not s.out:
        return "Nothing was written (no --out)"
    if not s.saved:
        return f"No checkpoint was written yet in {s.out}: start again with --force"
    return f"The checkpoint of iteration {s.saved} in {s.out} is intact: continue with --resume"


def _last_good(out):
    try:
        return f"the checkpoint of iteration {io.load_checkpoint(out)['iteration']} is intact."
    except io.RunDirError:
        return "no earlier checkpoint exists."


def _progress(cfg, history, done, n_iter, window_seconds, window_iters, elapsed, iters_this_run):
    rate = window_iters / window_seconds if window_seconds > 0 else float("nan")
    eta = (n_iter - done) * elapsed / max(iters_this_run, 1)
    acc = (f"val. accuracy {100 * history['val_accuracy'][-1]:.2f}% (@{history['eval_iteration'][-1]})"
           if history["val_accuracy"] else "val. accuracy -")
    speed = (f"{rate * cfg.es.n_offspring:,.0f} offspring/s" if cfg.run.method in config.ES_METHODS
             else f"{rate * cfg.data.batch_size:,.0f} images/s")
    rho = f"  rho {100 * history['rho'][-1]:.2f}%" if history.get("rho") else ""
    log.info("iter %d/%d  loss %.4f  %s%s  %s  ETA %s", done, n_iter, history["loss"][-1], acc, rho, speed,
             _hms(eta))


def _hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
        else f"{seconds // 60}m{seconds % 60:02d}s"


def _prepare_out_dir(comm, out, resume, force, cfg_dict):
    """Collective: rank 0 checks the run directory (taking its lock) and reads the checkpoint
    to resume from; every rank gets the verdict and the checkpoint, or raises the same error.

    ``resume``: False, True, or "auto" (resume if the directory holds a checkpoint)."""
    problem, checkpoint = None, None
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
            if resume == "auto":
                resume = io.has_checkpoint(out)
            io.check_out_dir(out, resume, force)
            if force and not resume:
                io.clear_run(out)
            io.remove_stale_temporaries(out)  # we hold the lock: any temporary is a dead writer's
            if resume:
                try:
                    faults.point("checkpoint_read", 0, 0)
                    checkpoint = io.load_checkpoint(out)
                except OSError as err:  # what the loader does not report itself (e.g. EIO)
                    raise io.RunDirError(f"{out}: reading the checkpoint failed ({err})") from None
                if checkpoint["meta"] is None:  # written before checkpoints kept it: take the results'
                    checkpoint["meta"] = _results_meta(out)
        except (io.RunDirError, OSError) as err:
            problem = str(err)
            if locked:
                io.release_lock(out)
    problem, checkpoint = comm.bcast((problem, checkpoint), root=0)
    if problem:
        raise io.RunDirError(problem)
    if checkpoint is not None:
        diff = config.trajectory_diff(checkpoint["config"], cfg_dict)
        if diff:
            raise config.ConfigError(f"--resume {out}: the config differs from the checkpoint's in keys that "
                                     f"change the trajectory: {'; '.join(diff)}")
    return checkpoint


def _theta_from(path, n_params):
    try:
        return io.load_theta(path, n_params)
    except io.RunDirError as err:
        raise io.RunDirError(f"net.theta_from = {err}") from None


def _results_meta(out):
    """The metadata of ``out``'s results.h5 ({} if there is none to read)."""
    try:
        res = io.read_results(os.path.join(out, io.RESULTS))
    except io.RunDirError:
        return {}
    return {k: v for k, v in res.items() if k not in ("config", "history", "theta", "kind", "schema",
                                                     "completed_iterations", "theta_dropped")}


def _load_data(comm, cfg):
    """Collective: rank 0 loads (downloading into the user cache if needed) before the others;
    then the ranks agree, so a directory that one node cannot read stops every rank with the
    same message naming the rank and host, instead of leaving the others waiting."""
    def load(download):
        try:
            faults.point("data_load", 0, comm.Get_rank())
            return data_mod.load_mnist(cfg.data.dir or None, verify=cfg.data.verify, download=download)
        except OSError as err:  # what the loader does not turn into a DataError itself (e.g. EIO)
            raise data_mod.DataError(f"loading MNIST from {data_mod.resolve_data_dir(cfg.data.dir or None)} "
                                     f"failed: {err}") from None

    dataset = comm_mod.from_root(comm, lambda: load("auto"), data_mod.DataError, share=False)
    others = comm_mod.every_rank(comm, lambda: load(False) if comm.Get_rank() else None, data_mod.DataError,
                                 "(rank 0 loaded the data: is the directory visible on every node?)")
    return dataset if comm.Get_rank() == 0 else others




def _sources(comm, cfg):
    """{"rho_from_id": ..., "theta_from_id": ...}: the run ids of the results files the config
    reads (read on rank 0, shared; the files were checked before this)."""
    named = {"rho_from_id": cfg.proxy.rho_from if cfg.run.method == "proxy" else "", "theta_from_id": cfg.net.theta_from}
    return comm_mod.from_root(comm, lambda: {k: io.run_id_of(path) for k, path in named.items() if path},
                              io.RunDirError)


def _metadata(comm, checkpoint, command, cfg):
    """Collective: the run's metadata for its files. A new run: its identity (``run_id``, drawn on
    rank 0), the identities of the runs its config reads (``rho_from_id``, ``theta_from_id``),
    library versions, ranks, hosts, start time, command. A resumed run keeps the metadata it
    started with (a run of a version without ids gets the id :func:`io.run_id` derives for it)
    and appends this resume (time, ranks, hosts, iteration, command) to ``resumes``."""
    import h5py
    import numba

    from hpc_es.threads import blas_threads
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    hosts = comm_mod.hostnames(comm)
    if checkpoint is not None and checkpoint.get("meta"):
        meta = dict(checkpoint["meta"])
        resume = {"time": now, "ranks": comm.Get_size(), "hosts": hosts, "iteration": checkpoint["iteration"],
                  "hpc_es": __version__}
        if command:
            resume["command"] = command
        meta["resumes"] = list(meta.get("resumes", [])) + [resume]
        meta.setdefault("run_id", io.run_id(meta, cfg.to_dict()))
        return meta
    return {
        "run_id": comm.bcast(uuid.uuid4().hex if comm.Get_rank() == 0 else None, root=0), **_sources(comm, cfg),
        "hpc_es": __version__, "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "h5py": h5py.__version__, **comm_mod.library_versions(),
        "ranks": comm.Get_size(), "hosts": hosts, "blas_threads": blas_threads() or 0,
        "numba_threads": numba.get_num_threads(), "started": now, "command": command, "resumes": [],
    }
