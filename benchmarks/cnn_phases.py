"""Where a CNN's time goes: each layer's forward and backward pass, the loss, the perturbation,
and one ES pseudo-offspring end to end, for both of the paper's nets, one thread, batch 50.

Every phase is timed through the package's own calls (``layer.forward`` / ``layer.backward``
on the net's buffers, ``kernels._perturb``, ``es.evaluate`` on 25 antithetic pairs of one
mini-batch), so the same script measures an older checkout too: with ``--compare DIR`` it runs
itself alternately on this checkout and on DIR (e.g. a ``git worktree`` of an earlier commit)
``--rounds`` times and prints the medians side by side, the way the before/after table in
docs/RESULTS.md ("CNN speed against PyTorch") was made:

    git worktree add ../before <commit>
    python benchmarks/cnn_phases.py --compare ../before [--rounds 3] [--json benchmarks/out/cnn_phases.json]

With ``--sweep-chunks`` it times forward and forward+backward of both nets with the
convolutions' image chunks set for im2col chunks of 0.35 ... 3 MB and whole batches, in
interleaved rounds (how ``layers.CHUNK_NBYTES`` was chosen).

Run time: about 70 s per round and checkout; the sweep about 2 minutes.
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(repeats):
    """{net: {phase: median ms}} for the hpc_es importable here."""
    import numpy as np
    from hpc_es import es, kernels, nets
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50)
    table = rng.standard_normal(8_000_000, dtype=np.float32)
    out = {}
    for name in ("tf_tutorial", "small"):
        net = nets.build(name)
        theta = net.init_theta(0)
        grad, work = np.empty_like(theta), np.empty_like(theta)
        net.loss_and_grad(theta, x, y, out=grad)
        xs, scale, ys = net.check_batch(theta, x, y)
        bufs = net._get_buffers(50, theta.dtype, True)
        params, grads = net.views(theta), net.views(grad)
        times = {}

        def timed(phase, fn):
            start = time.perf_counter()
            value = fn()
            times.setdefault(phase, []).append(time.perf_counter() - start)
            return value

        pairs = 25
        member, sign = es.antithetic_members(2 * pairs)
        rewards = np.empty(2 * pairs, np.float32)

        def offspring():
            pop = es.Population(offsets=rng.integers(0, table.size - theta.size + 1, pairs), member=member,
                                sign=sign, batch=np.arange(50))
            es.evaluate(net, theta, table, pop, np.float32(0.002), x, y, 0, 2 * pairs, rewards, work)

        for _ in range(repeats):
            h = xs
            for i, layer in enumerate(net.layers):
                h = timed(f"forward {layer.name}", lambda: layer.forward(
                    params[i][0], params[i][1], h.reshape((50,) + layer.in_shape), bufs[i], scale if i == 0 else 1.0))
            d = bufs[-1].dlogits
            timed("loss", lambda: kernels.softmax_xent(h, ys, d))
            for i in range(len(net.layers) - 1, -1, -1):
                layer = net.layers[i]
                d = d.reshape((50,) + layer.out_shape)
                d = timed(f"backward {layer.name}", lambda: layer.backward(
                    params[i][0], grads[i][0], grads[i][1], d, bufs[i], i > 0))
            timed("forward+backward (loss_and_grad)", lambda: net.loss_and_grad(theta, x, y, out=grad))
            timed("forward (loss)", lambda: net.loss(theta, x, y))
            o = int(rng.integers(0, table.size - theta.size + 1))
            timed("perturb all of theta", lambda: kernels._perturb(theta, table, o, np.float32(0.002), work))
        offspring()
        for _ in range(max(3, repeats // 2)):
            start = time.perf_counter()
            offspring()
            times.setdefault("offspring (es.evaluate, per offspring)", []).append(
                (time.perf_counter() - start) / (2 * pairs))
        out[name] = {phase: 1e3 * float(np.median(s)) for phase, s in times.items()}
    return out


def sweep_chunks(rounds):
    """{net: {(pass, MB): median ms}} with every conv layer's chunk set for ``MB`` of im2col rows."""
    import numpy as np
    from hpc_es import nets
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (50, 28, 28), dtype=np.uint8), rng.integers(0, 10, 50)
    sizes = [0.35, 0.7, 1.0, 1.5, 3.0, None]  # None: the whole batch at once
    out = {}
    for name in ("tf_tutorial", "small"):
        net = nets.build(name)
        theta = net.init_theta(0)
        grad = np.empty_like(theta)
        convs = [layer for layer in net.layers if isinstance(layer, nets.ConvPoolReLU)]
        times = {}
        for _ in range(rounds):
            for mb in sizes:
                for layer in convs:
                    layer.chunk = 50 if mb is None else layer.chunk_for(mb * 2 ** 20)
                net._buffers.clear()
                for what, fn in (("forward", lambda: net.loss(theta, x, y)),
                                 ("forward+backward", lambda: net.loss_and_grad(theta, x, y, out=grad))):
                    fn()
                    seconds = []
                    for _ in range(5):
                        start = time.perf_counter()
                        fn()
                        seconds.append(time.perf_counter() - start)
                    times.setdefault((what, "whole" if mb is None else f"{mb} MB"), []).append(np.median(seconds))
        out[name] = {f"{what} @ {size}": 1e3 * float(np.median(v)) for (what, size), v in times.items()}
        print(f"\n{name} (ms, median of {rounds} interleaved rounds, one thread, batch 50)")
        for key, ms in out[name].items():
            print(f"  {key:32s} {ms:8.2f}")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", help="another checkout to measure alternately with this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=os.path.join(HERE, "out", "cnn_phases.json"))
    parser.add_argument("--sweep-chunks", action="store_true", help="time conv chunk sizes instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sweep_chunks:
        os.environ["HPC_ES_THREADS"] = "1"
        sys.path.insert(0, HERE)
        from _common import machine_record, write_json
        result = sweep_chunks(args.rounds)
        write_json(args.json.replace(".json", "_chunks.json"), {"machine": machine_record(1), "ms": result})
        return
    if args.worker:
        print(json.dumps(measure(args.repeats)))
        return
    trees = {"this": os.path.dirname(HERE)}
    if args.compare:
        trees["compare"] = os.path.abspath(args.compare)
    env = dict(os.environ, HPC_ES_THREADS="1")
    rounds = {label: [] for label in trees}
    for r in range(args.rounds):
        for label, root in (trees.items() if r % 2 == 0 else reversed(list(trees.items()))):
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--repeats", str(args.repeats)],
                                  env=dict(env, PYTHONPATH=root), cwd=root, capture_output=True, text=True, check=True)
            rounds[label].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    import numpy as np
    table = {}
    for label, runs in rounds.items():
        table[label] = {net: {phase: float(np.median([run[net][phase] for run in runs if phase in run[net]]))
                              for phase in runs[0][net]} for net in runs[0]}
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    for net in table["this"]:
        print(f"\n{net} (ms, median of {args.rounds} rounds x {args.repeats} repeats, one thread, batch 50)")
        head = f"{'phase':42s} {'this':>9s}" + (f" {'compare':>9s} {'ratio':>6s}" if args.compare else "")
        print(head)
        for phase, ms in table["this"][net].items():
            line = f"{phase:42s} {ms:9.2f}"
            if args.compare and phase in table["compare"][net]:
                before = table["compare"][net][phase]
                line += f" {before:9.2f} {before / ms:6.2f}"
            print(line)
    write_json(args.json, {"machine": machine_record(1), "trees": trees, "rounds": args.rounds,
                           "repeats": args.repeats, "medians": table})


if __name__ == "__main__":
    main()
