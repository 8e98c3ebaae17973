"""Checkpoint cost at paper scale, as a fraction of the iteration time.

Writes the checkpoint of a tf_tutorial run at iteration 2,000 (theta: 3,274,634 float32, Adam's
m and v, the history of 2,000 iterations) and its results file the way training does
(``hpc_es.io``: temporary file, SHA-256, fsync, rename, keeping the previous checkpoint), then
loads it back (digest verified). The iteration time at paper scale is projected from the
per-offspring evaluation time measured here (tf_tutorial, batch 50, one thread) and the
sharded dense aggregation measured by benchmarks/aggregation.py (``--aggregate-seconds``),
for es_tf_paper (N = 10,000, 100 ranks, checkpoint every 50 iterations) and for 500 ranks.

    python benchmarks/checkpoint.py [--dir DIR] [--repeats 5] [--json benchmarks/out/checkpoint.json]

``--dir`` should be on the file system the runs will use (a cluster's scratch); default: a
temporary directory on this machine's disk.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, time_call, write_json
    from hpc_es import data, io, nets, optim, config, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--aggregate-seconds", type=float, default=1.2,
                        help="one rank's dense aggregation of N = 10,000 over all of theta (aggregation.py)")
    parser.add_argument("--json", default=os.path.join(HERE, "out", "checkpoint.json"))
    args = parser.parse_args()

    net = nets.build("tf_tutorial")
    cfg = config.load("es_tf_paper")
    theta = net.init_theta(0)
    opt = optim.build(cfg.optim, net.n_params)
    opt.step(theta, np.full_like(theta, 1e-3))
    history = train.new_history()
    for key in history:
        history[key] = list(np.random.default_rng(0).random(2000))
    with tempfile.TemporaryDirectory(dir=args.dir or None) as out:
        def save():
            io.save_checkpoint(out, 2000, theta, opt.state(), cfg.to_dict(), history)
            io.save_results(out, cfg.to_dict(), {"completed_iterations": 2000}, history, theta)

        save_s, _ = time_call(save, args.repeats)
        load_s, _ = time_call(lambda: io.load_checkpoint(out), args.repeats)
        sizes = {name: os.path.getsize(os.path.join(out, name)) for name in (io.CHECKPOINT, io.RESULTS)}

    ds = data.load_mnist()
    x, y = ds.train_images[:50], ds.train_labels[:50]
    offspring_s, _ = time_call(lambda: net.loss(theta, x, y), 20)
    rows = {}
    print(f"checkpoint + results of tf_tutorial at iteration 2,000: {sizes[io.CHECKPOINT] / 1e6:.1f} MB + "
          f"{sizes[io.RESULTS] / 1e6:.1f} MB, written in {save_s:.3f} s, checkpoint loaded in {load_s:.3f} s; "
          f"one offspring evaluated in {1e3 * offspring_s:.1f} ms")
    print(f"{'ranks':>6s} {'iteration s (projected)':>24s} {'every 50':>9s} {'every 1':>8s}")
    for ranks in (100, 500):
        iteration = 10_000 / ranks * offspring_s + args.aggregate_seconds / ranks
        rows[ranks] = {"iteration_seconds_projected": iteration,
                       "overhead_every_50": save_s / (50 * iteration), "overhead_every_1": save_s / iteration}
        print(f"{ranks:6d} {iteration:24.2f} {100 * rows[ranks]['overhead_every_50']:8.2f}% "
              f"{100 * rows[ranks]['overhead_every_1']:7.1f}%")
    write_json(args.json, {"machine": machine_record(threads=1), "save_seconds": save_s, "load_seconds": load_s,
                           "bytes": sizes, "offspring_seconds": offspring_s, "projection": rows})


if __name__ == "__main__":
    from hpc_es import threads
    threads.set_threads(1)
    main()
