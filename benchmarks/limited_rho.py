"""Predicted correlation of limited-perturbation ES with the true gradient in the paper's limited
setting on tf_tutorial, beside full ES's, from ``limited.expected_correlation`` (our derivation,
first order in sigma; tested against measurement on the small net in tests/test_limited.py).

Paper's settings (Sec. 4.1): limited ES with 50,000 pseudo-offspring (25,000 antithetic pairs)
and buckets of at most 5,000 parameters, against full ES with 10,000 (5,000 pairs). The
gradient is the exact mini-batch gradient (batch 50) at the initial theta and, if given, at a
trained one; medians over mini-batches. A third variant, buckets of <= 5,000 cut from the flat
theta regardless of tensor boundaries (ours, prediction only), shows what that reading would give.

    python benchmarks/limited_rho.py [--theta runs/fig2_tf/seed0/proxy_tf_paper/results.h5] [--batches 10]

Writes benchmarks/out/limited_rho.json. Run time: seconds per mini-batch.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_record, write_json  # noqa: E402

from hpc_es import analysis, data, io, limited, nets  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--theta", help="a results.h5 or checkpoint.h5 of tf_tutorial (a trained theta)")
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--limited-offspring", type=int, default=50_000)
    parser.add_argument("--full-offspring", type=int, default=10_000)
    parser.add_argument("--bucket-size", type=int, default=5_000)
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "out", "limited_rho.json"))
    args = parser.parse_args()
    net = nets.tf_tutorial()
    mnist = data.load_mnist()
    buckets = limited.partition(net.layout, args.bucket_size)
    # A variant the paper's words also allow (ours, for comparison only): buckets cut from the
    # flat theta regardless of tensors, so one bucket can span a weight, a bias and the next layer.
    edges = np.append(np.arange(0, net.n_params, args.bucket_size), net.n_params)
    spanning = limited.Buckets(edges[:-1], np.diff(edges), np.full(edges.size - 1, -1))
    thetas = {"initial": net.init_theta(seed=0)}
    if args.theta:
        thetas["trained"] = io.load_theta(args.theta, net.n_params)
    rng = np.random.default_rng(0)
    n_lim, n_full = args.limited_offspring // 2, args.full_offspring // 2
    result = {"machine": machine_record(1), "settings": vars(args), "buckets": buckets.count, "thetas": {}}
    print(f"tf_tutorial, {buckets.count} buckets of <= {args.bucket_size}; limited {args.limited_offspring:,} "
          f"vs full {args.full_offspring:,} pseudo-offspring; medians over {args.batches} mini-batches of 50")
    for label, theta in thetas.items():
        rows = []
        for _ in range(args.batches):
            idx = rng.choice(mnist.train_images.shape[0], 50, replace=False)
            g = net.grad(theta, mnist.train_images[idx], mnist.train_labels[idx])
            rows.append([limited.expected_correlation(g, buckets, "uniform", n_lim)[0],
                         limited.expected_correlation(g, buckets, "size", n_lim)[0],
                         limited.expected_correlation(g, spanning, "uniform", n_lim)[0],
                         float(analysis.expected_rho(n_full, net.n_params))])
        med = np.median(np.array(rows), axis=0)
        result["thetas"][label] = {"limited_uniform": med[0], "limited_size": med[1], "limited_spanning": med[2],
                                   "full": med[3], "per_batch": rows}
        print(f"{label:8s} theta: limited, uniform draw {100 * med[0]:.2f}%  size-proportional {100 * med[1]:.2f}%"
              f"  buckets spanning tensors (uniform) {100 * med[2]:.2f}%  |  full ES {100 * med[3]:.2f}%")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
