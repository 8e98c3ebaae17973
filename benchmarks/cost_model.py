"""The cost model against measurement: a shortened run of every paper-scale preset (same N,
same net, same validation and checkpoint cadence, a few iterations), timed here, beside what
:func:`hpc_es.costs.predict` says that shortened run costs. Target: every preset within 20%.

    python benchmarks/scaling.py            # or any source of benchmarks/out/units.json + network.json
    mpiexec -n 2 python -m mpi4py benchmarks/cost_model.py [--presets es_tf_paper,...]

The units are measured on one core by :func:`hpc_es.costs.measure_units` (benchmarks/scaling.py
writes them); the runs then go on R ranks, in this process (so the model's process start-up
is left out of both sides), each into a temporary run directory, as `hpc-es train` would run
them. Writes benchmarks/out/cost_model.json and prints the table of docs/RESULTS.md. Takes
about 20 minutes on 2 ranks here: the three N = 10,000 presets cost ~3 minutes per iteration.
"""
import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# preset -> (overrides that shorten it, what the overrides keep)
SHORT = {
    "es_tf_paper": ["run.iterations=1"],
    "corr_tf_paper": ["run.iterations=1"],
    "es_nominibatch_tf_paper": ["run.iterations=1"],
    "limited_tf_paper": ["run.iterations=3"],
    "es_small99_paper": ["run.iterations=1"],
    "sgd_tf_paper": ["run.iterations=20"],
    "proxy_tf_paper": ["run.iterations=20"],
    "population_tf_paper": ["population.max_offspring=3000"],
    "table1_tf_paper": ["run.iterations=200"],
}


def main():
    sys.path.insert(0, HERE)
    from _common import machine_record, write_json
    from hpc_es import comm as comm_mod, config, costs, experiments, threads, train
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(SHORT))
    parser.add_argument("--units", default=os.path.join(HERE, "out", "units.json"))
    parser.add_argument("--network", default=os.path.join(HERE, "out", "network.json"))
    parser.add_argument("--json", default=os.path.join(HERE, "out", "cost_model.json"))
    args = parser.parse_args()
    threads.set_threads(1)
    comm = comm_mod.world()
    rank, size = comm.Get_rank(), comm.Get_size()
    with open(args.units) as f:
        units = json.load(f)["units"]
    network = costs.Network.from_json(args.network) if os.path.exists(args.network) else costs.Network()
    dataset = None  # each run loads MNIST itself, as the model assumes
    rows = []
    for name in args.presets.split(","):
        cfg = config.load(name, SHORT[name])
        tmp = comm.bcast(tempfile.mkdtemp(prefix=f"cost-{name}-") if rank == 0 else None, root=0)
        comm.Barrier()
        t0 = time.perf_counter()
        history = {}
        if name.startswith("table1"):
            experiments.table1(comm, cfg, [0.04, 0.2], 1, tmp, dataset)
            pred = costs.predict(cfg, size, units, network, ranks_per_node=size, runs=1, rhos=(0.04, 0.2))
        elif cfg.run.method == "population":
            _, history = experiments.population(cfg, comm, out=tmp, quiet=True)
            pred = costs.predict(cfg, size, units, network, ranks_per_node=size)
        else:
            _, history = train.run(cfg, comm, out=tmp, quiet=True)
            pred = costs.predict(cfg, size, units, network, ranks_per_node=size)
        measured = comm.allreduce(time.perf_counter() - t0, op=_max())
        predicted = pred.wall - units["process_start"]  # in this process: no interpreter start
        ratio = predicted / measured
        row = {"preset": name, "shortened": SHORT[name], "ranks": size, "predicted_s": predicted,
               "measured_s": measured, "ratio": ratio, "within_20pct": abs(ratio - 1) <= 0.2,
               "predicted_phases": pred.phases, "iterations": pred.iterations,
               "predicted_startup_s": pred.startup - units["process_start"], "predicted_writes_s": pred.writes,
               "measured_phases": {k[len("seconds_"):]: float(sum(v)) / max(len(v), 1) for k, v in history.items()
                                   if k.startswith("seconds_")},
               "measured_loop_s": float(sum(history.get("seconds_total", [])))}
        rows.append(row)
        if rank == 0:
            print(f"{name:26s} {' '.join(SHORT[name]):32s} predicted {predicted:8.1f} s  measured {measured:8.1f} s  "
                  f"ratio {ratio:.2f}", flush=True)
            print("   per iteration, predicted: " + ", ".join(f"{k} {v:.3f}" for k, v in pred.phases.items() if v)
                  + f"; start-up {row['predicted_startup_s']:.1f}, writes {pred.writes:.1f}")
            print("   per iteration, measured:  " + ", ".join(f"{k} {v:.3f}" for k, v in row["measured_phases"].items()
                                                             if v) + f"; outside the loop {measured - row['measured_loop_s']:.1f}",
                  flush=True)
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    if rank == 0:
        print("\n| preset | shortened to | ranks | predicted | measured | predicted / measured |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| `{r['preset']}` | `{' '.join(r['shortened'])}` | {r['ranks']} | {r['predicted_s']:.1f} s | "
                  f"{r['measured_s']:.1f} s | {r['ratio']:.2f}{'' if r['within_20pct'] else ' (outside 20%)'} |")
        ok = sum(r["within_20pct"] for r in rows)
        print(f"\n{ok} of {len(rows)} presets within 20%")
        write_json(args.json, {"rows": rows, "units_file": os.path.relpath(args.units), "network": network.source,
                               "machine": machine_record(1, size)})


def _max():
    from mpi4py import MPI
    return MPI.MAX


if __name__ == "__main__":
    main()
