"""What the paper's literal no-mini-batch ES costs against ours (Sec. 4.2): evaluation time per
pseudo-offspring with one random subset per antithetic pair (``es.subset = "pair"``, ours: the
pair's reward difference then measures the perturbation alone) and with one subset per
pseudo-offspring (``"offspring"``, the paper's words).

Cases, one process, one thread, batch 50, interleaved blocks (pair, offspring, pair, ...),
medians over the blocks:
  full      tf_tutorial, full perturbation: every offspring is a full forward pass either way,
            so the subsets should cost nothing extra (a check)
  limited   tf_tutorial, limited perturbation with delta evaluation (buckets <= 5,000, uniform
            draw): activations are cached once per subset, so per-offspring subsets double the
            base passes
The accuracy side of the choice needs training runs (Fig. 4's); this measures compute only.

    python benchmarks/nominibatch_subsets.py [--offspring 40] [--blocks 5] [--json benchmarks/out/nominibatch_subsets.json]

About 3 minutes here.
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
    from hpc_es import config, data, es, limited, nets, noise

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offspring", type=int, default=40, help="pseudo-offspring per block (even)")
    parser.add_argument("--limited-offspring", type=int, default=400, help="limited pseudo-offspring per block")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--table", type=int, default=5_000_000, help="noise table floats")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "nominibatch_subsets.json"))
    args = parser.parse_args()

    ds = data.load_mnist()
    net = nets.build("tf_tutorial")
    theta = net.init_theta(0)
    table = noise.build_table(0, args.table)
    buckets = limited.partition(net.layout, 5000)
    work = np.empty_like(theta)
    rows = {}
    for case, n, extra in (("full", args.offspring, {}),
                           ("limited", args.limited_offspring, {"perturbation": "limited", "bucket_size": 5000})):
        seconds = {"pair": [], "offspring": []}
        for block in range(args.blocks + 1):  # block 0 warms up (JIT, buffers)
            for subset in ("pair", "offspring"):
                cfg = config.from_dict({"run": {"method": "es"}, "noise": {"size": args.table},
                                        "es": {"n_offspring": n, "mode": "nominibatch", "subset": subset,
                                               **extra}}).es
                pop = es.sample_population(cfg, 0, block, net.n_params, args.table, len(ds.train_labels), 50,
                                           buckets if case == "limited" else None)
                rewards = np.empty(n)
                delta = limited.DeltaEvaluator(net) if case == "limited" else None
                start = time.perf_counter()
                es.evaluate(net, theta, table, pop, cfg.sigma, ds.train_images, ds.train_labels, 0, n, rewards,
                            work, delta)
                if block:
                    seconds[subset].append((time.perf_counter() - start) / n)
        pair, per = float(np.median(seconds["pair"])), float(np.median(seconds["offspring"]))
        rows[case] = {"seconds_per_offspring_pair": pair, "seconds_per_offspring_offspring": per,
                      "offspring_over_pair": per / pair}
        print(f"{case:8s} per offspring: pair subsets {1e3 * pair:.3f} ms, offspring subsets {1e3 * per:.3f} ms: "
              f"{per / pair:.2f}x")
    write_json(args.json, {"machine": machine_record(threads=1), "rows": rows, "blocks": args.blocks})


if __name__ == "__main__":
    from hpc_es import threads
    threads.set_threads(int(os.environ.get("HPC_ES_THREADS", "1")))
    main()
