"""Time breakdown of one OpenAI-ES iteration (Sec. 2) on 1 and 2 MPI ranks, both nets.

For each net at N = 1,000 pseudo-offspring (500 antithetic pairs, batch 50), runs the real
training loop (`hpc_es.train.run`) under `mpiexec -n 1` and `mpiexec -n 2`, one thread per
rank, and reports per iteration: evaluate (this rank's offspring), communicate (the reward
Allgatherv, including waiting for the slowest rank), aggregate (g_ES over the noise table),
update (Adam), plus offspring evaluations per second in total and per rank. Targets (issue 3):
2-rank throughput >= 1.8x the 1-rank throughput; communication < 2% of the iteration.

    python benchmarks/es_iteration.py [--iterations 4] [--nets small,tf_tutorial] [--json benchmarks/out/es_iteration.json]

The first iteration (numba cache load, first touches) is left out of the medians.
Run time: about 3 minutes here (tf_tutorial dominates: ~17 s per iteration on one rank).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args):
    import numpy as np
    from hpc_es import comm, config, train
    world = comm.world()
    cfg = config.load("es_small_local", [
        f"net.arch={args.net}", f"es.n_offspring={args.n_offspring}", "noise.size=25000000",
        f"run.iterations={args.iterations}", "run.eval_every=0", "run.checkpoint_every=0"])
    _, hist = train.run(cfg, world, quiet=True)
    if world.Get_rank() == 0:
        keys = ["seconds_evaluate", "seconds_communicate", "seconds_aggregate", "seconds_update"]
        med = {k: float(np.median(hist[k][1:])) for k in keys}
        # Validation runs once at the very end; it is not part of an iteration's cost here.
        total = sum(med.values())
        with open(args.worker, "w") as f:
            json.dump({"ranks": world.Get_size(), **med, "seconds_iteration": total,
                       "offspring_per_s": args.n_offspring / total}, f)


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--n-offspring", type=int, default=1000)
    parser.add_argument("--nets", default="small,tf_tutorial")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "es_iteration.json"))
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    record = {"machine": machine_record(threads=1, ranks=args.ranks), "n_offspring": args.n_offspring, "nets": {}}
    print(f"N = {args.n_offspring}, batch 50, one thread per rank; medians over iterations 2..{args.iterations}")
    print(f"{'net':12s} {'ranks':>5s} {'evaluate':>9s} {'comm':>8s} {'aggregate':>9s} {'update':>8s} "
          f"{'iter s':>8s} {'comm %':>7s} {'offspr/s':>9s} {'/rank':>7s} {'speedup':>8s}")
    for net in args.nets.split(","):
        rows = {}
        for ranks in [int(r) for r in args.ranks.split(",")]:
            with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
                cmd = [mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", os.path.abspath(__file__),
                       "--net", net, "--worker", tmp.name, "--iterations", str(args.iterations),
                       "--n-offspring", str(args.n_offspring)]
                subprocess.run(cmd, check=True, env={**os.environ, "HPC_ES_THREADS": "1"})
                with open(tmp.name) as f:
                    row = json.load(f)
            row["comm_fraction"] = row["seconds_communicate"] / row["seconds_iteration"]
            row["speedup_vs_1_rank"] = row["offspring_per_s"] / rows[1]["offspring_per_s"] if 1 in rows else 1.0
            rows[ranks] = row
            print(f"{net:12s} {ranks:5d} {row['seconds_evaluate']:9.3f} {row['seconds_communicate']:8.4f} "
                  f"{row['seconds_aggregate']:9.3f} {row['seconds_update']:8.4f} {row['seconds_iteration']:8.3f} "
                  f"{100 * row['comm_fraction']:6.2f}% {row['offspring_per_s']:9.1f} "
                  f"{row['offspring_per_s'] / ranks:7.1f} {row['speedup_vs_1_rank']:7.2f}x")
        record["nets"][net] = rows
    write_json(args.json, record)


if __name__ == "__main__":
    main()
