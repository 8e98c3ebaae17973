"""What ES estimates as sigma grows: rho(g_ES, g_true) against rho(g_ES, g_smoothed), small net.

Issue 15, section 3 (the reading notes' Question 2; the blog's view that ES follows the gradient
of the Gaussian-smoothed loss E[f(theta + sigma eps)]). At each theta and sigma, on one
mini-batch (iteration 0's of run seed 0, batch 50):

  g_true      the exact mini-batch gradient at theta;
  g_ES        OpenAI-ES from N pseudo-offspring (antithetic, raw rewards), the same
              perturbations for every sigma;
  g_smoothed  the smoothed loss's gradient, estimated independently of g_ES as the mean exact
              gradient over --ref-pairs antithetic points theta +- sigma eps
              (``analysis.smoothed_gradient``), with its own expected correlation with the
              truth (half-split, Spearman-Brown) so its error is reported, not hidden.

rho(g_ES, g_smoothed) is printed raw and divided by the reference's own correlation with the
truth (the classical correction for attenuation). The finite-difference theory
sqrt(n / (n + P + 1)) is what ES gives on a locally linear loss; "predicted" is our finite-sigma
theory (``analysis.expected_rho_smoothed``) from the pairs' mean squared reward difference and
|g_smoothed|^2.

    python benchmarks/smoothing.py [--theta runs/sgd_small/results.h5] [--sigmas 0.002,0.02,0.05,0.1,0.2]

Writes benchmarks/out/smoothing.json. Run time: about a minute per (theta, sigma) on one core.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_record, write_json  # noqa: E402

from hpc_es import analysis, config, data, es, io, nets, noise  # noqa: E402


def measure(net, theta, mnist, table, sigma, args):
    """One (theta, sigma): the three gradients and their correlations."""
    cfg = config.from_dict({"run": {"method": "es"}, "net": {"arch": net.name},
                            "noise": {"size": table.size}, "es": {"n_offspring": args.offspring, "sigma": sigma}})
    pop = es.sample_population(cfg.es, args.seed, 0, net.n_params, table.size, len(mnist.train_labels),
                               args.batch)
    x, y = mnist.train_images[pop.batch], mnist.train_labels[pop.batch]
    g_true = net.grad(theta, x, y).astype(np.float64)
    t0 = time.perf_counter()
    rewards = np.empty(args.offspring)
    es.evaluate(net, theta, table, pop, sigma, mnist.train_images, mnist.train_labels, 0, args.offspring,
                rewards, np.empty_like(theta))
    g_es = -es.gradient(table, pop, es.fitness(rewards, "raw"), sigma, np.empty_like(theta)).astype(np.float64)
    t_es = time.perf_counter() - t0
    t0 = time.perf_counter()
    rng = np.random.default_rng([args.seed, 99])  # independent of the ES population's stream
    g_smooth, half_r, rho_ref = analysis.smoothed_gradient(lambda p: net.grad(p, x, y), theta, sigma,
                                                           args.ref_pairs, rng)
    t_ref = time.perf_counter() - t0
    raw = analysis.pearson(g_es, g_smooth)
    # our finite-sigma theory: from the pairs' reward differences d = (r+ - r-) / (2 sigma) and
    # |g_smoothed|^2 (the reference's squared norm times its own squared correlation with the truth)
    d = es.perturbation_sums(rewards, pop) / (2 * sigma)
    smooth_sq = float(np.dot(g_smooth, g_smooth)) * rho_ref ** 2
    predicted = analysis.expected_rho_smoothed(args.offspring // 2, net.n_params, float(np.mean(d ** 2)), smooth_sq)
    return {"sigma": sigma, "rho_es_true": analysis.pearson(g_es, g_true), "rho_es_smoothed_raw": raw,
            "rho_es_smoothed": min(raw / rho_ref, 1.0) if rho_ref > 0 else float("nan"),
            "predicted_rho_es_smoothed": predicted, "mean_sq_pair_difference": float(np.mean(d ** 2)),
            "smoothed_sq_norm": smooth_sq, "true_sq_norm": float(np.dot(g_true, g_true)),
            "reference_rho_with_truth": rho_ref, "reference_half_correlation": half_r,
            "rho_smoothed_true": analysis.pearson(g_smooth, g_true),
            "theory": float(analysis.expected_rho(args.offspring // 2, net.n_params)),
            "loss": float(net.loss(theta, x, y)), "reward_std": float(rewards.std()),
            "seconds_es": t_es, "seconds_reference": t_ref}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="small", choices=sorted(nets.ARCHITECTURES))
    parser.add_argument("--theta", help="a results.h5 or checkpoint.h5 with a trained theta of --net")
    parser.add_argument("--sigmas", default="0.002,0.02,0.05,0.1,0.2")
    parser.add_argument("--offspring", type=int, default=4000, help="ES pseudo-offspring N (antithetic)")
    parser.add_argument("--ref-pairs", type=int, default=400, help="antithetic pairs of the smoothed reference")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=int, default=25_000_000, help="noise table floats")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "out", "smoothing.json"))
    args = parser.parse_args()
    try:
        sigmas = [float(s) for s in args.sigmas.split(",")]
    except ValueError:
        parser.error(f"--sigmas {args.sigmas!r}: expected comma-separated numbers")
    if args.offspring < 2 or args.offspring % 2 or args.ref_pairs < 2:
        parser.error("--offspring must be even and >= 2, --ref-pairs >= 2")
    net = nets.build(args.net)
    thetas = {"initial": net.init_theta(seed=0)}
    if args.theta:
        try:
            thetas["trained"] = io.load_theta(args.theta, net.n_params).astype(np.float32)
        except io.RunDirError as err:
            parser.error(f"--theta: {err}")
    mnist = data.load_mnist()
    table = noise.build_table(12345, args.table)
    result = {"machine": machine_record(1), "settings": vars(args), "rows": []}
    print(f"{net.name} (P = {net.n_params:,}), N = {args.offspring:,}, reference {args.ref_pairs} pairs; "
          f"theory sqrt(n/(n+P+1)) = {100 * analysis.expected_rho(args.offspring // 2, net.n_params):.2f}%")
    print("theta    sigma   rho(ES,true)  rho(ES,smoothed) [raw, ref's own rho]  predicted  rho(smoothed,true)  seconds")
    for label, theta in thetas.items():
        for sigma in sigmas:
            row = {"theta": label, **measure(net, theta, mnist, table, sigma, args)}
            result["rows"].append(row)
            print(f"{label:8s} {sigma:<7g} {100 * row['rho_es_true']:8.2f}%   {100 * row['rho_es_smoothed']:8.2f}%"
                  f"  [{100 * row['rho_es_smoothed_raw']:.2f}%, {100 * row['reference_rho_with_truth']:.1f}%]"
                  f"  {100 * row['predicted_rho_es_smoothed']:7.2f}%"
                  f"   {100 * row['rho_smoothed_true']:10.2f}%   {row['seconds_es'] + row['seconds_reference']:6.0f}",
                  flush=True)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
