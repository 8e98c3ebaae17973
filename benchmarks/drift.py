"""What the drift check costs (issue 30): the digest of theta and Adam's state, compared across
ranks after every iteration (hpc_es.drift, hpc_es.train), as a fraction of one ES iteration.

For each net, under the launch given (run it on 2 ranks): the median time of (a) the digest of
theta + Adam's m, v and step count, (b) the per-iteration agreement as it is now (one gather of
the preemption signal and the digest), (c) the agreement it replaced (an allreduce of the
signal alone), and (d) one real ES iteration of the training loop (`train.run`, median of the
iterations after the first) at a preset's per-rank work: es_small_local (N = 500, small net) and
es_tf_local (N = 200 on tf_tutorial: 100 offspring per rank on 2 ranks, as es_tf_paper's 10,000
on 100 ranks). The check runs every iteration only if (a + b - c) / d < 1%.

    python -m hpc_es.launchers -n 2 python -m mpi4py benchmarks/drift.py [--json benchmarks/out/drift.json]

Run time: about 1 minute on our 2-core VM.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_record, write_json  # noqa: E402

PRESETS = {"small": ("es_small_local", []), "tf_tutorial": ("es_tf_local", ["noise.size=25000000"])}


def median_seconds(world, action, repeats):
    """Median over ``repeats`` of ``action()``, each timed between barriers, the slowest rank's."""
    times = []
    for _ in range(repeats):
        world.Barrier()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return max(world.allgather(float(np.median(times))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=os.path.join("benchmarks", "out", "drift.json"))
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    from hpc_es import comm, config, drift, nets, optim, train
    world = comm.world()
    rows = []
    for arch, (preset, extra) in PRESETS.items():
        net = nets.build(arch)
        theta = net.init_theta(0)
        opt = optim.Adam(net.n_params, 1e-3)
        opt.step(theta, np.random.default_rng(0).standard_normal(net.n_params).astype(np.float32) * 1e-3)
        digest = median_seconds(world, lambda: drift.state_digest(theta, opt.state()), 50)
        value = drift.state_digest(theta, opt.state())
        agree = median_seconds(world, lambda: comm.agree(world, 0, value), 200)
        before = median_seconds(world, lambda: comm.max_int(world, 0), 200)
        cfg = config.load(preset, [*extra, f"run.iterations={args.iterations}", "run.eval_every=0",
                                   "run.checkpoint_every=0"])
        _, hist = train.run(cfg, world, quiet=True)
        iteration = max(world.allgather(float(np.median(hist["seconds_total"][1:]))))
        extra_seconds = digest + agree - before
        rows.append({"net": arch, "preset": preset, "n_offspring": cfg.es.n_offspring, "n_params": net.n_params,
                     "seconds_digest": digest, "seconds_agree_gather": agree, "seconds_agree_before": before,
                     "seconds_iteration": iteration, "extra_fraction": extra_seconds / iteration})
    if world.Get_rank() == 0:
        print(f"drift check per iteration on {world.Get_size()} ranks (medians; the slowest rank's)")
        print(f"{'net':12s} {'params':>10s} {'digest ms':>10s} {'gather ms':>10s} {'was ms':>8s} "
              f"{'iteration s':>12s} {'extra / iteration':>18s}")
        for r in rows:
            print(f"{r['net']:12s} {r['n_params']:10,d} {1e3 * r['seconds_digest']:10.3f} "
                  f"{1e3 * r['seconds_agree_gather']:10.3f} {1e3 * r['seconds_agree_before']:8.3f} "
                  f"{r['seconds_iteration']:12.3f} {100 * r['extra_fraction']:17.4f}%")
        write_json(args.json, {"machine": machine_record(1, world.Get_size()), "rows": rows})


if __name__ == "__main__":
    main()
