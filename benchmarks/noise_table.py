"""Build time and memory of the shared noise table (issue 3): one copy per node, not per rank.

Builds the default 250,000,000-float (1 GB) table with `hpc_es.comm.shared_noise_table` on
each rank count given, every rank touching every page (as offspring evaluation does), and
reports per rank the build time, the resident set size (RSS, counts shared pages in full in
every process) and the proportional set size (PSS, shared pages divided among the processes
mapping them), from /proc/self/smaps_rollup (Linux).

    python benchmarks/noise_table.py [--size 250000000] [--ranks 1,2]

Run time: about 10 s here.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _mem_mib():
    with open("/proc/self/smaps_rollup") as f:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[-1] == "kB"}
    return fields["Rss"] / 1024, fields["Pss"] / 1024


def worker(args):
    import numpy as np
    from hpc_es import comm
    world = comm.world()
    rss0, pss0 = _mem_mib()
    world.Barrier()
    start = time.perf_counter()
    shared = comm.shared_noise_table(world, 12345, args.size)
    built = time.perf_counter() - start
    checksum = float(np.sum(shared.array[::4096], dtype=np.float64))
    shared.array.max()  # touch every page
    world.Barrier()
    rss, pss = _mem_mib()
    rows = world.gather({"rank": world.Get_rank(), "build_seconds": built, "rss_mib": rss - rss0,
                         "pss_mib": pss - pss0, "checksum": checksum}, root=0)
    if world.Get_rank() == 0:
        with open(args.worker, "w") as f:
            json.dump(rows, f)
    shared.free()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250_000_000)
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "noise_table.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = mpiexec if os.path.exists(mpiexec) else "mpiexec"
    table_mib = args.size * 4 / 2**20
    record = {"machine": machine_record(threads=1, ranks=args.ranks), "size": args.size, "runs": {}}
    print(f"noise table: {args.size:,} float32 = {table_mib:,.0f} MiB")
    print(f"{'ranks':>5s} {'rank':>4s} {'build s':>8s} {'RSS MiB':>8s} {'PSS MiB':>8s} {'PSS/table':>9s}")
    for ranks in [int(r) for r in args.ranks.split(",")]:
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            subprocess.run([mpiexec, "-n", str(ranks), sys.executable, "-m", "mpi4py", os.path.abspath(__file__),
                            "--size", str(args.size), "--worker", tmp.name], check=True)
            with open(tmp.name) as f:
                rows = json.load(f)
        assert len({r["checksum"] for r in rows}) == 1, "ranks see different tables"
        for r in rows:
            print(f"{ranks:5d} {r['rank']:4d} {r['build_seconds']:8.2f} {r['rss_mib']:8.0f} {r['pss_mib']:8.0f} "
                  f"{r['pss_mib'] / table_mib:9.2f}")
        record["runs"][ranks] = rows
    write_json(args.json, record)


if __name__ == "__main__":
    main()
