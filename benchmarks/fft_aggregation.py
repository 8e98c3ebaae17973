"""Aggregation by FFT (issue 4's stretch) against the direct kernel, over the real table.

g[j] = sum_k w_k table[o_k + j] is a cross-correlation of the table with the weights placed at
their offsets, so ``hpc_es.noise.TableSpectrum`` computes it with two real FFTs of the table's
length, whatever the number N of perturbations; the direct kernel
(``hpc_es.kernels.aggregate_dense``, offsets sorted) costs N x P multiply-adds. This measures
both on one rank, one thread, P = 3,274,634 (tf_tutorial), at the paper's N = 10,000 and at
the population of the paper's 20%-correlation experiment (~274,000) and at 1,000,000, and the crossover
N* = (FFT seconds) / (direct seconds per perturbation). Errors: largest over 64 random
parameters, relative to the largest |g| there, against a float64 sum.

    python benchmarks/fft_aggregation.py [--table 250000000] [--json benchmarks/out/fft_aggregation.json]

Memory: the table, its spectrum (as large) and three table-sized temporaries, ~5 GB at paper
scale. Run time here: about 5 minutes (the direct sum at N = 1,000,000 alone takes 1-2 minutes).
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
    from hpc_es import kernels, nets, noise, threads

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=int, default=250_000_000, help="noise table floats")
    parser.add_argument("--populations", type=int, nargs="+", default=[10_000, 274_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3, help="median of this many (1 for calls over 20 s)")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "fft_aggregation.json"))
    args = parser.parse_args()
    threads.set_threads(1)

    P = nets.build("tf_tutorial").n_params
    start = time.perf_counter()
    table = noise.build_table(0, args.table)
    print(f"table of {args.table:,} floats built in {time.perf_counter() - start:.1f} s; one thread")
    start = time.perf_counter()
    spectrum = noise.TableSpectrum(table)
    setup = time.perf_counter() - start
    print(f"table spectrum (once per table): {setup:.1f} s, {spectrum.spectrum.nbytes / 2**30:.2f} GiB")

    rng = np.random.default_rng(1)
    direct = np.empty(P, np.float32)
    kernels.aggregate_dense(table[:64], np.zeros(8, np.int64), np.ones(8), np.empty(16, np.float32))  # compile
    rows = []
    for n in args.populations:
        offsets = np.sort(rng.integers(0, args.table - P + 1, n))
        weights = rng.standard_normal(n)
        t_direct = _median_time(lambda: kernels.aggregate_dense(table, offsets, weights, direct), args.repeats)
        out = {}
        t_fft = _median_time(lambda: out.__setitem__("g", spectrum.aggregate(offsets, weights, P)), args.repeats)
        g = out["g"]
        cols = rng.integers(0, P, 64)
        ref = np.array([np.dot(weights, table[offsets + j].astype(np.float64)) for j in cols])
        scale = np.abs(ref).max()
        row = {"N": n, "direct_seconds": t_direct, "fft_seconds": t_fft, "fft_over_direct": t_direct / t_fft,
               "crossover_N": n * t_fft / t_direct, "direct_rel_err": float(np.abs(direct[cols] - ref).max() / scale),
               "fft_rel_err": float(np.abs(g[cols] - ref).max() / scale)}
        rows.append(row)
        print(f"N = {n:>9,}: direct {t_direct:7.2f} s, FFT {t_fft:6.2f} s ({row['fft_over_direct']:.2f}x), "
              f"crossover N* = {row['crossover_N']:,.0f}; rel. err direct {row['direct_rel_err']:.1e}, "
              f"FFT {row['fft_rel_err']:.1e}")
    write_json(args.json, {"machine": machine_record(threads=1), "table_floats": args.table, "P": P,
                           "spectrum_seconds": setup, "rows": rows})


def _median_time(fn, repeats):
    seconds = []
    while len(seconds) < repeats and not (seconds and seconds[0] > 20):
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


if __name__ == "__main__":
    main()
