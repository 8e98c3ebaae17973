"""Strong scaling of the paper-scale presets, projected from measured costs: the alpha-beta fit
of the collectives (benchmarks/collectives.py's JSON) and the per-unit costs of the training
loop (:func:`hpc_es.costs.measure_units`), combined by :func:`hpc_es.costs.predict`.

    for p in 2 3 4 6 8; do mpiexec -n $p python -m mpi4py benchmarks/collectives.py; done
    mpiexec -n CORES python -m mpi4py benchmarks/scaling.py [--units benchmarks/out/units.json]

Writes benchmarks/out/network.json (the fit), benchmarks/out/units.json (unless given),
benchmarks/out/scaling.json and docs/figures/scaling.png, and prints the table of
docs/RESULTS.md: iteration time, parallel efficiency and communication share at 1, 10, 100,
500 and 1,000 ranks (32 per node: ours), under two networks: the fit to this machine's shared
memory and an assumed cluster interconnect (labelled as such). The paper's worker counts
(100 for ES with N = 10,000; 500 for limited perturbation with N = 50,000) are marked.
"""
import argparse
import glob
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PRESETS = ["es_tf_paper", "corr_tf_paper", "es_nominibatch_tf_paper", "limited_tf_paper", "es_small99_paper"]
PAPER_WORKERS = {"es_tf_paper": 100, "corr_tf_paper": 100, "es_nominibatch_tf_paper": 100, "limited_tf_paper": 500}
RANKS = [1, 10, 100, 500, 1000]
PER_NODE = 32


def fit(paths):
    """alpha, beta of Allgatherv (least squares over every (p, bytes) row, both >= 0) and alpha
    of the integer allreduce, from collectives-p*.json files."""
    a_rows, b, reduce_alpha = [], [], []
    for path in paths:
        with open(path) as f:
            rec = json.load(f)
        p = rec["ranks"]
        steps = math.ceil(math.log2(p))
        for row in rec["rows"]:
            if row["collective"] == "allgatherv":
                a_rows.append([steps, row["bytes"] * (p - 1) / p])
                b.append(row["seconds"])
            else:
                reduce_alpha.append(row["seconds"] / (2 * steps))
    A, b = np.array(a_rows, float), np.array(b)
    w = 1 / b  # relative error: small messages count as much as large ones
    (alpha, beta), *_ = np.linalg.lstsq(A * w[:, None], b * w, rcond=None)
    resid = (A @ [alpha, beta] - b) / b
    return {"allgatherv": [max(float(alpha), 0.0), max(float(beta), 0.0)],
            "allreduce": [float(np.median(reduce_alpha)), 0.0],
            "max_relative_error": float(np.abs(resid).max()), "median_relative_error": float(np.median(np.abs(resid))),
            "files": [os.path.basename(p) for p in paths]}


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    from hpc_es import config, costs, data, threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", help="units JSON (default: measure now, about a minute, and save)")
    parser.add_argument("--figure", default=os.path.join(HERE, "..", "docs", "figures", "scaling.png"))
    args = parser.parse_args()
    threads.set_threads(1)
    paths = sorted(glob.glob(os.path.join(HERE, "out", "collectives-p*.json")))
    if not paths:
        sys.exit("no benchmarks/out/collectives-p*.json: run benchmarks/collectives.py under mpiexec first")
    network_fit = fit(paths)
    from hpc_es import comm as comm_mod
    if comm_mod.world().Get_rank() == 0:
        write_json(os.path.join(HERE, "out", "network.json"), {"fit": network_fit})
    here = costs.Network.from_fit(network_fit, "fitted to benchmarks/out/network.json (shared memory, one machine)")
    cluster = costs.Network()
    cfgs = {name: config.load(name) for name in PRESETS}
    if args.units:
        with open(args.units) as f:
            units = json.load(f)["units"]
    else:
        from hpc_es import comm as comm_mod
        world = comm_mod.world()
        units = costs.measure_units(list(cfgs.values()), data.load_mnist(), comm=world)
        if world.Get_rank() != 0:
            return
        write_json(os.path.join(HERE, "out", "units.json"), {"units": units, "ranks_measuring": world.Get_size(),
                                                             "machine": machine_record(1, world.Get_size())})
    print(f"Allgatherv: alpha {1e6 * network_fit['allgatherv'][0]:.1f} us, beta {network_fit['allgatherv'][1] * 1e9:.3f}"
          f" ns/byte ({1e-9 / max(network_fit['allgatherv'][1], 1e-30):.2f} GB/s); allreduce alpha "
          f"{1e6 * network_fit['allreduce'][0]:.1f} us; fit error median {100 * network_fit['median_relative_error']:.0f}%,"
          f" max {100 * network_fit['max_relative_error']:.0f}% over {len(paths)} rank counts\n")
    table = {}
    lines = ["| preset | ranks | iteration (cluster net) | efficiency | communication | iteration (this "
             "machine's fit) | efficiency | communication |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, cfg in cfgs.items():
        base = {n: costs.predict(cfg, 1, units, net) for n, net in (("cluster", cluster), ("here", here))}
        ranks = sorted(set(RANKS) | ({PAPER_WORKERS[name]} if name in PAPER_WORKERS else set()))
        for R in ranks:
            cells, rec = [], {}
            for label, net in (("cluster", cluster), ("here", here)):
                p = costs.predict(cfg, R, units, net, ranks_per_node=PER_NODE)
                eff = base[label].per_iteration / (R * p.per_iteration)
                share = p.phases["communicate"] / p.per_iteration
                rec[label] = {"iteration_s": p.per_iteration, "efficiency": eff, "communication_share": share,
                              "phases": p.phases, "wall_s": p.wall, "core_hours": p.core_hours,
                              "memory_per_node": p.memory_per_node}
                cells += [f"{p.per_iteration:.3f} s", f"{100 * eff:.0f}%", f"{100 * share:.1f}%"]
            table.setdefault(name, {})[R] = rec
            mark = " (paper)" if PAPER_WORKERS.get(name) == R else ""
            lines.append(f"| `{name}` | {R:,}{mark} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    es100 = table["es_tf_paper"][100]["cluster"]["wall_s"]
    lim500 = table["limited_tf_paper"][500]["cluster"]["wall_s"]
    print(f"\nes_tf_paper on 100 ranks / limited_tf_paper on 500: {es100 / lim500:.2f}x the wall time "
          f"(paper: 'approximately twice as long')")
    write_json(os.path.join(HERE, "out", "scaling.json"),
               {"network_fit": network_fit, "cluster_network": cluster.source, "per_node": PER_NODE,
                "table": table, "es100_over_limited500": es100 / lim500, "machine": machine_record(1)})
    _plot(table, args.figure)


def _plot(table, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e '.[plot]'): no figure")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in table.items():
        ranks = sorted(rows)
        line, = axes[0].plot(ranks, [rows[r]["cluster"]["efficiency"] for r in ranks], marker="o", label=name)
        many = [r for r in ranks if r > 1]  # one rank communicates nothing (no point on a log axis)
        axes[1].plot(many, [100 * rows[r]["cluster"]["communication_share"] for r in many], marker="o",
                     color=line.get_color())
        paper = PAPER_WORKERS.get(name)
        if paper:
            axes[0].plot([paper], [rows[paper]["cluster"]["efficiency"]], marker="*", markersize=14,
                         color=line.get_color())
    axes[0].set(xscale="log", xlabel="Ranks", ylabel="Parallel efficiency", ylim=(0, 1.05),
                title="Strong Scaling (Projection; * = Paper's Workers)")
    axes[1].set(xscale="log", yscale="log", xlabel="Ranks", ylabel="Communication share of an iteration (%)",
                title="Communication (Assumed Cluster Network)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=200)
    print(f"wrote {path}")


def replot(path=os.path.join(HERE, "out", "scaling.json"), figure=os.path.join(HERE, "..", "docs", "figures",
                                                                                "scaling.png")):
    """Redraw the figure from a scaling.json (no measuring)."""
    with open(path) as f:
        table = {name: {int(r): rec for r, rec in rows.items()} for name, rows in json.load(f)["table"].items()}
    _plot(table, figure)


if __name__ == "__main__":
    main()
