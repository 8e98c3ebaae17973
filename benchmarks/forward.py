"""Forward / backward throughput of the paper's two CNNs, against the same-run GEMM rate.

Measures, for `tf_tutorial` (3,274,634 parameters) and `small` (28,938), at batch 50:
  * forward and forward+backward images/s and GEMM GFLOP/s,
  * "offspring evaluations per second": theta + sigma * eps (eps a slice of a noise table,
    read in place) followed by a forward pass of the 50-image mini-batch, as one ES
    pseudo-offspring costs a worker (Sec. 2),
and in the same run, at the same thread count, numpy's float32 GEMM rate (a 2048^3 product,
and each net's own GEMM shapes), so the nets' rates are reported as a fraction of it.
Target (issue 2): forward+backward of tf_tutorial >= 50% of the square-GEMM rate.

    python benchmarks/forward.py [--threads 1] [--repeats 20] [--json benchmarks/out/forward.json]

Run time: about one minute on one core.
"""
import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, default=1, help="BLAS and numba threads (default 1)")
parser.add_argument("--repeats", type=int, default=20, help="timed repeats per measurement")
parser.add_argument("--batch", type=int, default=50, help="mini-batch size (paper: 50)")
parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "out", "forward.json"))
args = parser.parse_args()
os.environ["HPC_ES_THREADS"] = str(args.threads)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gemm_rate, machine_record, time_call, write_json  # noqa: E402

from hpc_es import nets  # noqa: E402


def bench_net(net, batch, repeats, noise):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, batch)
    theta = net.init_theta(seed=0)
    grad = np.empty_like(theta)
    offspring = np.empty_like(theta)
    sigma = np.float32(0.002)

    start = time.perf_counter()
    net.loss_and_grad(theta, x, y, out=grad)  # first call: JIT compile or cache load
    first_call = time.perf_counter() - start

    def evaluate_offspring():
        idx = int(rng.integers(0, noise.size - net.n_params + 1))
        np.multiply(noise[idx:idx + net.n_params], sigma, out=offspring)
        np.add(offspring, theta, out=offspring)
        net.loss(offspring, x, y)

    fwd, _ = time_call(lambda: net.loss(theta, x, y), repeats, warmup=2)
    fwdbwd, _ = time_call(lambda: net.loss_and_grad(theta, x, y, out=grad), repeats, warmup=2)
    off, _ = time_call(evaluate_offspring, repeats, warmup=2)
    shapes = []
    for layer in net.layers:
        if hasattr(layer, "k"):
            shapes.append((batch * layer.height * layer.width, layer.k * layer.k * layer.c_in, layer.c_out))
        else:
            shapes.append((batch, layer.n_in, layer.n_out))
    f_fwd, f_all = net.flops_per_image() * batch, net.flops_per_image(backward=True) * batch
    own = sum(2 * m * k * n for m, k, n in shapes) / sum(
        2 * m * k * n / gemm_rate(m, k, n, repeats) for m, k, n in shapes)
    return {
        "n_params": net.n_params, "batch": batch, "first_call_seconds": first_call,
        "forward_seconds": fwd, "forward_images_per_s": batch / fwd, "forward_gflops": f_fwd / fwd / 1e9,
        "fwdbwd_seconds": fwdbwd, "fwdbwd_images_per_s": batch / fwdbwd, "fwdbwd_gflops": f_all / fwdbwd / 1e9,
        "offspring_seconds": off, "offspring_per_s": 1 / off,
        "gemm_shapes": shapes, "own_shapes_gemm_gflops": own,
    }


def main():
    machine = machine_record(args.threads)
    square = gemm_rate(2048, 2048, 2048, args.repeats)
    noise = np.random.default_rng(2).standard_normal(8_000_000, dtype=np.float32)
    results = {"machine": machine, "square_gemm_gflops": square, "nets": {}}
    print(f"{machine['cpu']}, {args.threads} thread(s); float32 GEMM 2048^3: {square:.1f} GFLOP/s")
    header = (f"{'net':12s} {'fwd img/s':>10s} {'fwd GF/s':>9s} {'f+b img/s':>10s} {'f+b GF/s':>9s} "
              f"{'f+b/GEMM':>9s} {'offspring/s':>12s} {'own-shape GEMM':>15s} {'JIT/load s':>10s}")
    print(header)
    for name in ("tf_tutorial", "small"):
        r = bench_net(nets.build(name), args.batch, args.repeats, noise)
        r["fwdbwd_fraction_of_gemm"] = r["fwdbwd_gflops"] / square
        r["forward_fraction_of_gemm"] = r["forward_gflops"] / square
        results["nets"][name] = r
        print(f"{name:12s} {r['forward_images_per_s']:10.0f} {r['forward_gflops']:9.1f} "
              f"{r['fwdbwd_images_per_s']:10.0f} {r['fwdbwd_gflops']:9.1f} "
              f"{100 * r['fwdbwd_fraction_of_gemm']:8.1f}% {r['offspring_per_s']:12.1f} "
              f"{r['own_shapes_gemm_gflops']:11.1f} GF/s {r['first_call_seconds']:10.2f}")
    tf = results["nets"]["tf_tutorial"]
    verdict = "met" if tf["fwdbwd_fraction_of_gemm"] >= 0.5 else "NOT met"
    print(f"target tf_tutorial forward+backward >= 50% of GEMM: {100 * tf['fwdbwd_fraction_of_gemm']:.1f}% ({verdict})")
    write_json(args.json, results)


main()
