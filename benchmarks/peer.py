"""hpc_es against PyTorch's CPU build on the paper's two CNNs, side by side in one process.

What ES spends its time on, each framework doing it the way it does it best, same batch (50),
same images, same thread count:
  * offspring: one ES pseudo-offspring as a worker evaluates it, timed over 25 antithetic pairs
    on one mini-batch. hpc_es: ``es.evaluate``, the training loop's own call (its set-up per
    mini-batch, about 10 ms, is amortised over the 50; in training over a rank's whole share,
    e.g. 500 offspring at N = 1,000 on 2 ranks). PyTorch: ``torch.add(theta, table slice,
    alpha=+-sigma, out=work)`` into a preallocated flat vector whose views are the parameters
    (no copy into modules at all), then a functional forward + cross-entropy under
    ``torch.inference_mode()``, on float32 images already in NCHW (hpc_es reads uint8 pixels);
  * forward: loss at theta;
  * forward+backward: loss and the full gradient (PyTorch: ``loss.backward()`` into leaf
    parameters whose ``.grad`` is cleared to None first, as ``optimizer.zero_grad()`` does).
Timings run in interleaved blocks (hpc_es, PyTorch, PyTorch, hpc_es, ...) so both see the same
machine; each figure is the median over blocks of the per-call time, each ratio the median of
the per-block ratios (PyTorch time / hpc_es time: > 1 means hpc_es is faster). The same run
measures numpy's float32 GEMM rate (2048^3) and checks that both frameworks give the same loss
and gradient on the same weights (hpc_es's theta converted to PyTorch's layouts).

Targets (issue 14, one thread): offspring >= 1.25x on tf_tutorial and >= 1.5x on small;
forward+backward >= 1.0x on both.

    pip install -e ".[peer]"    # PyTorch 2.13 CPU build
    python benchmarks/peer.py [--threads 1 2] [--blocks 7] [--seconds 0.4]

Writes benchmarks/out/peer.json. Run time: about three minutes. Without PyTorch it says so and
exits 0 (an optional peer).
"""
import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
parser.add_argument("--blocks", type=int, default=7, help="interleaved blocks per measurement")
parser.add_argument("--seconds", type=float, default=0.4, help="time per framework per block")
parser.add_argument("--batch", type=int, default=50, help="mini-batch size (paper: 50)")
parser.add_argument("--nets", nargs="+", default=["tf_tutorial", "small"])
parser.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "out", "peer.json"))
args = parser.parse_args()
# Both frameworks may use up to max(threads); each measurement sets its own count.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "HPC_ES_THREADS"):
    os.environ[var] = str(max(args.threads))

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("benchmarks/peer.py: skipped: PyTorch is not installed (pip install -e \".[peer]\" for its CPU build)")
    sys.exit(0)

import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import gemm_rate, machine_record, write_json  # noqa: E402

from hpc_es import es, nets, threads  # noqa: E402

SIGMA = 0.002
PAIRS = 25  # antithetic pairs per offspring call
TABLE_SIZE = 8_000_000
TARGETS = {("tf_tutorial", "offspring"): 1.25, ("small", "offspring"): 1.5,
           ("tf_tutorial", "fwdbwd"): 1.0, ("small", "fwdbwd"): 1.0}


class TorchNet:
    """The same architecture in PyTorch: NCHW, conv + bias -> ReLU -> 2x2 max-pool, weights in
    PyTorch's layouts over one flat vector (so a perturbed vector needs no copy)."""

    def __init__(self, net):
        self.net = net
        self.shapes = []
        for layer in net.layers:
            if isinstance(layer, nets.ConvPoolReLU):
                self.shapes += [("conv", (layer.c_out, layer.c_in, layer.k, layer.k)), ("b", (layer.c_out,))]
            else:
                self.shapes += [("dense", (layer.n_out, layer.n_in)), ("b", (layer.n_out,))]
        self.relu = [getattr(layer, "relu", True) for layer in net.layers]

    def from_hpc_es(self, theta):
        """theta of the hpc_es net in this net's layout (a float32 torch vector)."""
        parts = []
        for p, (kind, _) in zip(self.net.layout, self.shapes):
            t = theta[p.offset:p.offset + p.size].reshape(p.shape)
            if kind == "conv":  # (k, k, c_in, c_out) -> (c_out, c_in, k, k)
                t = t.transpose(3, 2, 0, 1)
            elif kind == "dense":  # (n_in, n_out), n_in in (h, w, c) order after a conv -> (n_out, n_in in (c, h, w))
                shape = self.net.layers[p.layer - 1].out_shape if p.layer else None
                if shape is not None and len(shape) == 3:
                    t = t.reshape(shape + (-1,)).transpose(2, 0, 1, 3).reshape(p.shape)
                t = t.T
            parts.append(np.ascontiguousarray(t).ravel())
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))

    def to_hpc_es(self, flat):
        """The inverse of :meth:`from_hpc_es` (a numpy vector in hpc_es's layout)."""
        out, pos = [], 0
        for p, (kind, shape) in zip(self.net.layout, self.shapes):
            t = flat[pos:pos + p.size].numpy().reshape(shape)
            pos += p.size
            if kind == "conv":
                t = t.transpose(2, 3, 1, 0)
            elif kind == "dense":
                t = t.T
                prev = self.net.layers[p.layer - 1].out_shape if p.layer else None
                if prev is not None and len(prev) == 3:
                    c, h, w = prev[2], prev[0], prev[1]
                    t = t.reshape(c, h, w, -1).transpose(1, 2, 0, 3)
            out.append(np.ascontiguousarray(t).ravel())
        return np.concatenate(out)

    def views(self, flat):
        out, pos = [], 0
        for _, shape in self.shapes:
            size = int(np.prod(shape))
            out.append(flat[pos:pos + size].view(shape))
            pos += size
        return out

    def loss(self, params, x, y):
        h = x
        for i, layer in enumerate(self.net.layers):
            w, b = params[2 * i], params[2 * i + 1]
            if isinstance(layer, nets.ConvPoolReLU):
                h = F.max_pool2d(F.relu(F.conv2d(h, w, b, padding=layer.k // 2)), 2)
            else:
                h = F.linear(h.flatten(1), w, b)
                if self.relu[i]:
                    h = F.relu(h)
        return F.cross_entropy(h, y)


def interleaved(pairs, blocks, seconds):
    """{name: (median per-call seconds of hpc_es, of torch, median per-block ratio torch/hpc_es)}."""
    calls = {}
    for name, (ours, theirs) in pairs.items():  # calls per block from a short trial
        per = []
        for fn in (ours, theirs):
            fn()
            start = time.perf_counter()
            fn()
            per.append(time.perf_counter() - start)
        calls[name] = [max(1, int(seconds / max(s, 1e-6))) for s in per]
    times = {name: ([], []) for name in pairs}
    for block in range(blocks):
        for name, fns in pairs.items():
            order = (0, 1) if block % 2 == 0 else (1, 0)
            for which in order:
                n = calls[name][which]
                start = time.perf_counter()
                for _ in range(n):
                    fns[which]()
                times[name][which].append((time.perf_counter() - start) / n)
    return {name: (float(np.median(a)), float(np.median(b)), float(np.median(np.array(b) / np.array(a))))
            for name, (a, b) in times.items()}


def compare_net(name, n_threads, table_np, table_t, images, labels):
    net = nets.build(name)
    tnet = TorchNet(net)
    theta = net.init_theta(seed=0)
    x_u8, y = images, labels
    x_t = torch.from_numpy(x_u8.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y_t = torch.from_numpy(y)

    # Same weights, same loss and gradient (the conversion is checked both ways).
    theta_t = tnet.from_hpc_es(theta)
    assert np.array_equal(tnet.to_hpc_es(theta_t), theta), "layout conversion is not its own inverse"
    leaf = theta_t.clone().requires_grad_(True)
    loss_t = tnet.loss(tnet.views(leaf), x_t, y_t)
    loss_t.backward()
    loss_ours, grad_ours = net.loss_and_grad(theta, x_u8, y)
    grad_t = tnet.to_hpc_es(leaf.grad.detach())
    agreement = {"loss_hpc_es": float(loss_ours), "loss_torch": float(loss_t.detach()),
                 "loss_rel_diff": abs(float(loss_t.detach()) - loss_ours) / abs(loss_ours),
                 "grad_rel_diff": float(np.linalg.norm(grad_t - grad_ours) / np.linalg.norm(grad_ours))}

    # hpc_es: the training loop's evaluate on PAIRS antithetic pairs per call (its per-batch
    # set-up amortised over them as over a rank's share of a population in training).
    rng = np.random.default_rng(3)
    work, rewards = np.empty_like(theta), np.empty(2 * PAIRS, np.float32)
    member, sign = es.antithetic_members(2 * PAIRS)
    batch_idx = np.arange(x_u8.shape[0])

    def ours_offspring():
        pop = es.Population(offsets=rng.integers(0, TABLE_SIZE - theta.size + 1, PAIRS), member=member,
                            sign=sign, batch=batch_idx)
        es.evaluate(net, theta, table_np, pop, np.float32(SIGMA), x_u8, y, 0, 2 * PAIRS, rewards, work)

    flat_t, work_t = theta_t.clone(), torch.empty_like(theta_t)
    work_views = tnet.views(work_t)

    def torch_offspring():
        with torch.inference_mode():
            for o in rng.integers(0, TABLE_SIZE - theta.size + 1, PAIRS):
                for s in (SIGMA, -SIGMA):
                    torch.add(flat_t, table_t[o:o + theta.size], alpha=s, out=work_t)
                    float(tnet.loss(work_views, x_t, y_t))

    params_t = [v.clone().requires_grad_(True) for v in tnet.views(flat_t)]

    def torch_fwd():
        with torch.inference_mode():
            float(tnet.loss(params_t, x_t, y_t))

    def torch_fwdbwd():
        for p in params_t:
            p.grad = None
        loss = tnet.loss(params_t, x_t, y_t)
        loss.backward()
        float(loss)

    grad = np.empty_like(theta)
    threads.set_threads(n_threads)
    torch.set_num_threads(n_threads)
    timed = interleaved({
        "offspring": (ours_offspring, torch_offspring),
        "forward": (lambda: net.loss(theta, x_u8, y), torch_fwd),
        "fwdbwd": (lambda: net.loss_and_grad(theta, x_u8, y, out=grad), torch_fwdbwd),
    }, args.blocks, args.seconds)
    out = {"agreement": agreement}
    for what, (ours, theirs, ratio) in timed.items():
        per = 2 * PAIRS if what == "offspring" else 1
        out[what] = {"hpc_es_ms": 1e3 * ours / per, "torch_ms": 1e3 * theirs / per, "ratio": ratio,
                     "target": TARGETS.get((name, what))}
    return out


def main():
    machine = machine_record(args.threads)
    machine["torch"] = torch.__version__
    rng = np.random.default_rng(2)
    table_np = rng.standard_normal(TABLE_SIZE, dtype=np.float32)
    table_t = torch.from_numpy(table_np)
    images = rng.integers(0, 256, (args.batch, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, args.batch)
    results = {"machine": machine, "batch": args.batch, "blocks": args.blocks, "runs": []}
    print(f"{machine['cpu']}; PyTorch {torch.__version__}; batch {args.batch}; {args.blocks} interleaved blocks")
    print(f"{'net':12s} {'thr':>3s} {'what':10s} {'hpc_es ms':>10s} {'torch ms':>9s} {'ratio':>6s} {'target':>7s}")
    for n_threads in args.threads:
        threads.set_threads(n_threads)
        square = gemm_rate(2048, 2048, 2048, 5)
        results["runs"].append({"threads": n_threads, "square_gemm_gflops": square, "nets": {}})
        for name in args.nets:
            r = compare_net(name, n_threads, table_np, table_t, images, labels)
            results["runs"][-1]["nets"][name] = r
            for what in ("offspring", "forward", "fwdbwd"):
                m = r[what]
                target = m["target"]
                verdict = "" if target is None or n_threads != 1 else (
                    f">={target:.2f} {'met' if m['ratio'] >= target else 'NOT met'}")
                print(f"{name:12s} {n_threads:3d} {what:10s} {m['hpc_es_ms']:10.2f} {m['torch_ms']:9.2f} "
                      f"{m['ratio']:6.2f} {verdict}")
            a = r["agreement"]
            print(f"{name:12s} {n_threads:3d} same weights: loss {a['loss_hpc_es']:.6f} vs {a['loss_torch']:.6f} "
                  f"(rel. {a['loss_rel_diff']:.1e}), gradient rel. diff {a['grad_rel_diff']:.1e}")
        print(f"{'':12s} {n_threads:3d} float32 GEMM 2048^3: {square:.1f} GFLOP/s")
    write_json(args.json, results)


main()
