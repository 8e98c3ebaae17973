"""Offspring evaluations per second: full forward pass, delta evaluation one offspring per call,
and batched delta evaluation (limited perturbation).

Part 1 (one process): tf_tutorial, a real MNIST mini-batch of 50, buckets of at most 5,000.
For a bucket in every tensor, the time of one offspring by the full forward pass (perturb the
bucket, ``net.loss``), by :meth:`hpc_es.limited.DeltaEvaluator.loss` (one Python call per
offspring) and by :meth:`~hpc_es.limited.DeltaEvaluator.losses` (a tensor's antithetic pairs in
one call: the dense layers' fused numba kernel, the convolutions' stacked pairs), and the mean
over the paper's uniform choice of bucket (643 of the 662 buckets lie in fc1's weight).
Target (issue 4): >= 100x for buckets in the dense layer.

Part 2 (``--iterations`` > 0): the end-to-end limited-perturbation iteration, the real training
loop under ``mpiexec -n RANKS`` with 50,000 pseudo-offspring and mini-batch 50, batched
(``es.delta_batch = true``, the default) and one call per offspring (``false``), validation
off; the median over iterations 2.. of each phase, and the projected wall time of the paper's
2,000 iterations. Target (issue 28): evaluation + communication + aggregation + update
<= 3 s per iteration on 2 ranks.

    python benchmarks/delta_eval.py [--repeats 200] [--iterations 4] [--ranks 2] [--json benchmarks/out/delta_eval.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def part1(args):
    from hpc_es import data, limited, nets, noise
    net = nets.build("tf_tutorial")
    ds = data.load_mnist(args.data or None)
    x, y = ds.train_images[:50], ds.train_labels[:50]
    theta = net.init_theta(0)
    table = noise.build_table(0, 10_000_000)
    buckets = limited.partition(net.layout, args.bucket)
    ev = limited.DeltaEvaluator(net)
    work = theta.copy()
    ev.set_base(theta, x, y)  # allocates the buffers: not part of the pass
    t0 = time.perf_counter()
    for _ in range(5):
        ev.set_base(theta, x, y)
    base_seconds = (time.perf_counter() - t0) / 5
    rows = {}
    print(f"{'tensor':10s} {'buckets':>7s} {'full ms':>9s} {'delta ms':>9s} {'batched ms':>10s} "
          f"{'speedup':>8s} {'batched/delta':>13s}")
    for t, p in enumerate(net.layout):
        ms = np.nonzero(buckets.tensor == t)[0]
        reps = 2 * ((args.repeats if p.name.startswith("fc") else max(6, args.repeats // 20)) // 2)
        picks = ms[(np.arange(reps) // 2) % ms.size]  # antithetic pairs: one bucket, one offset, +-sigma
        offsets = 1000 * (np.arange(reps, dtype=np.int64) // 2)
        scales = np.where(np.arange(reps) % 2 == 0, 0.002, -0.002).astype(np.float32)
        starts, sizes = buckets.start[picks], buckets.size[picks]
        losses = np.empty(reps)

        def full():
            n = max(3, reps // 10)
            for q in range(n):
                s, m = starts[q], sizes[q]
                seg = work[s:s + m]
                seg += scales[q] * table[offsets[q]:offsets[q] + m]
                net.loss(work, x, y)
                seg[:] = theta[s:s + m]
            return n

        def delta():
            for q in range(reps):
                ev.loss(starts[q], sizes[q], table, offsets[q], scales[q])
            return reps

        def batched():
            ev.losses(table, starts, sizes, offsets, scales, losses)
            return reps

        seconds = {}
        for name, fn in (("full", full), ("delta", delta), ("batched", batched)):
            fn()  # warm up (and compile)
            t0 = time.perf_counter()
            n = fn()
            seconds[name] = (time.perf_counter() - t0) / n
        rows[p.name] = {"buckets": int(ms.size), "full_seconds": seconds["full"], "delta_seconds": seconds["delta"],
                        "batched_seconds": seconds["batched"], "speedup": seconds["full"] / seconds["delta"],
                        "batched_speedup": seconds["delta"] / seconds["batched"]}
        print(f"{p.name:10s} {ms.size:7d} {1e3 * seconds['full']:9.3f} {1e3 * seconds['delta']:9.4f} "
              f"{1e3 * seconds['batched']:10.4f} {seconds['full'] / seconds['delta']:7.0f}x "
              f"{seconds['delta'] / seconds['batched']:12.2f}x")
    share = {name: r["buckets"] / buckets.count for name, r in rows.items()}
    mean = {k: sum(share[n] * r[f"{k}_seconds"] for n, r in rows.items()) for k in ("full", "delta", "batched")}
    print(f"uniform bucket choice: {1 / mean['full']:,.0f} (full) vs {1 / mean['delta']:,.0f} (delta) vs "
          f"{1 / mean['batched']:,.0f} (batched) offspring/s per process; base pass (cache theta's activations) "
          f"{1e3 * base_seconds:.1f} ms once per iteration")
    conv = [n for n in rows if n.startswith("conv")]
    conv_draws = sum(share[n] for n in conv)
    conv_time = sum(share[n] * rows[n]["batched_seconds"] for n in conv) / mean["batched"]
    print(f"batched: buckets in the convolutions are {100 * conv_draws:.1f}% of the uniform draws and "
          f"{100 * conv_time:.0f}% of the evaluation time (the layers above them run in full)")
    return {"tensors": rows, "uniform_full_offspring_per_s": 1 / mean["full"],
            "uniform_delta_offspring_per_s": 1 / mean["delta"], "uniform_batched_offspring_per_s": 1 / mean["batched"],
            "uniform_speedup": mean["full"] / mean["delta"], "uniform_batched_speedup": mean["delta"] / mean["batched"],
            "base_pass_seconds": base_seconds, "conv_share_of_draws": conv_draws,
            "conv_share_of_batched_time": conv_time}


PHASES = ("seconds_evaluate", "seconds_communicate", "seconds_aggregate", "seconds_update", "seconds_measure",
          "seconds_total")


def worker(args):
    from hpc_es import comm, config, train
    world = comm.world()
    cfg = config.load("limited_tf_paper", [f"run.iterations={args.iterations}", "run.eval_every=0",
                                           "run.checkpoint_every=0", f"es.delta_batch={args.batched}"])
    _, hist = train.run(cfg, world, quiet=True)
    if world.Get_rank() == 0:
        with open(args.worker, "w") as f:
            json.dump({k: float(np.median(hist[k][1:])) for k in PHASES}, f)


def part2(args):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    rows = {}
    for batched in ("true", "false"):
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            cmd = [mpiexec, "-n", str(args.ranks), sys.executable, "-m", "mpi4py", os.path.abspath(__file__),
                   "--worker", tmp.name, "--iterations", str(args.iterations), "--batched", batched]
            subprocess.run(cmd, check=True, env={**os.environ, "HPC_ES_THREADS": "1"})
            with open(tmp.name) as f:
                row = json.load(f)
        row["seconds_iteration"] = sum(row[k] for k in PHASES[:4])  # evaluate + communicate + aggregate + update
        row["projected_2000_iterations_hours"] = 2000 * row["seconds_total"] / 3600
        row["offspring_per_s"] = 50_000 / row["seconds_total"]
        path = "batched" if batched == "true" else "per_offspring"
        rows[path] = row
        print(f"limited ES, tf_tutorial, N = 50,000, batch 50, {args.ranks} ranks, {path}: "
              f"{row['seconds_iteration']:.2f} s per iteration (evaluate {row['seconds_evaluate']:.2f}, "
              f"aggregate {row['seconds_aggregate']:.3f}, communicate {row['seconds_communicate']:.3f}, "
              f"update {row['seconds_update']:.3f}); {row['offspring_per_s']:,.0f} offspring/s; "
              f"2,000 iterations: {row['projected_2000_iterations_hours']:.1f} h")
    rows["speedup"] = rows["per_offspring"]["seconds_iteration"] / rows["batched"]["seconds_iteration"]
    print(f"batched vs per offspring: {rows['speedup']:.2f}x per iteration")
    return rows


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--bucket", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=4, help="end-to-end iterations (0: skip part 2)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--data", default="", help="MNIST directory (default: $HPC_ES_DATA or the cache)")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "delta_eval.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--batched", default="true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    record = {"machine": machine_record(threads=1), "bucket": args.bucket, "per_tensor": part1(args)}
    if args.iterations > 0:
        record["end_to_end"] = part2(args)
    write_json(args.json, record)


if __name__ == "__main__":
    from hpc_es import threads
    threads.set_threads(int(os.environ.get("HPC_ES_THREADS", "1")))
    main()
