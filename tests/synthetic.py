"""Synthetic results files and per-unit costs for the analysis tests: runs with known curves,
written as training writes them (config, metadata with a run id, history, a 4-float theta)."""
import os

import numpy as np

from hpc_es import config, io


def write_run(root, name, preset, seed, acc, rho=None, overrides=(), complete=True):
    cfg = config.load(preset, [f"run.seed={seed}", *overrides]).to_dict()
    it = np.arange(1, len(acc) + 1) * 10
    hist = {"eval_iteration": it, "val_accuracy": np.asarray(acc), "seconds_total": np.ones(len(acc) * 10)}
    if rho is not None:
        hist["rho"] = np.full(len(acc) * 10, rho)
        hist["rho_sgd_self"] = np.full(len(acc) * 10, 0.4)
    out = os.path.join(root, name)
    done = cfg["run"]["iterations"] if complete else int(it[-1])  # complete: as if validated at these points only
    meta = {"completed_iterations": done, "ranks": 2, "run_id": f"test-{os.path.join(str(root), name)}"}
    source = cfg["proxy"].get("rho_from")
    if cfg["run"]["method"] == "proxy" and source and os.path.exists(source):  # as training records it
        meta["rho_from_id"] = io.run_id_of(source)
    io.save_results(out, cfg, meta, hist, np.zeros(4, np.float32))
    return out


def plausible_units():
    """Per-unit costs of a plausible machine (seconds), enough for costs.predict on both nets."""
    per_net = {"offspring": 0.03, "offspring_subset": 0.03, "aggregate_float": 2e-10, "adam_float": 3e-9,
               "proxy_float": 1e-8, "sgd_step": 0.08, "validate_image": 1e-4}
    return {"tf_tutorial": per_net, "small": dict(per_net), "table_fill_float": 4e-9, "process_start": 1.0,
            "data_load": 1.0, "write_byte": 1e-9, "rss_rank": 3e8}
