"""Experiments that are not one training run: Table 1 (SGD vs ES proxies over seeds) and the
population needed for a target correlation (Sec. 4). Their reports are in :mod:`hpc_es.report`.

Table 1 (Sec. 4): R seeds of each method (SGD, proxy at each rho) for T iterations on the
same mini-batch sequence per seed; final validation accuracy mean and std per method, the
unpaired two-sided rank-sum test between methods (seeds are independent) and, as a secondary
line, the paired signed-rank test (runs with one seed share their initialisation and
mini-batches). Under MPI the runs are spread over
the ranks, each run serial (`SerialComm`), and the accuracies gathered.

Population for a target correlation (Sec. 4, "about 274,000" for 20%): at fixed theta and
mini-batch, add ``population.step`` pseudo-offspring at a time and re-estimate g_ES from all
of them until rho(g_ES, g_true) reaches the target:

  theta fixed (init or net.theta_from), mini-batch = iteration 0's, g_true once
  block b = 0, 1, ...:  offsets from stream (seed, b, NOISE_STREAM); this rank evaluates its
                        share of the block's offspring; Allgatherv rewards; every rank adds the
                        block's unscaled sum_i sign_i r_i eps_i to its slice of a float64 running
                        sum S (all of S with es.aggregation = "replicated"); Allgatherv S's slices
                        rho = pearson(S, g_true)  (scale-free: S / (N sigma) = g_ES over all N)
"""
import logging
import os
import time

import numpy as np

from hpc_es import analysis, comm as comm_mod, config, es, io, noise, stats, steps, train
from hpc_es.text import plural

log = logging.getLogger(__name__)


def table1(comm, base_cfg, rhos, runs, out, dataset=None):
    """Collective over ``comm``: run Table 1 and write ``out/table1.h5``; returns the summary.
    Run again after an interruption, it keeps the finished runs and resumes the others from
    their checkpoints (``run.checkpoint_every``)."""
    methods = ["sgd"] + [f"proxy_{rho:g}" for rho in rhos]
    tasks = [(m, seed) for seed in range(runs) for m in methods]
    # Each rank runs its own share, serially: a failure (a run directory, a bug) on one rank is
    # agreed on before the gather, so every rank stops with the same message.
    results = comm_mod.every_rank(comm, lambda: _table1_runs(tasks[comm.Get_rank()::comm.Get_size()], base_cfg,
                                                             out, dataset),
                                  train.COLLECTIVE_ERRORS, "(Table 1 as a whole: run the same command again; "
                                  "finished runs are kept, the others resume from their checkpoints.)")
    gathered = {}
    for part in comm.allgather(results):
        gathered.update(part)
    summary = summarize(gathered, methods, runs)
    summary["iterations"] = base_cfg.run.iterations
    summary["net"] = base_cfg.net.arch
    _write_on_root(comm, os.path.join(out, io.TABLE1), lambda: io.save_summary(
        os.path.join(out, io.TABLE1), "table1", summary,
        {f"accuracy/{m}": row["runs"] for m, row in summary["methods"].items()}))
    return summary


def _write_on_root(comm, path, write):
    """Collective: rank 0 calls ``write()``; a failed write (e.g. a full disk) stops every rank
    with the same RunDirError naming ``path``."""
    def attempt():
        try:
            write()
        except OSError as err:
            raise io.RunDirError(f"{path}: writing failed ({err})") from None

    comm_mod.from_root(comm, attempt, io.RunDirError)


def _table1_runs(mine, base_cfg, out, dataset):
    """Table 1's runs ``mine`` [(method, seed)], each serial; {(method, seed): final accuracy}."""
    results = {}
    for method, seed in mine:
        overrides = {"run": {"seed": seed, "experiment": "training"}}  # each arm is a training run
        if method != "sgd":
            overrides["run"]["method"] = "proxy"
            overrides["proxy"] = {"rho": float(method.split("_", 1)[1])}
        cfg_dict = _merge(base_cfg.to_dict(), overrides)
        cfg = config.from_dict(cfg_dict, origin=f"table1 {method} seed {seed}")
        run_dir = os.path.join(out, f"{method}-seed{seed}")
        # "auto": a run finished earlier is kept, one cut short continues from its checkpoint.
        _, hist = train.run(cfg, comm_mod.SerialComm(), out=run_dir, resume="auto", force=True, dataset=dataset,
                            quiet=True)
        results[(method, seed)] = hist["val_accuracy"][-1]
        log.info("table1: %s seed %d -> %.2f%%", method, seed, 100 * hist["val_accuracy"][-1])
    return results


def summarize(accuracies, methods, runs):
    """Mean/std per method and, between every two methods, the unpaired rank-sum test (the
    primary comparison: seeds are independent) and the paired signed-rank test (secondary:
    runs with one seed share initialisation and mini-batches), see :mod:`hpc_es.analysis`."""
    table = {}
    for m in methods:
        acc = np.array([accuracies[(m, s)] for s in range(runs)])
        table[m] = {"mean": float(acc.mean()), "std": float(acc.std(ddof=1)) if runs > 1 else 0.0,
                    "runs": acc.tolist()}
    tests = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            unpaired = stats.rank_sum(table[a]["runs"], table[b]["runs"])
            paired = stats.signed_rank(table[a]["runs"], table[b]["runs"])
            tests[f"{a} vs {b}"] = {"rank_sum": unpaired and unpaired.to_dict(),
                                    "signed_rank": paired and paired.to_dict()}
            if runs > 1:  # None: more than 200 runs per method
                tests[f"{a} vs {b}"]["runs_for_power"] = stats.runs_for_power(table[a]["runs"],
                                                                                 table[b]["runs"])[0]
    return {"methods": table, "tests": tests, "wilcoxon_p": {k: v["signed_rank"] and v["signed_rank"]["p"]
                                                            for k, v in tests.items()}}


def _merge(base, overrides):
    out = {k: dict(v) for k, v in base.items()}
    for section, values in overrides.items():
        out[section].update(values)
    return out




def population(cfg, comm=None, out=None, resume=False, force=False, dataset=None, quiet=False, command=""):
    """Collective over ``comm``: the population-for-rho experiment of ``cfg`` (run.method =
    "population", see the module doc); returns (theta, history) on every rank, the history
    holding the curve ``population_n``, ``population_rho`` and ``population_rho_theory``.
    The arguments are :func:`hpc_es.train.run`'s. A block of offspring is its iteration: with
    ``out``, a checkpoint (the running sum S and the curve) every ``run.checkpoint_every`` blocks
    and on SIGTERM/SIGUSR1 (exit 75); ``--resume`` continues the same curve, bit for bit.
    ``population.target_rho`` and ``max_offspring`` only say where it stops: raise them and resume."""
    with train.session(cfg, comm, out, resume, force, dataset, quiet, True, command) as s:
        if s.finished:  # at its target or cap already: no data, no table
            train.nothing_to_do(s)
            return s.theta, s.history
        with train.signal_flag(enabled=bool(out)) as flag:
            return s.theta, _population_curve(s, flag)


def population_stopped(cfg, history, start):
    """Why a finished population has nothing to do (its kind's ``stopped``), in words."""
    return (f"the population stopped at N = {history['population_n'][-1]} (target rho "
            f"{cfg.population.target_rho:.3f}, cap {cfg.population.max_offspring}; raise "
            "population.target_rho or max_offspring with --set to continue)")


def population_summary(cfg, history, out, ranks):
    """The line `hpc-es train` prints when a population ends (its kind's ``summary``)."""
    n, rho = history["population_n"][-1], history["population_rho"][-1]
    verdict = "reached" if history["population_reached"][0] else "NOT reached"
    return (f"population: rho = {100 * rho:.2f}% at N = {n} pseudo-offspring (target "
            f"{100 * cfg.population.target_rho:.0f}% {verdict}; theory {100 * history['population_rho_theory'][-1]:.2f}%); "
            f"results in {os.path.join(out, 'results.h5')}")


def _population_curve(s, flag):
    cfg, comm, net, theta, out = s.cfg, s.comm, s.net, s.theta, s.out
    rank, size = comm.Get_rank(), comm.Get_size()
    pc, sigma, P, table = cfg.population, cfg.es.sigma, net.n_params, s.table.array
    x, y = s.dataset.train_images, s.dataset.train_labels
    batch = es.minibatch(cfg.run.seed, 0, len(y), cfg.data.batch_size)
    g_true = -net.grad(theta, x[batch], y[batch])  # the reward's gradient (cheap: one backward pass)
    lo, hi = comm_mod.split_range(pc.step, rank, size)
    counts = comm_mod.share_counts(pc.step, size)
    mine, rewards = np.empty(hi - lo), np.empty(pc.step)
    work, block_sum = np.empty_like(theta), np.empty_like(theta)
    member, sign = es.antithetic_members(pc.step)
    # es.aggregation = "sharded": each rank sums its slice of S (every element the same sum in the
    # same order as one rank's), then one Allgatherv of P float64 makes S whole on every rank.
    sharded = cfg.es.aggregation == "sharded" and size > 1
    s_lo, s_hi = comm_mod.split_range(P, rank, size) if sharded else (0, P)
    s_counts = comm_mod.share_counts(P, size)
    # The curve lives in the session's history (a resumed run's so far); training's keys stay empty.
    history = s.history
    for key in [k for k, v in history.items() if not len(v) or k == "population_reached"]:
        del history[key]
    block = s.start
    total = np.array(s.state["population_sum"], np.float64) if block else np.zeros(P, np.float64)
    n_total = block * pc.step
    rho = history["population_rho"][-1] if block else 0.0
    log.info("population on %s (%d parameters), %s: +%d offspring per step until rho >= %.3f "
             "(theory: N = %.0f) or N = %d%s", net.name, P, plural(size, "rank"), pc.step, pc.target_rho,
             2 * analysis.pairs_for_rho(pc.target_rho, P), pc.max_offspring,
             f"; resuming at N = {n_total}" if block else "")
    while n_total < pc.max_offspring and rho < pc.target_rho:
        t0 = time.perf_counter()
        offsets = noise.sample_offsets(es.stream(cfg.run.seed, block, es.NOISE_STREAM), pc.step // 2, P, cfg.noise.size)
        pop = es.Population(offsets, member, sign, batch)
        es.evaluate(net, theta, table, pop, sigma, x, y, lo, hi, mine, work)
        comm_mod.allgatherv(comm, mine, rewards, counts)
        steps.check_finite(rewards, block, cfg, "rewards")
        es.aggregate(table, offsets, es.perturbation_sums(rewards, pop), block_sum[s_lo:s_hi], lo=s_lo)
        total[s_lo:s_hi] += block_sum[s_lo:s_hi]
        if sharded:
            comm_mod.allgatherv(comm, total[s_lo:s_hi], total, s_counts)
        n_total += pc.step
        block += 1
        rho = analysis.pearson(total, g_true)
        theory = float(analysis.expected_rho(n_total / 2, P))
        for key, value in (("population_n", n_total), ("population_rho", rho), ("population_rho_theory", theory),
                           ("seconds_total", time.perf_counter() - t0)):
            history.setdefault(key, []).append(value)
        if rank == 0 and not s.quiet and (block % cfg.run.log_every == 0 or rho >= pc.target_rho):
            log.info("N = %d  rho %.2f%%  theory %.2f%%  %.0f offspring/s", n_total, 100 * rho, 100 * theory,
                     pc.step / history["seconds_total"][-1])
        # As in training: the ranks agree on a signal, then checkpoint (S is the whole state) and stop.
        stop = comm_mod.max_int(comm, flag["signum"]) if out else 0
        if out and (stop or (cfg.run.checkpoint_every and block % cfg.run.checkpoint_every == 0)):
            train.save(s, block, {"population_sum": total})
        if stop:
            raise train.Preempted.after(stop, block, out)
    history["population_reached"] = [int(rho >= pc.target_rho)]
    if out:  # the verdict goes into the results (and the last checkpoint, unless the loop's save was this one)
        train.save(s, block, {"population_sum": total})
    return history
