"""The master cost of Sec. 4.1: aggregating g_ES over a real 250,000,000-float noise table.

Cases, all in one run over one table (built once per node in MPI shared memory):
  read        the machine's streaming read bandwidth: the whole table summed (numba, 16 lanes)
              and ``numpy.sum``; the larger counts
  dense       N = 10,000 perturbations x P = 3,274,634 (tf_tutorial), ``es.aggregate``
              (sort by offset, then :func:`hpc_es.kernels.aggregate_dense`); also the paper's
              10,000 antithetic offspring = 5,000 distinct slices
  numpy       the plain baseline of the dense case: slices stacked 500 at a time into one
              preallocated buffer, one BLAS matrix-vector product per stack (float32,
              accumulated in float64); timed once (it takes about a minute)
  limited     N = 50,000 perturbations, each one bucket of tf_tutorial's partition (at most
              5,000 parameters), ``es.gradient``'s path (group by bucket, then
              :func:`hpc_es.kernels.aggregate_sparse`)

"Effective" rates count N x P x 4 bytes (dense) or the sum of the bucket sizes x 4 bytes
(limited) per second, whether or not those bytes come from memory. Under ``mpiexec -n R``
the aggregation is sharded as in training: each rank computes a contiguous slice of g for
all perturbations, then one Allgatherv assembles g (included in the time); bandwidth is then
measured with all ranks reading at once and summed.

    python benchmarks/aggregation.py [--repeats 3] [--json benchmarks/out/aggregation.json]
    mpiexec -n 2 python -m mpi4py benchmarks/aggregation.py --json benchmarks/out/aggregation_2ranks.json

Targets (issue 4), ratios from one run: dense effective rate >= 1.0x the read bandwidth and
>= 50x the numpy baseline; limited >= 70% of the read bandwidth. The run also measures the
dense loop's in-cache ceiling (all windows inside 64 floats, so nothing comes from memory),
which bounds what any blocking can reach on this core. Paper: 90 s dense vs 1.4 s
limited (64x; 131x in theory). Run time here: about 2 minutes on one rank.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    from hpc_es import comm as comm_mod, es, kernels, limited, nets
    from hpc_es.paper import value
    paper = {"dense_seconds": value("master_dense_s"), "limited_seconds": value("master_limited_s"),
             "speedup": value("master_speedup"), "theory_speedup": value("master_speedup_theory")}

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, default=250_000_000, help="noise table floats")
    parser.add_argument("--dense", type=int, default=10_000, help="dense perturbations")
    parser.add_argument("--limited", type=int, default=50_000, help="limited perturbations")
    parser.add_argument("--bucket", type=int, default=5000, help="largest bucket")
    parser.add_argument("--stack", type=int, default=500, help="slices per numpy stack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) numpy baseline")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "aggregation.json"))
    args = parser.parse_args()

    comm = comm_mod.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    net = nets.build("tf_tutorial")
    P = net.n_params
    t0 = time.perf_counter()
    shared = comm_mod.shared_noise_table(comm, 0, args.table)
    table = shared.array
    say(f"table of {args.table:,} floats built in {time.perf_counter() - t0:.1f} s; {size} rank{'' if size == 1 else 's'}, "
        f"one thread each; medians of {args.repeats}")
    lo, hi = comm_mod.split_range(P, rank, size)
    counts = np.array([b - a for a, b in (comm_mod.split_range(P, r, size) for r in range(size))], np.int64)
    g = np.empty(P, np.float32)

    def timed(fn):
        fn()  # compile / first touch
        seconds = []
        for _ in range(args.repeats):
            comm.Barrier()
            start = time.perf_counter()
            fn()
            comm.Barrier()
            seconds.append(time.perf_counter() - start)
        return float(np.median(seconds))

    def assemble():
        if size > 1:
            comm_mod.allgatherv(comm, g[lo:hi], g, counts)

    rows = {}
    # -- read bandwidth: every rank streams the whole table at once ----------------------
    kernels.read_bandwidth_sum(table[:64])
    bw_numba = size * table.nbytes / timed(lambda: kernels.read_bandwidth_sum(table))
    bw_numpy = size * table.nbytes / timed(lambda: table.sum(dtype=np.float32))
    bandwidth = max(bw_numba, bw_numpy)
    rows["read"] = {"numba_GBps": bw_numba / 1e9, "numpy_GBps": bw_numpy / 1e9, "GBps": bandwidth / 1e9}
    say(f"read bandwidth (all ranks): numba {bw_numba / 1e9:.1f} GB/s, numpy.sum {bw_numpy / 1e9:.1f} GB/s")

    rng = np.random.default_rng(1)  # the same draws on every rank

    def dense_case(k):
        offsets = rng.integers(0, args.table - P + 1, k)
        weights = rng.standard_normal(k)
        seconds = timed(lambda: (es.aggregate(table, offsets, weights, g[lo:hi], lo), assemble()))
        check = _reference_columns(table, offsets, weights, g, rng)
        return seconds, check

    # The same kernel with every window inside a 64-float stretch: all reads hit L1/L2, so this
    # is the most multiply-adds per second the loop can do on this core, memory aside.
    cache_offsets = np.sort(rng.integers(0, 64, args.dense))
    cache_weights = rng.standard_normal(args.dense)
    cache_out = np.empty(16384, np.float32)
    ceiling = args.dense * cache_out.size / timed(
        lambda: kernels.aggregate_dense(table, cache_offsets, cache_weights, cache_out))
    rows["in_cache_ceiling"] = {"GFMAps": ceiling / 1e9}
    say(f"in-cache ceiling of the dense loop: {ceiling / 1e9:.1f} G multiply-adds/s per rank")

    rows["dense"] = _row(*dense_case(args.dense), args.dense * P * 4, bandwidth)
    rows["dense"]["GFMAps_per_rank"] = args.dense * P / size / rows["dense"]["seconds"] / 1e9
    rows["dense_antithetic"] = _row(*dense_case(args.dense // 2), args.dense // 2 * P * 4, bandwidth)
    rows["dense_antithetic"]["note"] = f"{args.dense} antithetic offspring = {args.dense // 2} distinct slices"

    if not args.no_numpy:
        offsets = rng.integers(0, args.table - P + 1, args.dense)
        weights = rng.standard_normal(args.dense)

        stack = np.empty((args.stack, hi - lo), np.float32)  # allocated once: no page faults per stack

        def numpy_dense():
            acc = np.zeros(hi - lo, np.float64)
            for s in range(0, args.dense, args.stack):
                rows = offsets[s:s + args.stack]
                np.stack([table[o + lo:o + hi] for o in rows], out=stack[:rows.size])
                acc += weights[s:s + args.stack].astype(np.float32) @ stack[:rows.size]
            g[lo:hi] = acc
            assemble()

        seconds = float(np.median([_once(comm, numpy_dense) for _ in range(1)]))
        rows["numpy"] = _row(seconds, None, args.dense * P * 4, bandwidth)
        rows["dense"]["speedup_vs_numpy"] = seconds / rows["dense"]["seconds"]
        rows["numpy"]["GFMAps_per_rank_needed_for_50x"] = 50 * args.dense * P / size / seconds / 1e9

    buckets = limited.partition(net.layout, args.bucket)
    ids, offsets = limited.sample(rng, buckets, args.limited, args.table, "uniform")
    weights = rng.standard_normal(args.limited)
    starts, lengths = buckets.start[ids], buckets.size[ids]

    def limited_agg():
        order = np.argsort(starts, kind="stable")
        kernels.aggregate_sparse(table, offsets[order], weights[order], starts[order], lengths[order], lo, g[lo:hi])
        assemble()

    limited_bytes = int(lengths.sum()) * 4
    seconds = timed(limited_agg)
    ref = np.zeros(P)
    for k in np.nonzero(starts == starts[0])[0]:
        ref[starts[k]:starts[k] + lengths[k]] += weights[k] * table[offsets[k]:offsets[k] + lengths[k]]
    sl = slice(starts[0], starts[0] + lengths[0])
    err = float(np.abs(g[sl] - ref[sl]).max() / np.abs(ref[sl]).max())
    rows["limited"] = _row(seconds, err, limited_bytes, bandwidth)
    rows["limited"]["mean_bucket"] = limited_bytes / 4 / args.limited

    ratio = rows["dense"]["seconds"] / rows["limited"]["seconds"]
    theory = args.dense * P / (limited_bytes / 4)
    say(f"\n{'case':18s} {'seconds':>9s} {'eff. GB/s':>10s} {'x read bw':>10s} {'rel. err':>9s}")
    for name in ("dense", "dense_antithetic", "numpy", "limited"):
        if name in rows:
            r = rows[name]
            err = "-" if r["rel_err"] is None else f"{r['rel_err']:.1e}"
            say(f"{name:18s} {r['seconds']:9.3f} {r['effective_GBps']:10.1f} {r['x_bandwidth']:10.2f} {err:>9s}")
    if "numpy" in rows:
        say(f"dense kernel vs numpy chunked dot: {rows['dense']['speedup_vs_numpy']:.0f}x faster (target >= 50x: "
            f"{rows['numpy']['GFMAps_per_rank_needed_for_50x']:.0f} G multiply-adds/s per rank; dense runs at "
            f"{rows['dense']['GFMAps_per_rank']:.0f}, the in-cache ceiling is {ceiling / 1e9:.0f})")
    say(f"dense / limited: {ratio:.1f}x (paper {paper['speedup']:.0f}x: {paper['dense_seconds']:.0f} s vs "
        f"{paper['limited_seconds']} s; work ratio here {theory:.0f}x, paper's theory {paper['theory_speedup']:.0f}x)")
    record = {"machine": machine_record(threads=1, ranks=size), "table_floats": args.table, "P": P,
              "dense_N": args.dense, "limited_N": args.limited, "bucket": args.bucket, "rows": rows,
              "dense_over_limited": ratio, "work_ratio": theory, "paper": paper}
    if rank == 0:
        write_json(args.json, record)
    shared.free()


def _once(comm, fn):
    comm.Barrier()
    start = time.perf_counter()
    fn()
    comm.Barrier()
    return time.perf_counter() - start


def _reference_columns(table, offsets, weights, g, rng, count=64):
    """Largest relative error of g on ``count`` random parameters against a float64 sum."""
    cols = rng.integers(0, g.size, count)
    ref = np.array([np.dot(weights, table[offsets + j].astype(np.float64)) for j in cols])
    return float(np.abs(g[cols] - ref).max() / np.abs(ref).max())


def _row(seconds, err, nbytes, bandwidth):
    return {"seconds": seconds, "effective_GBps": nbytes / seconds / 1e9, "x_bandwidth": nbytes / seconds / bandwidth,
            "rel_err": err}


if __name__ == "__main__":
    main()
