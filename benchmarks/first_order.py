"""First-order ES (issue 27, ours) against real ES: its cost per iteration and its agreement.

Two parts, in one run or apart (``--part``):

  speed      tf_tutorial, N = 10,000 (5,000 antithetic pairs), the real 250,000,000-float table
             (one copy per node), the training loop's own step objects (``steps.build``), no
             measurements. First-order ES: its whole gradient step (one backward pass, the
             5,000/R directional derivatives, Allgatherv of K floats, aggregation, Allgatherv of
             g, L2) timed as it runs in training. Real ES: the same step's evaluation timed on
             --es-offspring offspring per rank and scaled to this rank's N/R (evaluation is N
             forward passes: linear in the count), plus the aggregation and communication that
             are the same code on the same population. Also the two kernels alone on the same
             5,000 offsets: ``kernels.directional_dense`` (eps_k . g) against
             ``kernels.aggregate_dense`` (sum_k w_k eps_k), its transpose.
  agreement  rho(g_ES, g_first_order) on identical populations (same offsets, signs, mini-batch;
             raw fitness, as the paper) at each sigma, on both nets, at the initial theta and at
             a trained one (SGD, --train-small / --train-tf iterations of the sgd_*_local
             presets, or a results file's theta), --populations populations each (seed 1000,
             iterations 0, 1, ...: drawn for this benchmark alone). Real ES's rewards by
             ``es.evaluate`` (float32 forward passes), N = --n-small on the small net and
             --n-tf on tf_tutorial (cost: N forward passes per population; the agreement is a
             per-pair property, about independent of N). Fitted: the order q of 1 - rho ~ c
             sigma^q over the sigmas >= --fit-from. Our expectation: for a smooth (C^3) loss the
             pair's error is the third-order term, so the relative error of g grows as sigma^2
             and 1 - rho as sigma^4; ReLU and max-pool make these nets piecewise linear, and a
             pair whose perturbation moves units across a kink errs by about sigma times the
             share of such units, itself ~ sigma: relative error ~ sigma, 1 - rho ~ sigma^2.
             Below some sigma, float32 rounding of the rewards takes over (error ~ 1/sigma).

    python benchmarks/first_order.py --part agreement                      # ~15 min, one core
    python benchmarks/first_order.py --part speed --json benchmarks/out/first_order_speed_1rank.json
    mpiexec -n 2 python -m mpi4py benchmarks/first_order.py --part speed --json benchmarks/out/first_order_speed_2ranks.json

Targets (issue 27), ratios from one run: first-order >= 100x cheaper per iteration than real
ES; the derivative kernel within 2x of the dense aggregation's time on the same offsets.
Writes JSON (default benchmarks/out/first_order.json). Speed: about 2 minutes per rank count.
"""
import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine_record, time_call, write_json  # noqa: E402

from hpc_es import comm as comm_mod, config, data, es, kernels, nets, noise, steps, train  # noqa: E402


def speed(comm, mnist, args):
    """Seconds per iteration of first-order and real ES (tf_tutorial, N = 10,000) on this comm."""
    rank, size = comm.Get_rank(), comm.Get_size()
    cfg_fo = config.load("fo_tf_paper", ["measure.correlation=false", "measure.sgd_self_correlation=false"])
    cfg_es = config.load("es_tf_paper", ["measure.correlation=false", "measure.sgd_self_correlation=false"])
    net = nets.build("tf_tutorial")
    theta = net.init_theta(0)
    table = comm_mod.shared_noise_table(comm, cfg_fo.noise.seed, cfg_fo.noise.size)
    fo = steps.build(cfg_fo, comm, net, mnist, table)
    real = steps.build(cfg_es, comm, net, mnist, table)
    out = np.empty(net.n_params, np.float32)
    timers = []

    def fo_step():
        timers.append(steps.PhaseTimer())
        fo.gradient(theta, len(timers), out, timers[-1])
        comm.Barrier()

    fo_seconds, _ = time_call(fo_step, args.repeats, sync=comm.Barrier)
    phases = {k: float(np.median([t.seconds[k] for t in timers[1:]])) for k in steps.PHASES if k != "seconds_total"}
    # Real ES: this rank's evaluation of its first --es-offspring offspring, scaled to its share.
    pop = es.sample_population(cfg_es.es, 0, 0, net.n_params, cfg_es.noise.size, len(mnist.train_labels),
                               cfg_es.data.batch_size)
    m = min(args.es_offspring, real.hi - real.lo)
    rewards, work = np.empty(m), np.empty_like(theta)
    per_offspring, _ = time_call(lambda: es.evaluate(net, theta, table.array, pop, 0.002, mnist.train_images,
                                                     mnist.train_labels, real.lo, real.lo + m, rewards, work),
                                 1, sync=comm.Barrier)
    per_offspring /= m
    es_evaluate = per_offspring * (real.hi - real.lo)
    es_seconds = es_evaluate + phases["seconds_aggregate"] + phases["seconds_communicate"] + phases["seconds_update"]
    # The kernels alone, on the same 5,000 offsets (sorted, as both use them) over all of theta.
    k_pop = es.sample_population(cfg_fo.es, 0, 1, net.n_params, cfg_fo.noise.size, 10, 1)
    offsets = np.sort(k_pop.offsets)
    g, d = theta.copy(), np.empty(offsets.size)
    w = np.random.default_rng(0).standard_normal(offsets.size)
    t_dir, _ = time_call(lambda: kernels.directional_dense(table.array, offsets, g, d), args.repeats)
    t_agg, _ = time_call(lambda: kernels.aggregate_dense(table.array, offsets, w, out), args.repeats)
    rec = {"ranks": size, "N": cfg_es.es.n_offspring, "P": net.n_params,
           "first_order_seconds": fo_seconds, "first_order_phases": phases,
           "es_seconds_per_offspring": per_offspring, "es_offspring_timed_per_rank": m,
           "es_evaluate_seconds_scaled": es_evaluate, "es_seconds": es_seconds, "ratio": es_seconds / fo_seconds,
           "kernel_directional_seconds": t_dir, "kernel_aggregate_seconds": t_agg,
           "kernel_ratio": t_dir / t_agg}
    everyone = comm.gather(rec, root=0)
    table.free()
    if rank:
        return None
    worst = max(everyone, key=lambda r: r["first_order_seconds"])  # the iteration waits for the slowest rank
    print(f"\n== speed: tf_tutorial, N = {worst['N']:,}, {size} rank(s), one thread each (median of {args.repeats})")
    print(f"first-order ES: {worst['first_order_seconds']:.2f} s per iteration "
          f"({', '.join(f'{k[8:]} {v:.2f}' for k, v in worst['first_order_phases'].items() if v > 0.0005)})")
    print(f"real ES: {worst['es_seconds_per_offspring'] * 1e3:.1f} ms per offspring (timed on "
          f"{worst['es_offspring_timed_per_rank']} per rank) x {worst['N'] // size:,} per rank = "
          f"{worst['es_evaluate_seconds_scaled']:.0f} s of evaluation; {worst['es_seconds']:.0f} s per iteration")
    print(f"real ES / first-order ES: {worst['ratio']:.0f}x (target >= 100x)")
    print(f"kernels on the same 5,000 offsets: directional {worst['kernel_directional_seconds']:.3f} s, "
          f"aggregation {worst['kernel_aggregate_seconds']:.3f} s: {worst['kernel_ratio']:.2f}x (target <= 2x)")
    return {"ranks": everyone, "ratio": worst["ratio"], "kernel_ratio": max(r["kernel_ratio"] for r in everyone)}


def _trained(arch, mnist, iterations, path):
    """theta after ``iterations`` of the sgd_*_local preset's SGD (or read from a results file)."""
    from hpc_es import io
    net = nets.build(arch)
    if path:
        return io.load_theta(path, net.n_params)
    preset = "sgd_small_local" if arch == "small" else "sgd_tf_local"
    cfg = config.load(preset, [f"run.iterations={iterations}", "run.eval_every=0", "run.checkpoint_every=0"])
    theta, hist = train.run(cfg, comm_mod.SerialComm(), dataset=mnist, quiet=True)
    print(f"{arch}: trained theta, {preset} for {iterations} iterations: {100 * hist['val_accuracy'][-1]:.2f}%")
    return theta


def agreement(mnist, args):
    """rho(g_ES, g_first_order) per net, theta, sigma and population (see module doc)."""
    sigmas = [float(s) for s in args.sigmas.split(",")]
    rows = []
    for arch, n, iters, path in (("small", args.n_small, args.train_small, args.theta_small),
                                 ("tf_tutorial", args.n_tf, args.train_tf, args.theta_tf)):
        net = nets.build(arch)
        thetas = {"initial": net.init_theta(0), "trained": _trained(arch, mnist, iters, path)}
        table = noise.build_table(0, 250_000_000 if arch == "tf_tutorial" else 25_000_000)
        cfg = config.from_dict({"run": {"method": "es"}, "net": {"arch": arch}, "noise": {"size": table.size},
                                "es": {"n_offspring": n}})
        for which, theta in thetas.items():
            for p in range(args.populations):
                pop = es.sample_population(cfg.es, 1000, p, net.n_params, table.size, len(mnist.train_labels), 50)
                x, y = mnist.train_images[pop.batch], mnist.train_labels[pop.batch]
                loss, grad = net.loss_and_grad(theta, x, y, 0.0)
                d = es.directional_derivatives(table, pop, np.ascontiguousarray(grad, np.float32), 0,
                                               pop.offsets.size, np.empty(pop.offsets.size))
                rewards = np.empty(n)
                for sigma in sigmas:
                    es.evaluate(net, theta, table, pop, sigma, mnist.train_images, mnist.train_labels, 0, n, rewards,
                                np.empty_like(theta))
                    g_es = es.gradient(table, pop, es.fitness(rewards, "raw"), sigma, np.empty_like(theta))
                    first = es.first_order_rewards(-loss, -d, pop, sigma)
                    g_fo = es.gradient(table, pop, es.fitness(first, "raw"), sigma, np.empty_like(theta))
                    rho = float(np.corrcoef(g_es.astype(np.float64), g_fo.astype(np.float64))[0, 1])
                    rows.append({"net": arch, "theta": which, "population": p, "sigma": sigma, "N": n, "rho": rho})
                    print(f"{arch:11s} {which:7s} population {p}  sigma {sigma:<6g} rho {rho:.6f}", flush=True)
    summary = []
    print("\n== rho(g_ES, g_first_order), median [min, max] over populations; fitted order of 1 - rho")
    for arch in ("small", "tf_tutorial"):
        for which in ("initial", "trained"):
            sel = [r for r in rows if r["net"] == arch and r["theta"] == which]
            med = {s: float(np.median([r["rho"] for r in sel if r["sigma"] == s])) for s in sigmas}
            fit = [s for s in sigmas if s >= args.fit_from and med[s] < 1]
            order = (float(np.polyfit(np.log(fit), np.log([1 - med[s] for s in fit]), 1)[0])
                     if len(fit) >= 2 else None)
            summary.append({"net": arch, "theta": which, "N": sel[0]["N"], "median": med,
                            "min": {s: min(r["rho"] for r in sel if r["sigma"] == s) for s in sigmas},
                            "max": {s: max(r["rho"] for r in sel if r["sigma"] == s) for s in sigmas},
                            "order": order, "fit_sigmas": fit})
            cells = "  ".join(f"{s:g}: {med[s]:.5f}" for s in sigmas)
            print(f"{arch:11s} {which:7s} N = {sel[0]['N']:,}  {cells}  order "
                  f"{'-' if order is None else f'{order:.2f}'} (sigma >= {args.fit_from:g})")
    return {"rows": rows, "summary": summary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "agreement", "both"), default="both")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--es-offspring", type=int, default=200, help="real ES offspring timed per rank")
    parser.add_argument("--sigmas", default="0.002,0.005,0.01,0.02,0.05,0.1")
    parser.add_argument("--populations", type=int, default=3)
    parser.add_argument("--n-small", type=int, default=1000)
    parser.add_argument("--n-tf", type=int, default=400)
    parser.add_argument("--train-small", type=int, default=1000, help="SGD iterations of the trained theta")
    parser.add_argument("--train-tf", type=int, default=300)
    parser.add_argument("--theta-small", default="", help="results file whose theta is the trained one")
    parser.add_argument("--theta-tf", default="")
    parser.add_argument("--fit-from", type=float, default=0.01, help="smallest sigma of the order's fit")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "first_order.json"))
    args = parser.parse_args()
    comm = comm_mod.world()
    mnist = data.load_mnist()
    record = {"machine": machine_record(threads=1, ranks=comm.Get_size())}
    if args.part in ("speed", "both"):
        record["speed"] = speed(comm, mnist, args)
    if args.part in ("agreement", "both") and comm.Get_rank() == 0:
        record["agreement"] = agreement(mnist, args)
    if comm.Get_rank() == 0:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
