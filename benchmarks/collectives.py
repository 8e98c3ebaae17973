"""The collectives of one training iteration, timed on p ranks, for the alpha-beta model of
:class:`hpc_es.costs.Network`.

Per iteration the loop calls: ``comm.allgatherv`` of the N rewards (float64), the sharded
gradient's ``comm.allgatherv`` of P floats (float32, in place), ``comm.max_int`` (the signal
agreement, an allreduce of one integer) and, when validating, ``comm.sum_int`` (the same).
Each is timed here through those functions, at the sizes of the paper-scale presets, as the
median over repeats of the slowest rank's time (a barrier before each repeat).

    for p in 2 3 4 6 8; do mpiexec -n $p python -m mpi4py benchmarks/collectives.py; done
    python benchmarks/scaling.py        # fits alpha and beta, projects, writes the table and plot

Ranks beyond the cores are oversubscribed (MPICH then spins on shared cores: the times are
upper bounds for a cluster's intra-node collectives, and say nothing of a network).
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# (collective, element type, sizes): rewards of N = 1,000 / 10,000 / 50,000 offspring; the
# gradient of the small net and of tf_tutorial
CASES = [("allgatherv", np.float64, (1_000, 10_000, 50_000)), ("allgatherv", np.float32, (28_938, 3_274_634)),
         ("allreduce", np.int64, (1,))]


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    from hpc_es import comm as comm_mod

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", help="default: benchmarks/out/collectives-p<ranks>.json")
    args = parser.parse_args()
    comm = comm_mod.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    rows = []
    for kind, dtype, sizes in CASES:
        for n in sizes:
            counts = comm_mod.share_counts(n, size)
            out = np.zeros(n, dtype)
            lo, hi = comm_mod.split_range(n, rank, size)
            if kind == "allgatherv":
                def call():
                    comm_mod.allgatherv(comm, out[lo:hi], out, counts)
            else:
                def call():
                    comm_mod.max_int(comm, rank)
            repeats = args.repeats if n * np.dtype(dtype).itemsize < 1e6 else max(3, args.repeats // 4)
            seconds = []
            for _ in range(repeats + 1):
                comm.Barrier()
                t0 = time.perf_counter()
                call()
                seconds.append(comm.allreduce(time.perf_counter() - t0, op=_max()))
            median = float(np.median(seconds[1:]))
            rows.append({"collective": kind, "dtype": np.dtype(dtype).name, "elements": n,
                         "bytes": n * np.dtype(dtype).itemsize, "seconds": median})
            if rank == 0:
                print(f"p = {size}: {kind:10s} {n:>10,} x {np.dtype(dtype).name:7s} {1e6 * median:10.1f} us")
    if rank == 0:
        path = args.json or os.path.join(HERE, "out", f"collectives-p{size}.json")
        write_json(path, {"ranks": size, "oversubscribed": size > (os.cpu_count() or 1), "rows": rows,
                          "machine": machine_record(1, size)})


def _max():
    from mpi4py import MPI
    return MPI.MAX


if __name__ == "__main__":
    main()
