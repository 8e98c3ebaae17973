"""Offspring evaluations per second with and without delta evaluation (limited perturbation).

Part 1 (one process): tf_tutorial, a real MNIST mini-batch of 50, buckets of at most 5,000.
For a bucket in every tensor, the time of one offspring by the full forward pass (perturb the
bucket, ``net.loss``) and by :class:`hpc_es.limited.DeltaEvaluator`, their ratio, and the
mean over the paper's uniform choice of bucket (643 of the 662 buckets lie in fc1's weight).
Target (issue 4): >= 100x for buckets in the dense layer.

Part 2 (``--iterations`` > 0): the end-to-end limited-perturbation iteration, the real training
loop under ``mpiexec -n RANKS`` with 50,000 pseudo-offspring and mini-batch 50, and the
projected wall time of the paper's 2,000 iterations.

    python benchmarks/delta_eval.py [--repeats 200] [--iterations 3] [--ranks 2] [--json benchmarks/out/delta_eval.json]
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
    t0 = time.perf_counter()
    for _ in range(5):
        ev.set_base(theta, x, y)
    base_seconds = (time.perf_counter() - t0) / 5
    rows = {}
    print(f"{'tensor':10s} {'buckets':>7s} {'full ms':>9s} {'delta ms':>9s} {'speedup':>8s}")
    for t, p in enumerate(net.layout):
        ms = np.nonzero(buckets.tensor == t)[0]
        reps = args.repeats if p.name.startswith("fc") else max(5, args.repeats // 20)
        picks = ms[np.arange(reps) % ms.size]

        def full():
            for q, m in enumerate(picks[:max(3, reps // 10)]):
                s, n = buckets.start[m], buckets.size[m]
                seg = work[s:s + n]
                seg += 0.002 * table[q:q + n]
                net.loss(work, x, y)
                seg[:] = theta[s:s + n]
            return max(3, reps // 10)

        def delta():
            for q, m in enumerate(picks):
                ev.loss(buckets.start[m], buckets.size[m], table, q, 0.002)
            return reps

        full(), delta()  # warm up
        t0 = time.perf_counter()
        n_full = full()
        full_s = (time.perf_counter() - t0) / n_full
        t0 = time.perf_counter()
        n_delta = delta()
        delta_s = (time.perf_counter() - t0) / n_delta
        rows[p.name] = {"buckets": int(ms.size), "full_seconds": full_s, "delta_seconds": delta_s,
                        "speedup": full_s / delta_s}
        print(f"{p.name:10s} {ms.size:7d} {1e3 * full_s:9.3f} {1e3 * delta_s:9.4f} {full_s / delta_s:7.0f}x")
    share = {name: r["buckets"] / buckets.count for name, r in rows.items()}
    mean_full = sum(share[n] * r["full_seconds"] for n, r in rows.items())
    mean_delta = sum(share[n] * r["delta_seconds"] for n, r in rows.items())
    print(f"uniform bucket choice: {1 / mean_full:,.0f} vs {1 / mean_delta:,.0f} offspring/s per process "
          f"({mean_full / mean_delta:.0f}x); base pass (cache theta's activations) {1e3 * base_seconds:.1f} ms "
          f"once per iteration")
    return {"tensors": rows, "uniform_full_offspring_per_s": 1 / mean_full,
            "uniform_delta_offspring_per_s": 1 / mean_delta, "uniform_speedup": mean_full / mean_delta,
            "base_pass_seconds": base_seconds}


def worker(args):
    from hpc_es import comm, config, train
    world = comm.world()
    cfg = config.load("limited_tf_paper", [f"run.iterations={args.iterations}", "run.eval_every=0",
                                           "run.checkpoint_every=0"])
    _, hist = train.run(cfg, world, quiet=True)
    if world.Get_rank() == 0:
        keys = ["seconds_evaluate", "seconds_communicate", "seconds_aggregate", "seconds_update", "seconds_total"]
        with open(args.worker, "w") as f:
            json.dump({k: float(np.median(hist[k][1:])) for k in keys}, f)


def part2(args):
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
        cmd = [mpiexec, "-n", str(args.ranks), sys.executable, "-m", "mpi4py", os.path.abspath(__file__),
               "--worker", tmp.name, "--iterations", str(args.iterations)]
        subprocess.run(cmd, check=True, env={**os.environ, "HPC_ES_THREADS": "1"})
        with open(tmp.name) as f:
            row = json.load(f)
    row["projected_2000_iterations_hours"] = 2000 * row["seconds_total"] / 3600
    row["offspring_per_s"] = 50_000 / row["seconds_total"]
    print(f"limited ES, tf_tutorial, N = 50,000, batch 50, {args.ranks} ranks: {row['seconds_total']:.2f} s per "
          f"iteration (evaluate {row['seconds_evaluate']:.2f}, aggregate {row['seconds_aggregate']:.3f}, "
          f"communicate {row['seconds_communicate']:.3f}); {row['offspring_per_s']:,.0f} offspring/s; "
          f"2,000 iterations: {row['projected_2000_iterations_hours']:.1f} h")
    return row


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--bucket", type=int, default=5000)
    parser.add_argument("--iterations", type=int, default=3, help="end-to-end iterations (0: skip part 2)")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--data", default="", help="MNIST directory (default: $HPC_ES_DATA or the cache)")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "delta_eval.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
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
